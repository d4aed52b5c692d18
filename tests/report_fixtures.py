"""Stores for report tests: a realistic one filled by inserting rows directly (``build_store``), and
a small one produced by the real pipeline — ingest, store loader, scorer (``build_scored_store``).

One Mandarin corpus (shards with real FLAC audio), three models scored on its test split —
whisper-large-v2, whisper-large-v3 and a checkpoint fine-tuned from large-v3 (with lineage) —
utterance scores with CER-level alignments and pathology flags, per-slice metrics with bootstrap
intervals, paired comparisons, and two training runs (a baseline and a run with a loss spike,
a NaN and a regression) with their alerts. Hostile strings sit in a transcript, a slice value and
an alert message so that escaping is tested everywhere.

The numbers are generated, but every stored aggregate is computed from the stored per-utterance
rows exactly as the schema defines them, so the report's arithmetic can be checked against them.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from asr_eval.store import connect
from asr_eval.store.load import duration_bucket

XSS_SCRIPT = "<script>window.__xss = 1; alert(1)</script>"
XSS_ATTR = "\"><img src=x onerror=\"window.__xss = 2; alert(2)\">"
XSS_ALERT = "<img src=x onerror=alert(3)> loss <b>spiked</b>"

CORPUS = "demo_zh"
CORPUS_ID = "demo_zh@0123456789"
NORMALIZER, NORMALIZER_HASH = "zh-v1", "9f2c1e0b7a4d3c21"

_POOL = ("我们今天去公园散步天气很好大家都在这里学习中文老师说明天有考试请早点休息火车站怎么走"
         "这个问题非常重要经济发展需要时间朋友喜欢喝茶看书电影音乐城市生活工作")
_HOMOPHONE = {"在": "再", "的": "得", "他": "她", "是": "事", "做": "作", "们": "门", "以": "已", "和": "合",
              "天": "田", "学": "雪", "明": "名", "时": "是", "话": "化", "生": "声"}
_T2S = {"們": "们", "這": "这", "臺": "台", "灣": "湾", "說": "说", "時": "时", "學": "学", "車": "车"}
_LATIN = ("GPU", "iPhone", "OK", "app", "Wi-Fi")
_NUMBERS = ("2024", "12", "50", "3")
HALLUCINATION = "字幕由Amara.org社群提供"

# name -> (hub name, revision, base error rate per MER token); the fine-tuned one has lineage.
MODELS = {
    "large-v2": ("openai/whisper-large-v2", "ae4642769ce2ad9fc292b80ac3d0fe1fb6e7e42a", 0.10),
    "large-v3": ("openai/whisper-large-v3", "06f233fe06e710322aca913c1bc4249a0d71fce1", 0.09),
    "ft": ("runs/ft-zh/best", "sha256:5b1fd0a47d2791cb", 0.055),
}
NOISE_FACTOR = {"clean": 1.0, "snr20": 1.5, "snr5": 2.6}
VOICE_FACTOR = {"neural": 1.0, "robotic": 1.4}


@dataclass
class FixtureStore:
    db: Path
    corpus_dir: Path
    corpus_id: str
    run_ids: dict[str, str]  # model key -> eval run id
    model_ids: dict[str, str]
    training_ids: dict[str, str] = field(default_factory=dict)
    n_utts: int = 0


def _classify(tok: str) -> str:
    if tok.isdigit():
        return "num"
    if tok.isascii() and any(c.isalpha() for c in tok):
        return "en"
    return "zh" if "\u4e00" <= tok[0] <= "\u9fff" else "other"


def _norm(tokens: list[str]) -> str:
    """Fixture normalizer: Traditional→Simplified, lower-case, spaces only between Latin/number tokens."""
    out = ""
    for t in tokens:
        t = "".join(_T2S.get(c, c) for c in t).lower()
        if out and t.isascii() and out[-1].isascii():
            out += " "
        out += t
    return out


def _edits(a: list[str], b: list[str]) -> tuple[int, int, int]:
    """(S, D, I) of a minimal alignment of token lists (small inputs: plain DP)."""
    n, m = len(a), len(b)
    dp = [[(0, 0, 0, 0)] * (m + 1) for _ in range(n + 1)]  # (cost, s, d, i)
    for i in range(1, n + 1):
        dp[i][0] = (i, 0, i, 0)
    for j in range(1, m + 1):
        dp[0][j] = (j, 0, 0, j)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            c, s, d, ins = dp[i - 1][j - 1]
            best = (c, s, d, ins) if a[i - 1] == b[j - 1] else (c + 1, s + 1, d, ins)
            c, s, d, ins = dp[i - 1][j]
            best = min(best, (c + 1, s, d + 1, ins))
            c, s, d, ins = dp[i][j - 1]
            best = min(best, (c + 1, s, d, ins + 1))
            dp[i][j] = best
    return dp[n][m][1:]


def _chars(tok: str) -> list[str]:
    return [c for c in "".join(_T2S.get(x, x) for x in tok).lower() if not c.isspace()]


def _perturb(ref: list[str], p: float, rng: np.random.Generator) -> tuple[list[str], list[list], list[tuple]]:
    """Hypothesis tokens, the CER-level alignment [[op, ref, hyp], ...] and the MER-level ops of the edits made."""
    hyp: list[str] = []
    align: list[list] = []
    ops: list[tuple] = []
    for tok in ref:
        if rng.random() < p * 0.15:  # insertion before this token
            ins = str(rng.choice(list(_POOL)))
            hyp.append(ins)
            align.append(["I", None, ins])
            ops.append(("I", None, ins))
        r = rng.random()
        if r >= p:
            hyp.append(tok)
            align += [["=", c, c] for c in _chars(tok)]
            ops.append(("=", tok, tok))
        elif r < p * 0.65:
            if _classify(tok) == "zh":
                new = _HOMOPHONE.get(tok, str(rng.choice(list(_POOL))))
                new = new if new != tok else "啊"
            else:
                new = {"en": "GPS", "num": "13"}.get(_classify(tok), "啊")
            hyp.append(new)
            rc, hc = _chars(tok), _chars(new)
            k = min(len(rc), len(hc))
            align += [["S" if rc[x] != hc[x] else "=", rc[x], hc[x]] for x in range(k)]
            align += [["D", c, None] for c in rc[k:]] + [["I", None, c] for c in hc[k:]]
            ops.append(("S", tok, new))
        else:
            align += [["D", c, None] for c in _chars(tok)]
            ops.append(("D", tok, None))
    return hyp, align, ops


def _counts(align: list[list]) -> tuple[int, int, int, int]:
    s = sum(op == "S" for op, *_ in align)
    d = sum(op == "D" for op, *_ in align)
    i = sum(op == "I" for op, *_ in align)
    n = sum(op != "I" for op, *_ in align)
    return n, s, d, i


def _flac(seconds: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    x = (0.2 * np.sin(2 * np.pi * (180 + 40 * (seed % 7)) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _boot(e: np.ndarray, n: np.ndarray, rng: np.random.Generator, reps: int = 300) -> tuple[float, float]:
    if len(e) < 2 or n.sum() == 0:
        return (math.nan, math.nan)
    idx = rng.integers(0, len(e), size=(reps, len(e)))
    r = e[idx].sum(1) / np.maximum(n[idx].sum(1), 1)
    return float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))


def _sign_p(k_plus: int, k_minus: int) -> float:
    m = k_plus + k_minus
    if m == 0:
        return 1.0
    k = min(k_plus, k_minus)
    return min(1.0, 2 * sum(math.comb(m, j) for j in range(k + 1)) / 2 ** m)


def build_store(tmp: Path, n_utts: int = 120, seed: int = 0, complete: bool = True, training: bool = True,
                audio: bool = True) -> FixtureStore:
    """Write shards + a filled store under ``tmp``. ``complete=False`` leaves out the 'noise' slice
    metrics and the large-v2/fine-tuned comparison (the report must compute them itself)."""
    rng = np.random.default_rng(seed)
    tmp.mkdir(parents=True, exist_ok=True)
    corpus_dir = tmp / "corpus"
    corpus_dir.mkdir(exist_ok=True)
    utts = []
    for k in range(n_utts):
        n_tok = int(rng.integers(6, 22))
        toks = [str(c) for c in rng.choice(list(_POOL), size=n_tok)]
        if k % 9 == 1:
            toks.insert(int(rng.integers(0, n_tok)), str(rng.choice(_LATIN)))
        if k % 7 == 2:
            toks.insert(int(rng.integers(0, n_tok)), str(rng.choice(_NUMBERS)))
        if k % 11 == 3:
            toks[:2] = ["這", "們"]
        raw = "".join(t if not t.isascii() else f" {t} " for t in toks).strip() + "。"
        if k == 5:
            raw = XSS_SCRIPT + raw
        dur = round(float(0.8 + 0.12 * n_tok + rng.uniform(0, 0.6)), 3)
        utts.append({
            "utt_id": f"utt{k:04d}", "tokens": toks, "text": raw, "duration_s": dur,
            "speaker": f"spk{k % 8:02d}",
            "attrs": {"hsk_level": str(1 + k % 6), "voice": "robotic" if k % 4 == 3 else "neural",
                      "noise": ("clean", "snr20", "snr5")[k % 3],
                      "topic": XSS_ATTR if k % 17 == 4 else ("daily", "travel", "tech")[k % 3 if k % 17 else 0],
                      "duration_bucket": duration_bucket(dur)},
        })
    if audio:
        tbl = pa.table({
            "utt_id": [u["utt_id"] for u in utts], "split": ["test"] * n_utts,
            "audio": pa.array([_flac(min(u["duration_s"], 1.2), i) for i, u in enumerate(utts)], pa.binary()),
            "sample_rate": pa.array([16000] * n_utts, pa.int32()),
            "duration_s": [u["duration_s"] for u in utts], "text": [u["text"] for u in utts],
        })
        pq.write_table(tbl, corpus_dir / "shard-00000.parquet", row_group_size=32)

    db = tmp / "store.duckdb"
    con = connect(db)
    con.execute("BEGIN")
    con.execute("INSERT INTO corpora (corpus_id, name, path, index_sha256, n_utts, hours, splits, slice_columns, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [CORPUS_ID, CORPUS, str(corpus_dir), "0123456789", n_utts,
                 sum(u["duration_s"] for u in utts) / 3600, json.dumps({"test": n_utts}),
                 json.dumps(["hsk_level", "voice", "noise", "topic", "duration_bucket"]),
                 json.dumps({"layout": "manifest"})])
    con.executemany("INSERT INTO utterances (corpus_id, utt_id, split, duration_s, speaker, text, source_path, audio_sha256) VALUES (?, ?, 'test', ?, ?, ?, ?, NULL)",
                    [[CORPUS_ID, u["utt_id"], u["duration_s"], u["speaker"], u["text"], f"wav/{u['utt_id']}.wav"]
                     for u in utts])
    con.executemany("INSERT INTO utterance_attrs VALUES (?, ?, ?, ?)",
                    [[CORPUS_ID, u["utt_id"], a, v] for u in utts for a, v in u["attrs"].items()])

    model_ids, run_ids = {}, {}
    for i, (key, (name, rev, _)) in enumerate(MODELS.items()):
        mid = f"{name}@{rev[:12]}" if key != "ft" else f"local:ft-zh@{rev[-8:]}"
        model_ids[key] = mid
        lineage = [model_ids["large-v3"], CORPUS_ID, "tr-ft", 400] if key == "ft" else [None] * 4
        con.execute("INSERT INTO models (model_id, name, source, path, revision, num_mel_bins, n_params, config, "
                    "base_model_id, corpus_id, training_run_id, step) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [mid, name, "local" if key == "ft" else "hub", None, rev, 128 if key != "large-v2" else 80,
                     1_550_000_000, json.dumps({"d_model": 1280}), *lineage])
        run = f"run-{key}-{seed}"
        run_ids[key] = run
        audio_s = sum(u["duration_s"] for u in utts)
        proc_s = audio_s / (38.0 + 9 * i)
        con.execute("INSERT INTO eval_runs (run_id, corpus_id, split, model_id, status, started_at, finished_at, device, dtype, batch_size, decode_params, versions, n_utts, audio_s, proc_s, rtfx, peak_gpu_mem_bytes) VALUES (?, ?, 'test', ?, 'done', TIMESTAMP '2025-05-01 10:00:00' + "
                    "to_minutes(?), TIMESTAMP '2025-05-01 10:20:00' + to_minutes(?), 'cuda:0 (NVIDIA H100)', "
                    "'float16', 16, ?, ?, ?, ?, ?, ?, ?)",
                    [run, CORPUS_ID, mid, 30 * i, 30 * i,
                     json.dumps({"language": "zh", "task": "transcribe", "num_beams": 1, "max_new_tokens": 225}),
                     json.dumps({"torch": "2.13.0", "transformers": "5.23.0", "asr-eval": "0.1.0"}),
                     n_utts, audio_s, proc_s, audio_s / proc_s, 9_800_000_000])

    per_run: dict[str, dict[str, np.ndarray]] = {}
    for key, (_, _, base_p) in MODELS.items():
        run = run_ids[key]
        hyp_rows, score_rows, arrays = [], [], {"e": [], "n": [], "mer_e": [], "mer_n": []}
        for k, u in enumerate(utts):
            a = u["attrs"]
            p = base_p * NOISE_FACTOR[a["noise"]] * VOICE_FACTOR[a["voice"]]
            hyp_toks, align, ops = _perturb(u["tokens"], p, rng)
            flags: list[str] = []
            hyp_raw: str | None = "".join(t if not t.isascii() else f" {t} " for t in hyp_toks).strip()
            if key == "large-v2" and k % 10 == 7:  # Whisper answering in Traditional script
                hyp_raw = hyp_raw.replace("这", "這").replace("们", "們") + "這"
                hyp_toks, align, ops = hyp_toks + ["這"], align + [["I", None, "这"]], ops + [("I", None, "這")]
                flags.append("traditional_script")
            if key != "ft" and k % 23 == 9:  # repetition loop
                loop = hyp_toks[-2:] * 6
                hyp_toks, align = hyp_toks + loop, align + [["I", None, c] for t in loop for c in _chars(t)]
                ops = ops + [("I", None, t) for t in loop]
                hyp_raw = hyp_raw + "".join(loop)
                flags.append("repetition")
            if key == "large-v2" and (k % 29 == 13 or k == 5):  # stock hallucination (k = 5: hostile text too)
                hyp_toks = list(HALLUCINATION)
                hyp_raw = HALLUCINATION + (XSS_SCRIPT if k == 5 else "")
                align = [["D", c, None] for t in u["tokens"] for c in _chars(t)] + \
                        [["I", None, c] for c in _chars(HALLUCINATION)]
                ops = [("D", t, None) for t in u["tokens"]] + [("I", None, t) for t in hyp_toks]
                flags.append("hallucination")
            if k % 31 == 30 and key != "ft":  # empty output: all deletions
                hyp_toks, hyp_raw = [], None
                align = [["D", c, None] for t in u["tokens"] for c in _chars(t)]
                ops = [("D", t, None) for t in u["tokens"]]
                flags.append("empty")
            n, s, d, i = _counts(align)
            ref_norm, hyp_norm = _norm(u["tokens"]), _norm(hyp_toks)
            ms, md, mi = (sum(o[0] == x for o in ops) for x in ("S", "D", "I"))
            ws, wd, wi = _edits(ref_norm.split(), hyp_norm.split())
            cls = {c: [0, 0] for c in ("zh", "en", "num", "other")}
            for t in u["tokens"]:
                cls[_classify(t)][0] += 1
            for op, rt, ht in ops:  # an error belongs to the class of its reference token (insertions: hypothesis)
                if op != "=":
                    cls[_classify(rt if rt is not None else ht)][1] += 1
            hyp_rows.append([run, u["utt_id"], hyp_raw, len(hyp_toks), "shard-00000.parquet"])
            score_rows.append([run, u["utt_id"], NORMALIZER, NORMALIZER_HASH, ref_norm, hyp_norm, n, s, d, i,
                               len(u["tokens"]), ms, md, mi, len(ref_norm.split()), ws, wd, wi,
                               cls["zh"][0], cls["zh"][1], cls["en"][0], cls["en"][1], cls["num"][0], cls["num"][1],
                               cls["other"][0], cls["other"][1], json.dumps(align, ensure_ascii=False), flags, False])
            arrays["e"].append(s + d + i)
            arrays["n"].append(n)
            arrays["mer_e"].append(ms + md + mi)
            arrays["mer_n"].append(len(u["tokens"]))
        con.executemany("INSERT INTO hypotheses (run_id, utt_id, hyp_raw, n_tokens, shard) VALUES (?, ?, ?, ?, ?)", hyp_rows)
        con.executemany("INSERT INTO utterance_scores VALUES (" + ", ".join("?" * 29) + ")", score_rows)
        per_run[key] = {k: np.array(v, dtype=float) for k, v in arrays.items()}

    # slice_metrics: pooled rates + utterance-bootstrap intervals, as the scorer stores them.
    slices = {("_all", "all"): np.arange(n_utts)}
    for attr in ("hsk_level", "voice", "noise", "topic", "duration_bucket"):
        if attr == "noise" and not complete:
            continue
        for v in sorted({u["attrs"][attr] for u in utts}):
            slices[(attr, v)] = np.array([k for k, u in enumerate(utts) if u["attrs"][attr] == v])
    durs = np.array([u["duration_s"] for u in utts])
    sm_rows = []
    for key, run in run_ids.items():
        arr = per_run[key]
        srows = con.execute("SELECT cer_s, cer_d, cer_i, wer_s + wer_d + wer_i, wer_n FROM utterance_scores "
                            "WHERE run_id = ? ORDER BY utt_id", [run]).fetchall()
        sdi = np.array([r[:3] for r in srows], dtype=float)
        wer = np.array([r[3:] for r in srows], dtype=float)
        for (attr, v), idx in slices.items():
            e, n, me, mn = arr["e"][idx], arr["n"][idx], arr["mer_e"][idx], arr["mer_n"][idx]
            lo, hi = _boot(e, n, rng)
            mlo, mhi = _boot(me, mn, rng)
            sm_rows.append([run, NORMALIZER, NORMALIZER_HASH, attr, v, len(idx), float(durs[idx].sum() / 3600),
                            e.sum() / n.sum(), lo, hi, me.sum() / mn.sum(), mlo, mhi,
                            wer[idx, 0].sum() / max(wer[idx, 1].sum(), 1), *sdi[idx].sum(0).astype(int).tolist(),
                            int(n.sum()), 300, "utterance"])
    con.executemany("INSERT INTO slice_metrics (run_id, normalizer, normalizer_hash, slice_attr, slice_value, n, hours, cer, cer_lo, cer_hi, mer, mer_lo, mer_hi, wer, cer_s, cer_d, cer_i, cer_n, n_boot, ci_method) VALUES (" + ", ".join("?" * 20) + ")", sm_rows)

    # comparisons: paired bootstrap of b − a on the same utterances.
    pairs = [("large-v2", "large-v3"), ("large-v3", "ft")] + ([("large-v2", "ft")] if complete else [])
    cmp_rows = []
    for ka, kb in pairs:
        for (attr, v), idx in slices.items():
            ea, eb, n = per_run[ka]["e"][idx], per_run[kb]["e"][idx], per_run[ka]["n"][idx]
            boot = rng.integers(0, len(idx), size=(300, len(idx)))
            deltas = (eb[boot].sum(1) - ea[boot].sum(1)) / np.maximum(n[boot].sum(1), 1)
            lo, hi = float(np.quantile(deltas, 0.025)), float(np.quantile(deltas, 0.975))
            delta = (eb.sum() - ea.sum()) / n.sum()
            verdict = (f"no significant difference on this data ({100 * delta:+.2f} pts)" if lo <= 0 <= hi
                       else f"{kb if hi < 0 else ka} better by {abs(100 * delta):.2f} pts")
            cmp_rows.append([run_ids[ka], run_ids[kb], NORMALIZER, "cer", attr, v, len(idx), ea.sum() / n.sum(),
                             eb.sum() / n.sum(), delta, lo, hi, float((deltas < 0).mean()),
                             _sign_p(int((eb < ea).sum()), int((eb > ea).sum())), verdict])
    con.executemany("INSERT INTO comparisons (run_a, run_b, normalizer, metric, slice_attr, slice_value, n, rate_a, rate_b, delta, delta_lo, delta_hi, p_b_better, sign_test_p, verdict) VALUES (" + ", ".join("?" * 15) + ")", cmp_rows)

    training_ids: dict[str, str] = {}
    if training:
        training_ids = _training(con, rng, model_ids["large-v3"])
    con.execute("COMMIT")
    con.close()
    return FixtureStore(db=db, corpus_dir=corpus_dir, corpus_id=CORPUS_ID, run_ids=run_ids, model_ids=model_ids,
                        training_ids=training_ids, n_utts=n_utts)


def _training(con, rng: np.random.Generator, base_model: str) -> dict[str, str]:
    """A clean baseline run and a fine-tune with a loss spike at 250, a NaN at 300, and a worse final CER."""
    runs = {"baseline": "tr-base", "ft": "tr-ft"}
    for key, tid in runs.items():
        con.execute("INSERT INTO training_runs VALUES (?, ?, ?, 'asr-eval', ?, ?, ?, ?, 'finished', "
                    "TIMESTAMP '2025-04-30 08:00:00', TIMESTAMP '2025-04-30 09:00:00')",
                    [tid, "ft-zh lr=1e-5" if key == "ft" else "baseline lr=5e-6", f"runs/{tid}", base_model, CORPUS_ID,
                     json.dumps({"learning_rate": 1e-5 if key == "ft" else 5e-6, "max_steps": 400,
                                 "batch_size": 16}), "tr-base" if key == "ft" else None])
        rows = []
        for step in range(5, 401, 5):
            loss = 2.2 * math.exp(-step / 120) + 0.25 + 0.03 * rng.standard_normal()
            grad = 3.0 * math.exp(-step / 200) + 0.4 + 0.05 * abs(rng.standard_normal())
            if key == "ft" and 250 <= step <= 260:
                loss, grad = loss * 6, grad * 40
            if key == "ft" and step == 300:
                loss = math.nan
            if key == "ft" and step == 305:
                grad = math.inf
            rows.append([tid, step, "train", step / 100, loss, grad, 1e-5 * min(1, step / 50), None, None, None, None,
                         None, 1000.0 + step])
        for step in range(50, 401, 50):
            cer = 0.16 * math.exp(-step / 250) + (0.065 if key == "baseline" else 0.075)
            n = 1800
            s, d, i = int(cer * n * 0.6), int(cer * n * 0.25), int(cer * n * 0.15)
            rows.append([tid, step, "eval", step / 100, 0.9 * math.exp(-step / 300) + 0.3, None, None, cer, s, d, i, n,
                         1000.0 + step])
        con.executemany("INSERT INTO training_log VALUES (" + ", ".join("?" * 13) + ")", rows)
    con.executemany("INSERT INTO alerts (alert_id, training_run_id, baseline_run_id, rule, severity, step, metric, "
                    "value, threshold, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                        ["a1", "tr-ft", None, "loss_spike", "warning", 250, "loss", 6.1, 2.0, XSS_ALERT],
                        ["a2", "tr-ft", None, "non_finite", "critical", 300, "loss", math.nan, None,
                         "loss is NaN at step 300"],
                        ["a3", "tr-ft", None, "non_finite", "critical", 305, "grad_norm", math.inf, None,
                         "grad norm is inf at step 305"],
                        ["a4", "tr-ft", "tr-base", "baseline_cer", "regression", 400, "cer", 0.1165, 0.1065,
                         "final eval CER 11.65% is worse than baseline tr-base's 10.65%"],
                    ])
    return runs


# ───────────────────────────── real scoring output (no model inference) ─────────────────────────────

_SCORED_REFS = ("今天天气很好", "我们去北京", "你好世界", "这是一个测试", "火车站怎么走", "请早点休息",
                "我用 iPhone 打电话", "明天有 3 个考试")


def build_scored_store(tmp: Path, n_utts: int = 24) -> FixtureStore:
    """Ingest a small Mandarin corpus, load it, store two models' hypotheses and score them with the
    real scorer (``asr_eval.scoring.analyse``): normalization, alignments, flags, slice metrics with
    bootstrap intervals and paired comparisons exactly as ``asr-eval score`` writes them."""
    from conftest import write_audio

    from asr_eval.corpus import open_source
    from asr_eval.scoring import analyse
    from asr_eval.shards import IngestOptions, ingest
    from asr_eval.store.load import load_corpus, register_model, upsert_eval_run

    src = tmp / "src"
    lines = ["file_name,text,split,noise,voice"]
    refs = {}
    for i in range(n_utts):
        uid = f"u{i:02d}"
        refs[uid] = _SCORED_REFS[i % len(_SCORED_REFS)] + ("。" if i % 2 else "")
        write_audio(src / f"{uid}.wav", 0.6 + 0.1 * (i % 5), 16000, seed=i)
        lines.append(f"{uid}.wav,{refs[uid]},test,{('clean', 'snr10')[i % 2]},{('neural', 'robotic')[i % 3 == 0]}")
    (src / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = tmp / "corpus"
    ingest(open_source(str(src)), corpus, IngestOptions(workers=1), progress=False)

    def hyp(model: str, i: int, ref: str) -> str | None:
        if model == "whisper-a":
            return {3: "這是一個測試", 5: XSS_SCRIPT, 7: "字幕由Amara.org社群提供", 11: None}.get(i % 12, ref)
        return {2: ref + "北京北京北京北京北京北京", 4: "火车站怎么走吧", 9: "I am going to Beijing"}.get(i % 12, ref)

    con = connect(tmp / "store.duckdb")
    cid = load_corpus(con, corpus)
    run_ids, model_ids = {}, {}
    for model in ("whisper-a", "whisper-b"):
        register_model(con, {"model_id": f"local:{model}@0", "name": model, "source": "local"})
        run = f"run-{model}"
        upsert_eval_run(con, {"run_id": run, "corpus_id": cid, "split": "test", "model_id": f"local:{model}@0",
                              "status": "done", "device": "cpu", "rtfx": 20.0, "decode_params": {"num_beams": 1}})
        con.executemany("INSERT OR REPLACE INTO hypotheses (run_id, utt_id, hyp_raw, n_tokens, shard) VALUES (?, ?, ?, 0, 'shard-00000.parquet')",
                        [[run, uid, hyp(model, i, ref)] for i, (uid, ref) in enumerate(refs.items())])
        run_ids[model], model_ids[model] = run, f"local:{model}@0"
    analyse(con, list(run_ids.values()), "zh-v1", n_boot=200)
    con.close()
    return FixtureStore(db=tmp / "store.duckdb", corpus_dir=corpus, corpus_id=cid, run_ids=run_ids,
                        model_ids=model_ids, n_utts=n_utts)


@dataclass
class PlantedLong:
    utt_id: str
    duration_s: float
    n_ref: int
    regions: dict[str, tuple[int, int]]  # name -> [start, end) aligned-token indices of a dense error region
    region_times: dict[str, tuple[float, float]]  # name -> seconds of the reference segment holding it


def plant_long_recording(fx: FixtureStore, run_key: str = "large-v3", with_segments: bool = True) -> PlantedLong:
    """Add one 365 s recording to the fixture's corpus (a second shard with its FLAC), scored in
    ``run_key``'s run: a 3,000-character reference in 100 segments of 30 characters (segment j at
    10 + 3.5 j … + 3 s), and a hypothesis with three dense error regions — 25 substitutions at
    reference characters 1200-1224, 12 deletions at 2400-2411, 5 insertions after character 600 —
    plus single substitutions every 150 characters elsewhere (never two in one 60-token window)."""
    rng = np.random.default_rng(7)
    pool = [c for c in _POOL]
    ref = [str(c) for c in rng.choice(pool, size=3000)]
    segs = [[round(10 + 3.5 * j, 3), round(13 + 3.5 * j, 3), "".join(ref[30 * j:30 * j + 30])] for j in range(100)]
    duration = 365.0
    dense_sub, dense_del, ins_after = range(1200, 1225), range(2400, 2412), 600
    scattered = {c for c in range(75, 3000, 150)} - set(range(540, 680)) - set(range(1140, 1290)) - set(range(2340, 2475))
    align: list[list] = []
    regions: dict[str, list[int]] = {"sub": [], "del": [], "ins": []}
    for c, ch in enumerate(ref):
        if c in dense_sub:
            regions["sub"].append(len(align))
            align.append(["S", ch, "错" if ch != "错" else "对"])
        elif c in dense_del:
            regions["del"].append(len(align))
            align.append(["D", ch, None])
        elif c in scattered:
            align.append(["S", ch, "错" if ch != "错" else "对"])
        else:
            align.append(["=", ch, ch])
        if c == ins_after:
            for _ in range(5):
                regions["ins"].append(len(align))
                align.append(["I", None, "啊"])
    n, s, d, i = _counts(align)
    hyp = "".join(h or "" for _, _, h in align)
    utt = "long_rec_01"
    t = np.arange(int(duration * 16000)) / 16000
    x = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format="FLAC", subtype="PCM_16")
    tbl = pa.table({"utt_id": [utt], "split": ["test"], "audio": pa.array([buf.getvalue()], pa.binary()),
                    "sample_rate": pa.array([16000], pa.int32()), "duration_s": [duration], "text": ["".join(ref)]})
    pq.write_table(tbl, fx.corpus_dir / "shard-00001.parquet")
    con = connect(fx.db)
    try:
        con.execute("INSERT INTO utterances (corpus_id, utt_id, split, duration_s, speaker, text, source_path, "
                    "audio_sha256, segments) VALUES (?, ?, 'test', ?, 'spk00', ?, 'long.flac', NULL, ?)",
                    [fx.corpus_id, utt, duration, "".join(ref), json.dumps(segs, ensure_ascii=False)
                     if with_segments else None])
        run = fx.run_ids[run_key]
        con.execute("INSERT INTO hypotheses (run_id, utt_id, hyp_raw, n_tokens, shard) VALUES (?, ?, ?, ?, ?)",
                    [run, utt, hyp, len(hyp), "shard-00001.parquet"])
        con.execute("INSERT INTO utterance_scores VALUES (" + ", ".join("?" * 29) + ")",
                    [run, utt, NORMALIZER, NORMALIZER_HASH, "".join(ref), hyp, n, s, d, i, n, s, d, i, 1, 1, 0, 0,
                     n, s + d + i, 0, 0, 0, 0, 0, 0, json.dumps(align, ensure_ascii=False), ["dropped_window"], False])
    finally:
        con.close()
    times = {k: (segs[c // 30][0], segs[c // 30][1]) for k, c in (("sub", 1200), ("del", 2400), ("ins", 600))}
    return PlantedLong(utt, duration, n, {k: (min(v), max(v) + 1) for k, v in regions.items()}, times)
