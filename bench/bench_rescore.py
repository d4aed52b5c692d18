"""Benchmark: rescoring N utterances end to end, against a naive baseline in the same run.

Timed pipeline (the issue's target: 1,000,000 utterances in < 60 s and < 4 GB peak RSS on
2 cores): normalize both sides (zh-v1) + align (CER/MER/WER, per-class, flags, alignment
JSON) with ``score_many`` on all cores -> pooled CER/MER -> 1000-replicate bootstrap CIs of
CER and MER for 10 slices with ``bootstrap_ci_by_slice``.

Naive baseline, on a subsample and scaled linearly to N (both parts are linear in N):
``normalize()`` + ``jiwer.process_characters`` per utterance in one process, and a Python
loop of index-resampling replicates per slice.

Synthetic data: Mandarin sentences from common characters with realistic noise: English
words and numbers in 10% of references, ~8% character errors, Whisper-style punctuation,
digits for numerals, Traditional script, empty outputs, stock hallucinations, repetition loops.

    .venv/bin/python bench/bench_rescore.py               # 1,000,000 utterances
    .venv/bin/python bench/bench_rescore.py --n 100000    # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time

import numpy as np
import psutil

COMMON = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后"
          "多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因"
          "由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问"
          "意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山"
          "统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东"
          "导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积"
          "示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书")
ENGLISH = ["GPU", "AI", "app", "iPhone", "OK", "WiFi", "Python", "model", "bug", "email", "PPT", "CPU", "Excel"]
NUMBERS = [("二零二四年", "2024年"), ("三十五", "35"), ("百分之五十", "50%"), ("十二点五", "12.5"), ("五月一日", "5月1日")]
TRAD = str.maketrans("们这国会来说时为对发么样点关", "們這國會來說時為對發麼樣點關")
HALLUCINATION = "請不吝點贊 訂閱 轉發 打賞支持明鏡與點點欄目"


def synth(n: int, seed: int = 0, err: float = 0.08) -> tuple[list[str], list[str | None]]:
    """n (reference, hypothesis) pairs; hypotheses are edited references."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(6, 30, n)
    codepoints = np.array([ord(c) for c in COMMON], dtype="<u4")
    pool = codepoints[rng.integers(0, len(COMMON), int(lens.sum()) + n)].tobytes().decode("utf-32-le")
    starts = np.concatenate([[0], np.cumsum(lens)])
    kind = rng.random(n)
    u_edit = rng.random((n, 4))
    refs: list[str] = []
    hyps: list[str | None] = []
    for k in range(n):
        ref = pool[starts[k]:starts[k + 1]]
        hyp = ref
        if kind[k] < 0.05:
            w = ENGLISH[k % len(ENGLISH)]
            cut = int(u_edit[k, 0] * len(ref))
            ref = ref[:cut] + w + ref[cut:]
            hyp = ref if u_edit[k, 1] < 0.7 else ref.replace(w, w.lower()[:-1])
        elif kind[k] < 0.10:
            cn, dg = NUMBERS[k % len(NUMBERS)]
            cut = int(u_edit[k, 0] * len(ref))
            ref = ref[:cut] + cn + ref[cut:]
            hyp = ref[:cut] + dg + ref[cut:]  # Whisper writes digits
        n_err = rng.binomial(len(hyp), err)
        if n_err:
            h = list(hyp)
            for p, op in zip(rng.integers(0, len(h), n_err), rng.integers(0, 4, n_err)):
                p = min(p, len(h) - 1)
                if op < 2:
                    h[p] = COMMON[(p * 7 + k) % len(COMMON)]  # substitution
                elif op == 2:
                    h[p] = ""  # deletion
                else:
                    h[p] += COMMON[(p * 13 + k) % len(COMMON)]  # insertion
            hyp = "".join(h)
        if u_edit[k, 2] < 0.4:
            mid = len(hyp) // 2
            hyp = hyp[:mid] + "，" + hyp[mid:] + "。"
        v = u_edit[k, 3]
        if v < 0.005:
            hyp = None
        elif v < 0.008:
            hyp = HALLUCINATION
        elif v < 0.03:
            hyp = hyp.translate(TRAD)
        elif v < 0.033:
            hyp = hyp + hyp[-2:] * 8
        refs.append(ref)
        hyps.append(hyp)
    return refs, hyps


