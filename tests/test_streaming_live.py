"""LiveStream (audio fed as it arrives) makes exactly simulate's policy calls and commits."""

from __future__ import annotations

import numpy as np
import pytest
from test_streaming_policies import Script, clock_audio, unguarded

from asr_eval.errors import AsrEvalError
from asr_eval.streaming import simulate
from asr_eval.streaming.live import LiveStream

SR = 16_000
HYPS = ["今天", "今天天气", "今天天汽很", "今天天气很好", "今天天气很好啊", "今天天气很好啊"]


@pytest.mark.parametrize("blocks", [[SR // 10], [777, 5000, 123], [SR * 7]])
def test_live_feeding_in_any_blocks_equals_simulate(blocks):
    audio = clock_audio(5.5)  # 5 full chunks of 1 s and a last half chunk
    ref_script, live_script = Script(list(HYPS)), Script(list(HYPS))
    ref = simulate(unguarded("local-agreement"), audio, ref_script, 1.0)
    live = LiveStream(unguarded("local-agreement"), live_script, 1.0)
    i = k = 0
    while i < len(audio):
        n = blocks[k % len(blocks)]
        live.feed(audio[i:i + n])
        i, k = i + n, k + 1
    last = live.finish()
    assert live_script.calls == ref_script.calls  # the same buffers and prompts, step by step
    assert [(e.emit_s, e.text, e.tentative, e.chunk, e.final) for e in live.state.emissions] == \
        [(e.emit_s, e.text, e.tentative, e.chunk, e.final) for e in ref.emissions]
    assert live.state.committed == ref.text and last.final and live.state.tentative == ""
    assert all(e.emit_aware_s >= e.emit_s for e in live.state.emissions)
    with pytest.raises(AsrEvalError, match="finished"):
        live.feed(audio[:10])


def test_live_resamples_browser_audio_and_refuses_a_rate_change():
    script = Script(lambda start, dur: "好" * int(dur))
    live = LiveStream(unguarded("hold-k", k=0), script, 1.0)
    t = np.arange(48_000 * 3) / 48_000
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)  # 3 s at 48 kHz, int16 like a browser
    for i in range(0, len(pcm), 4800):
        live.feed(pcm[i:i + 4800], 48_000)
    with pytest.raises(AsrEvalError, match="sample rate changed"):
        live.feed(pcm[:10], 44_100)
    live.finish()
    assert abs(live.state.audio_s - 3.0) < 0.01
    assert [round(d) for _, d, _ in script.calls[:3]] == [1, 2, 3] and live.state.committed.startswith("好")
