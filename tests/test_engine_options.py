"""Engine options (issue 21): parsing and checks as data, each option through the real engine on a
tiny random Whisper whose greedy output varies token by token (init_std 0.5), the run id and
provenance, speculative decoding's refusals, CTranslate2's parallel workers through the scorer,
and the verification of output-preserving options — "identical on N/N", or a list of what differs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import shutil  # noqa: E402

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from asr_eval.engines import create_engine, get_recipe  # noqa: E402
from asr_eval.engines.base import ENGINES, EngineBase, register_engine  # noqa: E402
from asr_eval.engines.options import EngineOption, OptionSet, baseline, canonical, describe, expand  # noqa: E402
from asr_eval.errors import AsrEvalError  # noqa: E402
from asr_eval.models import build_tiny_whisper  # noqa: E402
from asr_eval.models.draft import build_draft  # noqa: E402
from asr_eval.scoring.parity import ParityPair, parity_pairs  # noqa: E402
from asr_eval.scoring.parts import expand_specs, make_run_id, with_baselines  # noqa: E402
from tests.test_scoring import _corpus  # noqa: E402


def _app():
    from asr_eval.cli import _register_commands, app

    _register_commands()
    return app

GREEDY = get_recipe("greedy", max_new_tokens=20)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny Whisper with varied greedy output, an assistant of its own (other weights, same
    tokenizer), a 1-layer draft cut from it, and one whose tokenizer has two ids swapped."""
    d = tmp_path_factory.mktemp("opts")
    main = build_tiny_whisper(d / "main", seed=0, init_std=0.5)
    other = build_tiny_whisper(d / "other", seed=1, init_std=0.5, decoder_layers=1)
    draft = build_draft(str(main), d / "draft", layers=(0,))
    swapped = build_tiny_whisper(d / "swapped", seed=1, init_std=0.5)
    tj = json.loads((swapped / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tj["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]
    (swapped / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    return {"main": str(main), "other": str(other), "draft": str(draft), "swapped": str(swapped)}


@pytest.fixture(scope="module")
def audios():
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in (1.0, 3.0, 7.0)]


@pytest.fixture(scope="module")
def reference(models, audios):
    """The default configuration's greedy output: the thing every option must reproduce."""
    out = create_engine("transformers", models["main"], "cpu", "float32").transcribe(audios, GREEDY)
    assert len(set(out.texts)) == 3 and min(out.n_tokens) >= 15  # varied, long enough to mean something
    return out


# ───────────── options as data ─────────────


@pytest.mark.parametrize("engine, given, stored", [
    ("transformers", {}, {}),
    ("transformers", {"cache": "dynamic", "attn": "sdpa", "compile": "false"}, {}),  # defaults add nothing
    ("transformers", {"cache": "static", "compile": "true"}, {"cache": "static", "compile": True}),
    ("transformers", {"attn": "eager", "batch_size": "8"}, {"attn": "eager", "batch_size": 8}),
    ("transformers", {"assistant": " x/draft "}, {"assistant": "x/draft"}),
    ("ctranslate2", {"inter_threads": "2", "intra_threads": "1"}, {"inter_threads": 2, "intra_threads": 1}),
    ("ctranslate2", {"inter_threads": 1}, {}),
])
def test_canonical_types_values_and_drops_defaults(engine, given, stored):
    assert canonical(engine, given) == stored
    assert list(canonical(engine, given)) == sorted(stored)


@pytest.mark.parametrize("engine, given, message", [
    ("transformers", {"kv": "static"},
     "engine transformers has no option 'kv'; its options: assistant, attn, batch_size"),
    ("transformers", {"cache": "fast"}, "cache='fast': choose one of dynamic, static, none"),
    ("transformers", {"compile": "maybe"}, "compile='maybe': expected true or false"),
    ("transformers", {"compile": "true"}, "add cache=static"),
    ("transformers", {"assistant": "m", "cache": "static"}, "needs the dynamic cache; drop cache=static"),
    ("transformers", {"assistant": "m", "batch_size": "4"}, "batch size 1); drop batch_size=4"),
    ("ctranslate2", {"inter_threads": "0"}, "inter_threads='0': expected an integer ≥ 1"),
    ("ctranslate2", {"cache": "static"}, "engine ctranslate2 has no option 'cache'"),
])
def test_bad_options_are_named_with_the_fix(engine, given, message):
    with pytest.raises(AsrEvalError, match=None) as e:
        canonical(engine, given)
    assert message in str(e.value)


@pytest.mark.parametrize("recipe", ["beam5", "fallback", "beam5-fallback"])
def test_assistant_is_refused_with_a_beam_or_sampling_recipe(recipe):
    with pytest.raises(AsrEvalError, match=f"greedy decoding only .* recipe '{recipe}'.*use --recipe greedy"):
        expand_specs(["m"], recipes=recipe, engine_options=["assistant=x"])
    assert expand_specs(["m"], recipes="greedy,prompt-simplified", engine_options=["assistant=x"])  # greedy: fine


def test_value_lists_are_axes_and_baselines_are_added_once():
    specs = expand_specs(["m"], engines="transformers", engine_options=["cache=dynamic,static,none", "attn=eager"])
    assert [describe(s.engine_options) for s in specs] == ["attn=eager", "attn=eager cache=static",
                                                          "attn=eager cache=none"]
    full = with_baselines(specs)
    assert [describe(s.engine_options) for s in full] == ["defaults", "attn=eager", "attn=eager cache=static",
                                                         "attn=eager cache=none"]
    assert with_baselines(full) == full and with_baselines(specs[:0]) == []
    assert baseline("transformers", {"cache": "static", "compile": True}) == {}
    for bad, msg in ((["cache"], "write KEY=VALUE"), (["cache=static", "cache=none"], "given twice"),
                     (["cache="], "no value")):
        with pytest.raises(AsrEvalError, match=msg):
            expand("transformers", bad)


def test_options_go_to_the_engines_that_have_them():
    specs = expand_specs(["m"], engines="transformers,ctranslate2", engine_options=["cache=static", "inter_threads=2"])
    assert [(s.engine, s.engine_options) for s in specs] == [("transformers", {"cache": "static"}),
                                                              ("ctranslate2", {"inter_threads": 2})]
    with pytest.raises(AsrEvalError, match="engine option.s. turbo: no chosen engine .transformers, ctranslate2. has"):
        expand_specs(["m"], engines="transformers,ctranslate2", engine_options=["cache=static", "turbo=1"])


def test_engine_options_change_the_run_id_and_defaults_keep_the_old_one():
    base = ("m@1", "c@2", "test", "transformers", "5.23.0", "float32", "pad-audio", GREEDY.to_dict(), "short")
    old = make_run_id(*base)
    assert make_run_id(*base, engine_options={}) == make_run_id(*base, engine_options=None) == old
    ids = {make_run_id(*base, engine_options=o) for o in
           ({"cache": "static"}, {"cache": "none"}, {"attn": "eager"}, {"batch_size": 8}, {"assistant": "d"})}
    assert len(ids) == 5 and old not in ids


def test_engines_command_lists_every_option():
    out = CliRunner().invoke(_app(), ["engines"], env={"COLUMNS": "240"}).output
    for name in ("cache", "compile", "attn", "assistant", "intra_threads", "inter_threads", "batch_size"):
        assert name in out
    assert "dynamic, static, none" in out and "greedy recipes only" in out


# ───────────── each option through the real engine ─────────────


@pytest.mark.parametrize("opts", [{"cache": "none"}, {"cache": "static"}, {"attn": "eager"}],
                         ids=["no-cache", "static-cache", "eager-attention"])
def test_option_keeps_greedy_tokens_and_logprobs(models, audios, reference, opts):
    eng = create_engine("transformers", models["main"], "cpu", "float32", options=opts)
    out = eng.transcribe(audios, GREEDY)
    assert out.texts == reference.texts and out.n_tokens == reference.n_tokens
    assert np.allclose(out.avg_logprob, reference.avg_logprob, atol=1e-4)
    assert np.allclose(out.no_speech_prob, reference.no_speech_prob, rtol=1e-4, atol=0)  # read from generate's first pass
    ident = eng.identity()
    assert ident["cache"] == eng.options["cache"] and ident["attn_implementation"] == eng.options["attn"]


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on CPU needs a C++ "
                    "compiler (`make browser-deps` installs g++ as root)")
def test_static_cache_with_compile_keeps_greedy_tokens(models, audios, reference):
    eng = create_engine("transformers", models["main"], "cpu", "float32",
                        options={"cache": "static", "compile": "true"})
    out = eng.transcribe(audios[:2], GREEDY, batch_size=2)
    assert out.texts == reference.texts[:2]
    assert np.allclose(out.no_speech_prob, reference.no_speech_prob[:2], rtol=1e-4, atol=0)  # its prefill runs eager
    assert eng.identity()["compile"] is True
    assert hasattr(eng.lm.model, "_compiled_call")  # transformers really compiled the decoder step


@pytest.mark.parametrize("which", ["draft", "other"], ids=["decoder-only draft", "whole-model assistant"])
def test_speculative_decoding_is_lossless_under_greedy(models, audios, reference, which):
    eng = create_engine("transformers", models["main"], "cpu", "float32", options={"assistant": models[which]})
    assert eng.suggest_batch_size(GREEDY) == 1
    out = eng.transcribe(audios, GREEDY, batch_size=4)  # rows are decoded one at a time
    assert out.texts == reference.texts
    assert np.allclose(out.avg_logprob, reference.avg_logprob, atol=1e-4)
    # the main model's first pass covers the prompt and the first drafts; causal, so the same at <|startoftranscript|>
    assert np.allclose(out.no_speech_prob, reference.no_speech_prob, rtol=1e-4, atol=0)
    assert eng.identity()["assistant"]["class"] == ("WhisperForCausalLM" if which == "draft"
                                                   else "WhisperForConditionalGeneration")


def test_assistant_with_another_tokenizer_or_a_sampling_pass_is_refused(models, audios):
    with pytest.raises(AsrEvalError, match="its tokenizer differs from .*same vocabulary"):
        create_engine("transformers", models["main"], "cpu", "float32", options={"assistant": models["swapped"]})
    eng = create_engine("transformers", models["main"], "cpu", "float32", options={"assistant": models["draft"]})
    with pytest.raises(AsrEvalError, match="greedy decoding only; this pass asks for beam 1 at temperature 0.2"):
        eng.transcribe(audios[:1], get_recipe("greedy", temperatures=(0.2,)))


# ───────────── through the scorer: run ids, provenance, verification ─────────────


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory.mktemp("optcorpus"))


@pytest.fixture(scope="module")
def ct2_cache(tmp_path_factory):
    old = os.environ.get("ASR_EVAL_CACHE")
    os.environ["ASR_EVAL_CACHE"] = str(tmp_path_factory.mktemp("ct2cache"))
    yield
    if old is None:
        os.environ.pop("ASR_EVAL_CACHE")
    else:
        os.environ["ASR_EVAL_CACHE"] = old


def test_ctranslate2_parallel_workers_score_the_same_transcripts(models, corpus, ct2_cache, tmp_path):
    from asr_eval.scoring import score_models

    specs = with_baselines(expand_specs([models["main"]], engines="ctranslate2", compute_types="float32", device="cpu",
                                        engine_options=["inter_threads=2", "intra_threads=1"], max_new_tokens=12))
    assert [s.engine_options for s in specs] == [{}, {"inter_threads": 2, "intra_threads": 1}]
    db = tmp_path / "s.duckdb"
    runs = score_models(corpus, specs, db, split="test", n_boot=50, progress=False)
    assert len(set(runs)) == 2
    con = duckdb.connect(str(db), read_only=True)
    stored = dict(con.execute("SELECT run_id, engine_options::VARCHAR FROM eval_runs").fetchall())
    assert stored == {runs[0]: None, runs[1]: '{"inter_threads": 2, "intra_threads": 1}'}
    prov = json.loads(con.execute("SELECT provenance::VARCHAR FROM eval_runs WHERE run_id = ?",
                                  [runs[1]]).fetchone()[0])
    assert prov["engine"]["inter_threads"] == 2 and prov["engine"]["intra_threads"] == 1
    batch = dict(con.execute("SELECT run_id, batch_size FROM eval_runs").fetchall())
    assert batch == {runs[0]: 1, runs[1]: 2}  # one utterance per worker
    (pair,) = parity_pairs(con, runs)
    hyps = con.execute("SELECT count(DISTINCT hyp_raw) FROM hypotheses").fetchone()[0]
    con.close()
    assert pair.options_only and pair.verdict == "identical on 6/6" and hyps > 1


class _OptStub(EngineBase):
    """transformers, plus an option that claims to be output-preserving and is not."""

    name = "optstub"

    def __init__(self, files, device="cpu", compute_type="float32", threads=0, options=None):
        from asr_eval.engines.transformers_engine import TransformersEngine

        self.inner = TransformersEngine(files, device, compute_type, threads)
        self.files, self.device, self.compute_type = files, self.inner.device, self.inner.compute_type
        self.version, self.options = self.inner.version, options or {}

    def decode(self, features, request):
        out = self.inner.decode(features, request)
        if self.options.get("shortcut") == "on":
            for i, cands in enumerate(out):
                if i % 2 == 0 and cands[0].tokens:
                    cands[0].tokens = cands[0].tokens[:-1]
        return out

    def suggest_batch_size(self, recipe):
        return 8

    def peak_memory_bytes(self):
        return None

    def identity(self):
        return {"engine": self.name, **self.options}


@pytest.fixture
def stub_engine():
    option = EngineOption("shortcut", "drops the last token of every second utterance", "off", choices=("off", "on"))
    register_engine("optstub", options=OptionSet({"shortcut": option}))(_OptStub)
    yield
    ENGINES.pop("optstub", None)


def test_an_option_that_changes_transcripts_is_reported_not_hidden(models, corpus, tmp_path, stub_engine):
    from asr_eval.cli.score import print_option_verdicts

    db = tmp_path / "s.duckdb"
    res = CliRunner().invoke(_app(), ["score", "--corpus", str(corpus), "-m", models["main"], "--engine", "optstub",
                                   "-O", "shortcut=on", "--device", "cpu", "--max-new-tokens", "12", "--split", "test",
                                   "--n-boot", "50", "--db", str(db)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "✘ engine options" in res.output and "differs on 3/6" in res.output
    assert "NOT output-preserving" in res.output
    con = duckdb.connect(str(db), read_only=True)
    (pair,) = parity_pairs(con, [r[0] for r in con.execute("SELECT run_id FROM eval_runs ORDER BY engine_options "
                                                            "NULLS FIRST").fetchall()])
    con.close()
    assert pair.verdict == "differs on 3/6" and len(pair.divergent) == 3
    assert all(d.hyp_a.startswith(d.hyp_b) and d.hyp_a != d.hyp_b for d in pair.divergent)  # the dropped token
    assert ParityPair("a", "b", "m", 6, 6, differs_in=["engine_options"], options_check=True).verdict == \
        "identical on 6/6"
    assert ParityPair("a", "b", "m", 6, 6, differs_in=["engine", "engine_options"], options_check=True).verdict is None
    assert ParityPair("a", "b", "m", 6, 6, differs_in=["engine_options"]).verdict is None  # two option sets
    print_option_verdicts([], {})  # nothing to say: no output


def test_score_cli_verifies_a_speed_option_and_the_report_says_so(models, corpus, tmp_path):
    from asr_eval.report import build_report

    db = tmp_path / "s.duckdb"
    res = CliRunner().invoke(_app(), ["score", "--corpus", str(corpus), "-m", models["main"], "-O",
                                      "cache=none,static", "--device", "cpu", "--max-new-tokens", "12", "--split",
                                      "test", "--n-boot", "50", "--db", str(db)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    checks = [line for line in res.output.splitlines() if "engine options" in line and "identical on" in line]
    assert len(checks) == 2 and all("✔" in line and "identical on 6/6" in line for line in checks)
    # each against the run without options; cache=none vs cache=static is no check of either
    assert "main · cache=none vs opts0/main · defaults:" in checks[0]
    assert "main · cache=static vs opts0/main · defaults:" in checks[1]
    html = build_report(db, tmp_path / "r.html").path.read_text(encoding="utf-8")
    assert "engine options: defaults →" in html and "✔ identical on 6/6" in html


def test_compile_without_a_cpp_compiler_says_what_to_install(models, monkeypatch):
    import asr_eval.engines.transformers_engine as te

    monkeypatch.setattr(te.shutil, "which", lambda name: None)
    with pytest.raises(AsrEvalError, match=r"no C\+\+ compiler was found; install one \(`apt-get install g\+\+`\)"):
        create_engine("transformers", models["main"], "cpu", "float32", options={"cache": "static", "compile": "true"})