class RssSampler:
    """Peak of the summed RSS of this process and all its descendants (the score_many workers
    are grandchildren via the forkserver, so getrusage(RUSAGE_CHILDREN) does not see them)."""

    def __init__(self, every_s: float = 0.05) -> None:
        self.every_s, self.peak_mb, self._stop = every_s, 0.0, threading.Event()
        self.child_cpu: dict[int, float] = {}  # last seen CPU seconds of each descendant
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = me.memory_info().rss
            for p in me.children(recursive=True):
                try:
                    with p.oneshot():
                        total += p.memory_info().rss
                        t = p.cpu_times()
                        self.child_cpu[p.pid] = t.user + t.system
                except psutil.Error:  # a worker exited between listing and reading
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self._stop.wait(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def fast(refs, hyps, codes, n_slices, workers, with_alignment, n_boot):
    from asr_eval.metrics import bootstrap_ci_by_slice, pooled_rate, score_many

    t0 = time.perf_counter()
    table = score_many(refs, hyps, "zh-v1", with_alignment=with_alignment, workers=workers)
    t1 = time.perf_counter()
    cols = {c: table.column(c).to_numpy().astype(np.int64) for c in
            ("cer_n", "cer_s", "cer_d", "cer_i", "mer_n", "mer_s", "mer_d", "mer_i")}
    cer_e = cols["cer_s"] + cols["cer_d"] + cols["cer_i"]
    mer_e = cols["mer_s"] + cols["mer_d"] + cols["mer_i"]
    rates = pooled_rate(cer_e, cols["cer_n"]), pooled_rate(mer_e, cols["mer_n"])
    cer_ci = bootstrap_ci_by_slice(cer_e, cols["cer_n"], codes, n_slices, n_boot=n_boot)
    mer_ci = bootstrap_ci_by_slice(mer_e, cols["mer_n"], codes, n_slices, n_boot=n_boot)
    t2 = time.perf_counter()
    return {"score_s": t1 - t0, "stats_s": t2 - t1, "total_s": t2 - t0, "rates": rates,
            "cer_ci": cer_ci, "mer_ci": mer_ci, "table": table, "cer_e": cer_e, "cer_n": cols["cer_n"]}


def naive(refs, hyps, codes, n_slices, n_boot):
    """One process, one utterance at a time, one replicate at a time."""
    import jiwer

    from asr_eval.text import normalize

    t0, c0 = time.perf_counter(), time.process_time()
    err, n = [], []
    for r, h in zip(refs, hyps):
        rn, hn = normalize(r).replace(" ", ""), normalize(h).replace(" ", "")
        if rn:
            out = jiwer.process_characters(rn, hn)
            err.append(out.substitutions + out.deletions + out.insertions)
        else:
            err.append(len(hn))
        n.append(len(rn))
    t1, c1 = time.perf_counter(), time.process_time()
    e, m = np.array(err), np.array(n)
    rng = np.random.default_rng(0)
    for k in range(n_slices):
        ek, mk = e[codes == k], m[codes == k]
        reps = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(ek), len(ek))
            reps.append(ek[idx].sum() / mk[idx].sum())
        np.quantile(reps, [0.025, 0.975])
    t2, c2 = time.perf_counter(), time.process_time()
    # x2 for the statistics: the fast path computes CER and MER intervals
    return {"score_s": t1 - t0, "stats_s": 2 * (t2 - t1), "cpu_s": (c1 - c0) + 2 * (c2 - c1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--naive-n", type=int, default=20_000, help="subsample for the naive baseline")
    ap.add_argument("--workers", type=int, default=None, help="default: usable cores")
    ap.add_argument("--slices", type=int, default=10)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--no-alignment", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from asr_eval.metrics import bootstrap_ci, paired_bootstrap
    from asr_eval.metrics.score import default_workers

    workers = args.workers or default_workers()
    t = time.perf_counter()
    refs, hyps = synth(args.n, args.seed)
    codes = np.random.default_rng(1).integers(0, args.slices, args.n)
    speakers = np.random.default_rng(2).integers(0, 2000, args.n)
    print(f"synthesized {args.n:,} pairs in {time.perf_counter() - t:.1f} s (not timed)")
    rss_before = psutil.Process().memory_info().rss / 2**20
    load_before = os.getloadavg()[0]

    cpu0 = time.process_time()
    with RssSampler() as rss:
        f = fast(refs, hyps, codes, args.slices, workers, not args.no_alignment, args.n_boot)
    cpu_parent = time.process_time() - cpu0
    load_after = os.getloadavg()[0]

    # extras, timed separately (not part of the target)
    t = time.perf_counter()
    bootstrap_ci(f["cer_e"], f["cer_n"], n_boot=args.n_boot, groups=speakers)
    t_blk = time.perf_counter() - t
    other = np.maximum(f["cer_e"] - (np.random.default_rng(3).random(args.n) < 0.05), 0)
    t = time.perf_counter()
    pr = paired_bootstrap(f["cer_e"], other, f["cer_n"], n_boot=args.n_boot)
    t_pair = time.perf_counter() - t

    k = min(args.naive_n, args.n)
    nv = naive(refs[:k], hyps[:k], codes[:k], args.slices, args.n_boot)
    scale = args.n / k
    naive_score, naive_stats = nv["score_s"] * scale, nv["stats_s"] * scale

    cer, mer = f["rates"]
    flags = f["table"].column("flags").to_pylist()
    n_flag = {name: sum(name in fl for fl in flags) for name in
              ("repetition", "insertion_heavy", "hallucination", "traditional_script", "wrong_language", "empty")}
    print(f"\n## rescore {args.n:,} utterances — {platform.node()}, {os.cpu_count()} cores, "
          f"workers={workers}, alignment={'off' if args.no_alignment else 'on'}, load avg before {load_before:.2f}")
    print(f"| step | fast (s) | naive, scaled from {k:,} (s) | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| normalize + align ({args.n:,}) | {f['score_s']:.1f} | {naive_score:.1f} | {naive_score / f['score_s']:.1f}x |")
    print(f"| pooled rates + {args.slices}-slice x {args.n_boot}-replicate CIs (CER and MER) | {f['stats_s']:.2f} | "
          f"{naive_stats:.1f} | {naive_stats / f['stats_s']:.0f}x |")
    print(f"| **total** | **{f['total_s']:.1f}** | {naive_score + naive_stats:.1f} | "
          f"{(naive_score + naive_stats) / f['total_s']:.1f}x |")
    cpu_all = cpu_parent + sum(rss.child_cpu.values())
    print(f"\npeak RSS (this process + workers, sampled every 50 ms): {rss.peak_mb:,.0f} MB, of which the "
          f"input texts {rss_before:,.0f} MB; load avg after {load_after:.2f}")
    print(f"CPU seconds (load-independent): fast {cpu_all:.1f} s (parent {cpu_parent:.1f} + workers "
          f"{cpu_all - cpu_parent:.1f}) = {cpu_all / workers:.1f} s per core; naive {nv['cpu_s'] * scale:.1f} s "
          f"(scaled); ratio {nv['cpu_s'] * scale / cpu_all:.1f}x")
    print(f"pooled CER {cer:.4f}, MER {mer:.4f}; slice 0 CER CI [{f['cer_ci'][0].lo:.4f}, {f['cer_ci'][0].hi:.4f}]")
    print(f"extras: speaker-block CI over 2000 speakers {t_blk:.2f} s; paired bootstrap {t_pair:.2f} s "
          f"({pr.verdict})")
    print(f"flags: {n_flag}")
    print(f"target (<60 s, <4096 MB): {'MET' if f['total_s'] < 60 and rss.peak_mb < 4096 else 'NOT MET'}")


if __name__ == "__main__":
    main()
