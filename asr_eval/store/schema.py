"""THE DuckDB schema of the asr-eval store — the single place it is defined.

One DuckDB file (default ``reports/asr_eval.duckdb``) holds everything a report needs.
DuckDB allows one read-write process per file, so exactly one *writer* step touches it:
inference and training workers write Parquet parts, and ``asr_eval.store`` loads them.

Tables (keys in brackets):

meta               [key]  the store's own facts: its schema version (``schema_version``)
corpora            [corpus_id]  one row per ingested corpus (shard dir + index hash)
utterances         [corpus_id, utt_id]  reference text, split, duration, speaker of each utterance
utterance_attrs    [corpus_id, utt_id, attr]  slice columns in long form (attr, value) so any
                   column — accent, gender, age, hsk_level, derived duration_bucket — can be
                   grouped by in SQL without schema changes
models             [model_id]  every model scored or trained; fine-tuned ones carry lineage
                   (base_model_id, corpus_id, training_run_id, step)
eval_runs          [run_id]  one model decoding one corpus split: device, dtype, batch size,
                   decode parameters, engine options (speed options, verified), library versions, RTFx
hypotheses         [run_id, utt_id]  raw model text. Normalization happens at scoring time,
                   so a new normalizer rescoring never re-runs inference
utterance_scores   [run_id, utt_id, normalizer]  normalized ref/hyp, CER/MER/WER counts,
                   per-class counts, alignment, pathology flags
slice_metrics      [run_id, normalizer, slice_attr, slice_value]  pooled rates with bootstrap
                   95% CIs; slice_attr '_all' / slice_value 'all' is the whole run
comparisons        [run_a, run_b, normalizer, metric, slice_attr, slice_value]  paired bootstrap
                   difference (b - a) with CI, P(b better than a), sign-test p, verdict in words
training_runs      [training_run_id]  one fine-tuning run (ours, or imported from
                   trainer_state.json / TensorBoard)
training_log       [training_run_id, step, kind]  raw loss stream; kind 'train' or 'eval';
                   NaN/inf kept as they are
alerts             [alert_id]  divergence/regression findings of check-training
stream_events      [run_id, utt_id, seq]  a streaming run's emission log: every commit (and
                   tentative-tail update) with its time on both clocks (asr_eval.streaming)
stream_recordings  [run_id, utt_id]  a streamed recording's compute: decode calls, compute seconds,
                   the computation-aware lag and whether it stayed bounded (real time)
stream_scores      [run_id, utt_id, normalizer]  streaming metrics of one recording: character
                   latencies on both clocks, first-emission latency, flicker
stream_slices      [run_id, normalizer, slice_attr, slice_value]  the same pooled per slice, with
                   bootstrap intervals over recordings for the latency median
utterance_errors   [run_id, utt_id, normalizer]  the error taxonomy of one scored utterance on MER units
                   (Han characters, Latin words, numbers): homophone, tone, near-homophone, variant,
                   number format, Latin, other substitutions; particle insertions/deletions; the other
                   deletions and insertions — summing to its MER errors — and its pinyin errors
error_slices       [run_id, normalizer, slice_attr, slice_value]  the same pooled per slice, with shares
                   and the pinyin error rate (toneless and with tones) with bootstrap 95% CIs
error_confusions   [run_id, normalizer, ref_tok, hyp_tok]  every substitution pair of a run (MER units:
                   hello → 哈喽 is one pair) with its count, the pinyin each side was read with (most
                   frequent) and its class
contamination_sources [source_hash]  a set of training texts checked for overlap (corpus split or file)
contamination      [corpus_id, utt_id, source_hash]  one evaluation utterance against one training source:
                   exact match, longest shared character n-gram, share of its 8-grams, flag
lineage_contamination [model_id, corpus_id, eval_split, source_hash]  a fine-tune's own training texts
                   checked against the split it is scored on (the lineage record)
hallucination_scores [run_id, utt_id, normalizer]  hallucination over silence in one recording with reference
                   segments (asr_eval.metrics.hallucination): characters inserted in the reference's silent gaps
                   (>= 1 s) that the hypothesis could have produced there, insertions repeating earlier text,
                   the silence, and up to 3 examples. Recordings without reference segments have no row
hallucination_slices [run_id, normalizer, slice_attr, slice_value]  the same summed per slice (the recordings
                   measured in it; slice_attr '_all' / slice_value 'all' is the whole run)
gates              [gate_id]  one ship decision of ``asr-eval gate``: baseline and candidate runs,
                   margin, PASS / FAIL / INCONCLUSIVE, and every slice's difference and status

Every score carries provenance: normalizer profile name + rules hash (utterance_scores,
slice_metrics, comparisons) and, through run_id, the model hash, decode params and versions.
"""

from __future__ import annotations

SCHEMA_VERSION = 7
# From this version on the error taxonomy is on MER units; older taxonomy rows are dropped by the
# migration and classified again by ``store.db.migrate`` (from the stored normalized texts).
TAXONOMY_ON_MER_UNITS = 6
# From this version on hallucination over silence is measured; ``store.db.migrate`` measures the runs
# an older store scored (from their stored hypotheses, segments and emission logs).
HALLUCINATION_SINCE = 7

# Each entry migrates the store from version i to i+1 (index 0: empty file -> v1).
MIGRATIONS: list[str] = [
    """
CREATE TABLE IF NOT EXISTS meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR
);

CREATE TABLE IF NOT EXISTS corpora (
    corpus_id VARCHAR PRIMARY KEY,        -- corpus name from index.json + short index hash
    name VARCHAR NOT NULL,
    path VARCHAR NOT NULL,                -- shard directory
    index_sha256 VARCHAR NOT NULL,
    n_utts BIGINT,
    hours DOUBLE,
    splits JSON,                          -- {"train": n, "test": n}
    slice_columns JSON,                   -- ["accent", "gender", ...]
    source JSON,                          -- how it was ingested
    loaded_at TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS utterances (
    corpus_id VARCHAR NOT NULL,
    utt_id VARCHAR NOT NULL,
    split VARCHAR,
    duration_s DOUBLE,
    speaker VARCHAR,
    text VARCHAR,                         -- raw reference, never normalized in place
    source_path VARCHAR,
    audio_sha256 VARCHAR,
    PRIMARY KEY (corpus_id, utt_id)
);

CREATE TABLE IF NOT EXISTS utterance_attrs (
    corpus_id VARCHAR NOT NULL,
    utt_id VARCHAR NOT NULL,
    attr VARCHAR NOT NULL,
    value VARCHAR,
    PRIMARY KEY (corpus_id, utt_id, attr)
);

CREATE TABLE IF NOT EXISTS models (
    model_id VARCHAR PRIMARY KEY,         -- e.g. 'openai/whisper-large-v3@<rev>' or 'local:<name>@<hash>'
    name VARCHAR NOT NULL,                -- what the user typed (hub id, path, bundled:whisper-base)
    source VARCHAR NOT NULL,              -- 'hub' | 'local' | 'bundled'
    path VARCHAR,
    revision VARCHAR,                     -- hub commit or content hash of the weights
    num_mel_bins INTEGER,
    n_params BIGINT,
    config JSON,
    base_model_id VARCHAR,                -- lineage for fine-tuned checkpoints
    corpus_id VARCHAR,
    training_run_id VARCHAR,
    step BIGINT,
    registered_at TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS eval_runs (
    run_id VARCHAR PRIMARY KEY,
    corpus_id VARCHAR NOT NULL,
    split VARCHAR,
    model_id VARCHAR NOT NULL,
    status VARCHAR,                       -- 'running' | 'done' | 'failed'
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    device VARCHAR,
    dtype VARCHAR,
    batch_size INTEGER,
    decode_params JSON,                   -- language, task, num_beams, max_new_tokens, ...
    versions JSON,                        -- torch, transformers, asr-eval, ...
    n_utts BIGINT,
    audio_s DOUBLE,
    proc_s DOUBLE,                        -- features + generate + decode, not audio decoding
    rtfx DOUBLE,                          -- audio_s / proc_s
    peak_gpu_mem_bytes BIGINT
);

CREATE TABLE IF NOT EXISTS hypotheses (
    run_id VARCHAR NOT NULL,
    utt_id VARCHAR NOT NULL,
    hyp_raw VARCHAR,                      -- NULL = model produced nothing (scored as deletions)
    n_tokens INTEGER,
    shard VARCHAR,
    PRIMARY KEY (run_id, utt_id)
);

CREATE TABLE IF NOT EXISTS utterance_scores (
    run_id VARCHAR NOT NULL,
    utt_id VARCHAR NOT NULL,
    normalizer VARCHAR NOT NULL,          -- profile name, e.g. 'zh-v1'
    normalizer_hash VARCHAR NOT NULL,     -- hash of the profile's rules
    ref_norm VARCHAR,
    hyp_norm VARCHAR,
    cer_n INTEGER, cer_s INTEGER, cer_d INTEGER, cer_i INTEGER,   -- n = reference length
    mer_n INTEGER, mer_s INTEGER, mer_d INTEGER, mer_i INTEGER,
    wer_n INTEGER, wer_s INTEGER, wer_d INTEGER, wer_i INTEGER,
    zh_n INTEGER, zh_err INTEGER,         -- per-class (Mandarin/English/Number/Other) MER tokens
    en_n INTEGER, en_err INTEGER,
    num_n INTEGER, num_err INTEGER,
    other_n INTEGER, other_err INTEGER,
    alignment JSON,                       -- [[op, ref_tok, hyp_tok], ...] on the CER level
    flags VARCHAR[],                      -- pathology flags: repetition, hallucination, ...
    empty_ref BOOLEAN,
    PRIMARY KEY (run_id, utt_id, normalizer)
);

CREATE TABLE IF NOT EXISTS slice_metrics (
    run_id VARCHAR NOT NULL,
    normalizer VARCHAR NOT NULL,
    normalizer_hash VARCHAR,
    slice_attr VARCHAR NOT NULL,          -- '_all' for the whole run
    slice_value VARCHAR NOT NULL,
    n BIGINT,
    hours DOUBLE,
    cer DOUBLE, cer_lo DOUBLE, cer_hi DOUBLE,
    mer DOUBLE, mer_lo DOUBLE, mer_hi DOUBLE,
    wer DOUBLE,
    cer_s BIGINT, cer_d BIGINT, cer_i BIGINT, cer_n BIGINT,
    n_boot INTEGER,
    ci_method VARCHAR,                    -- 'utterance' | 'speaker-block'
    PRIMARY KEY (run_id, normalizer, slice_attr, slice_value)
);

CREATE TABLE IF NOT EXISTS comparisons (
    run_a VARCHAR NOT NULL,
    run_b VARCHAR NOT NULL,
    normalizer VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,              -- 'cer' | 'mer'
    slice_attr VARCHAR NOT NULL,
    slice_value VARCHAR NOT NULL,
    n BIGINT,
    rate_a DOUBLE,
    rate_b DOUBLE,
    delta DOUBLE,                         -- rate_b - rate_a (negative: b is better)
    delta_lo DOUBLE,
    delta_hi DOUBLE,
    p_b_better DOUBLE,                    -- bootstrap P(b has fewer errors)
    sign_test_p DOUBLE,
    verdict VARCHAR,                      -- sentence in words
    PRIMARY KEY (run_a, run_b, normalizer, metric, slice_attr, slice_value)
);

CREATE TABLE IF NOT EXISTS training_runs (
    training_run_id VARCHAR PRIMARY KEY,
    name VARCHAR,
    out_dir VARCHAR,
    source VARCHAR,                       -- 'asr-eval' | 'trainer_state' | 'tensorboard'
    base_model_id VARCHAR,
    corpus_id VARCHAR,
    params JSON,
    baseline_run_id VARCHAR,
    status VARCHAR,
    started_at TIMESTAMP,
    finished_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS training_log (
    training_run_id VARCHAR NOT NULL,
    step BIGINT NOT NULL,
    kind VARCHAR NOT NULL,                -- 'train' | 'eval'
    epoch DOUBLE,
    loss DOUBLE,                          -- train loss, or eval loss when kind = 'eval'
    grad_norm DOUBLE,
    learning_rate DOUBLE,
    cer DOUBLE,                           -- eval only
    cer_s BIGINT, cer_d BIGINT, cer_i BIGINT, cer_n BIGINT,
    wall_time DOUBLE,
    PRIMARY KEY (training_run_id, step, kind)
);

CREATE TABLE IF NOT EXISTS alerts (
    alert_id VARCHAR PRIMARY KEY,
    training_run_id VARCHAR NOT NULL,
    baseline_run_id VARCHAR,
    rule VARCHAR NOT NULL,                -- 'non_finite' | 'loss_spike' | 'overfitting' | ...
    severity VARCHAR NOT NULL,            -- 'critical' | 'regression' | 'warning' | 'info'
    step BIGINT,
    metric VARCHAR,
    value DOUBLE,
    threshold DOUBLE,
    message VARCHAR NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp
);
""",
    # v2: engines, preprocessing, decode recipes and long-form strategies as recorded axes
    # (issue 11/14); imported hypotheses; per-utterance decode facts; minimum evidence,
    # multiplicity and interval method on slices and comparisons (issue 12); ship gates.
    """
ALTER TABLE eval_runs ADD COLUMN kind VARCHAR DEFAULT 'model';        -- 'model' | 'import'
ALTER TABLE eval_runs ADD COLUMN engine VARCHAR DEFAULT 'transformers';
ALTER TABLE eval_runs ADD COLUMN engine_version VARCHAR;
ALTER TABLE eval_runs ADD COLUMN compute_type VARCHAR;                -- float32 | int8 | float16 | ...
ALTER TABLE eval_runs ADD COLUMN preprocessing VARCHAR DEFAULT 'pad-audio';
ALTER TABLE eval_runs ADD COLUMN recipe VARCHAR DEFAULT 'greedy';
ALTER TABLE eval_runs ADD COLUMN strategy VARCHAR DEFAULT 'short';    -- long-form: sequential | chunked | vad
ALTER TABLE eval_runs ADD COLUMN strategy_params JSON;
ALTER TABLE eval_runs ADD COLUMN provenance JSON;                     -- engine identity, import source hash, notes
ALTER TABLE eval_runs ADD COLUMN n_missing BIGINT;                    -- utterances without a hypothesis

ALTER TABLE models ADD COLUMN display_name VARCHAR;                   -- short readable name for tables/report
ALTER TABLE models ADD COLUMN train_preprocessing VARCHAR;            -- preprocessing a fine-tune was trained with
ALTER TABLE models ADD COLUMN selection_split VARCHAR;                -- split its checkpoint was selected on

ALTER TABLE utterances ADD COLUMN segments JSON;                      -- long-form: [[start, end, text], ...]

ALTER TABLE hypotheses ADD COLUMN avg_logprob DOUBLE;
ALTER TABLE hypotheses ADD COLUMN n_fallbacks INTEGER;                -- temperature-fallback re-decodes
ALTER TABLE hypotheses ADD COLUMN temperature DOUBLE;                 -- temperature of the kept decode
ALTER TABLE hypotheses ADD COLUMN cut_off BOOLEAN;                    -- stopped at max_new_tokens
ALTER TABLE hypotheses ADD COLUMN segments JSON;                      -- long-form: [[start, end, text], ...]

ALTER TABLE slice_metrics ADD COLUMN ref_chars BIGINT;
ALTER TABLE slice_metrics ADD COLUMN reliable BOOLEAN;                -- enough evidence (min_utts, min_ref_chars)
ALTER TABLE slice_metrics ADD COLUMN n_blocks BIGINT;                 -- resampling units
ALTER TABLE slice_metrics ADD COLUMN n_nonfinite INTEGER;             -- bootstrap replicates dropped as non-finite

ALTER TABLE comparisons ADD COLUMN p_raw DOUBLE;
ALTER TABLE comparisons ADD COLUMN p_adj DOUBLE;
ALTER TABLE comparisons ADD COLUMN adj_method VARCHAR;                -- 'holm' | 'bh'
ALTER TABLE comparisons ADD COLUMN family_size INTEGER;
ALTER TABLE comparisons ADD COLUMN reliable BOOLEAN;
ALTER TABLE comparisons ADD COLUMN mde DOUBLE;                        -- half-width of the paired interval
ALTER TABLE comparisons ADD COLUMN ci_method VARCHAR;
ALTER TABLE comparisons ADD COLUMN n_nonfinite INTEGER;
ALTER TABLE comparisons ADD COLUMN ref_chars BIGINT;

CREATE TABLE IF NOT EXISTS gates (
    gate_id VARCHAR PRIMARY KEY,
    baseline_run VARCHAR NOT NULL,
    candidate_run VARCHAR NOT NULL,
    normalizer VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    margin DOUBLE NOT NULL,                                           -- points (0.5 = half a point of CER)
    decision VARCHAR NOT NULL,                                        -- 'PASS' | 'FAIL' | 'INCONCLUSIVE'
    summary VARCHAR,
    details JSON,                                                     -- per slice: delta, interval, p_adj, status
    created_at TIMESTAMP DEFAULT current_timestamp
);
""",
    # v3: streaming runs (issue 19): the policy as a recorded axis, the emission log, and the
    # streaming metrics per recording and per slice.
    """
ALTER TABLE eval_runs ADD COLUMN stream_policy VARCHAR;               -- local-agreement | vad-segment | hold-k | import
ALTER TABLE eval_runs ADD COLUMN stream_params JSON;                  -- {"chunk_s": 1.0, "n": 2, ...}

CREATE TABLE IF NOT EXISTS stream_events (
    run_id VARCHAR NOT NULL,
    utt_id VARCHAR NOT NULL,
    seq INTEGER NOT NULL,                 -- 0-based order of the emission within the recording
    chunk INTEGER,                        -- the chunk step that made it (n_chunks for the end-of-stream flush)
    emit_s DOUBLE,                        -- computation-unaware clock: the chunk's arrival time
    emit_aware_s DOUBLE,                  -- computation-aware clock: when the step finished computing
    text VARCHAR,                         -- committed increment (never retracted)
    tentative VARCHAR,                    -- tentative tail shown after the committed text
    final BOOLEAN,                        -- the end-of-stream emission
    PRIMARY KEY (run_id, utt_id, seq)
);

CREATE TABLE IF NOT EXISTS stream_recordings (
    run_id VARCHAR NOT NULL,
    utt_id VARCHAR NOT NULL,
    audio_s DOUBLE,
    chunk_s DOUBLE,
    n_chunks INTEGER,
    decode_calls INTEGER,                 -- NULL for imported logs (unknown)
    compute_s DOUBLE,                     -- Σ step costs (the computation-aware clock's durations)
    real_time BOOLEAN,                    -- the computation-aware lag stayed bounded (streaming/simulate.py)
    final_lag_s DOUBLE,
    max_lag_s DOUBLE,
    lag_slope DOUBLE,                     -- s of lag gained per s of audio
    PRIMARY KEY (run_id, utt_id)
);

CREATE TABLE IF NOT EXISTS stream_scores (
    run_id VARCHAR NOT NULL,
    utt_id VARCHAR NOT NULL,
    normalizer VARCHAR NOT NULL,
    normalizer_hash VARCHAR,
    timing_method VARCHAR,                -- how reference character times were obtained (aligned:… | uniform | mixed:…)
    n_ref_chars INTEGER,
    n_matched INTEGER,                    -- committed characters matched to a reference character
    latency_unaware JSON,                 -- [s, ...] per matched character, computation-unaware clock
    latency_aware JSON,                   -- the same on the computation-aware clock
    first_emission_unaware JSON,          -- per reference segment: first matched emission − speech onset (null: none)
    first_emission_aware JSON,
    retracted_chars INTEGER,              -- flicker = retracted / written
    written_chars INTEGER,
    n_commits INTEGER,                    -- emissions with a non-blank committed increment
    PRIMARY KEY (run_id, utt_id, normalizer)
);

CREATE TABLE IF NOT EXISTS stream_slices (
    run_id VARCHAR NOT NULL,
    normalizer VARCHAR NOT NULL,
    slice_attr VARCHAR NOT NULL,
    slice_value VARCHAR NOT NULL,
    n BIGINT,                             -- recordings
    audio_s DOUBLE,
    n_matched BIGINT,
    latency_mean_s_unaware DOUBLE, latency_median_s_unaware DOUBLE, latency_p90_s_unaware DOUBLE,
    latency_median_lo_unaware DOUBLE, latency_median_hi_unaware DOUBLE,
    latency_mean_s_aware DOUBLE, latency_median_s_aware DOUBLE, latency_p90_s_aware DOUBLE,
    latency_median_lo_aware DOUBLE, latency_median_hi_aware DOUBLE,
    first_emission_median_s_unaware DOUBLE, first_emission_median_s_aware DOUBLE,
    flicker DOUBLE,
    commits_per_minute DOUBLE,
    decode_calls BIGINT,
    compute_per_audio_s DOUBLE,
    real_time BOOLEAN,                    -- every recording's computation-aware lag stayed bounded
    n_boot INTEGER,
    timing_method VARCHAR,
    PRIMARY KEY (run_id, normalizer, slice_attr, slice_value)
);
""",
    # v4: what kind of errors (issue 22): the Mandarin error taxonomy and pinyin error rate per
    # utterance and per slice, substitution pairs, and train/test contamination (per utterance and
    # per training source, and in a fine-tune's lineage).
    """
CREATE TABLE IF NOT EXISTS utterance_errors (
    run_id VARCHAR NOT NULL,
    utt_id VARCHAR NOT NULL,
    normalizer VARCHAR NOT NULL,
    normalizer_hash VARCHAR,
    homophone INTEGER, tone INTEGER, near_homophone INTEGER,   -- substitutions (asr_eval.metrics.taxonomy)
    variant INTEGER, number_format INTEGER, latin INTEGER, other INTEGER,
    particle INTEGER,                     -- inserted or deleted particles (的 了 吗 呢 …)
    deletion INTEGER, insertion INTEGER,  -- the other deletions / insertions (all ten sum to MER S + D + I since v6)
    py_n INTEGER,                         -- reference units: syllables of Han characters, words, numbers (v6; characters before)
    py_err INTEGER,                       -- pinyin errors without tones (S + D + I)
    pyt_err INTEGER,                      -- pinyin errors with tones
    PRIMARY KEY (run_id, utt_id, normalizer)
);

CREATE TABLE IF NOT EXISTS error_slices (
    run_id VARCHAR NOT NULL,
    normalizer VARCHAR NOT NULL,
    normalizer_hash VARCHAR,
    slice_attr VARCHAR NOT NULL,
    slice_value VARCHAR NOT NULL,
    n BIGINT,
    ref_chars BIGINT,
    errors BIGINT,                        -- S + D + I on MER units since v6 (the shares' denominator)
    homophone BIGINT, tone BIGINT, near_homophone BIGINT, variant BIGINT, number_format BIGINT,
    latin BIGINT, other BIGINT, particle BIGINT, deletion BIGINT, insertion BIGINT,
    shares JSON,                          -- {"homophone": share of errors, ...}
    per DOUBLE, per_lo DOUBLE, per_hi DOUBLE,      -- pinyin error rate, toneless, bootstrap 95% CI
    pter DOUBLE, pter_lo DOUBLE, pter_hi DOUBLE,   -- pinyin error rate with tones
    n_boot INTEGER,
    ci_method VARCHAR,
    reliable BOOLEAN,
    pinyin_version VARCHAR,               -- pypinyin release the readings came from (its dictionary decides them)
    PRIMARY KEY (run_id, normalizer, slice_attr, slice_value)
);

CREATE TABLE IF NOT EXISTS error_confusions (
    run_id VARCHAR NOT NULL,
    normalizer VARCHAR NOT NULL,
    ref_tok VARCHAR NOT NULL,
    hyp_tok VARCHAR NOT NULL,
    n BIGINT,
    ref_pinyin VARCHAR,                   -- the reading in context (the most frequent one)
    hyp_pinyin VARCHAR,
    class VARCHAR,                        -- the class of the most frequent reading pair
    PRIMARY KEY (run_id, normalizer, ref_tok, hyp_tok)
);

CREATE TABLE IF NOT EXISTS contamination_sources (
    source_hash VARCHAR PRIMARY KEY,      -- hash of the normalized training texts + normalizer rules + n
    kind VARCHAR,                         -- 'corpus' | 'file'
    corpus_id VARCHAR,                    -- kind corpus: the training corpus and split
    split VARCHAR,
    path VARCHAR,
    n_texts BIGINT,
    n_chars BIGINT,
    normalizer VARCHAR,
    normalizer_hash VARCHAR,
    ngram INTEGER,
    created_at TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS contamination (
    corpus_id VARCHAR NOT NULL,
    utt_id VARCHAR NOT NULL,
    source_hash VARCHAR NOT NULL,
    split VARCHAR,
    exact BOOLEAN,                        -- the normalized reference is one of the training texts
    longest_ngram INTEGER,                -- longest character n-gram shared with the training texts
    ngram_share DOUBLE,                   -- share of its character n-grams found there (NULL: shorter than n)
    threshold DOUBLE,
    flag VARCHAR,                         -- 'exact' | 'overlap' (share >= threshold) | 'clean'
    PRIMARY KEY (corpus_id, utt_id, source_hash)
);

CREATE TABLE IF NOT EXISTS lineage_contamination (
    model_id VARCHAR NOT NULL,
    corpus_id VARCHAR NOT NULL,           -- the corpus it is scored on
    eval_split VARCHAR NOT NULL,          -- 'all' for every utterance
    source_hash VARCHAR NOT NULL,
    training_run_id VARCHAR,
    n_utts BIGINT, n_exact BIGINT, n_overlap BIGINT, n_clean BIGINT,
    threshold DOUBLE,
    checked_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (model_id, corpus_id, eval_split, source_hash)
);
""",
    # v5: engine options (issue 21): how an engine computed (cache, compile, attention, assistant,
    # threads, workers, batch size) — part of the run id, compared with the run without them.
    """
ALTER TABLE eval_runs ADD COLUMN engine_options JSON;                 -- {"cache": "static", ...}; NULL: defaults
""",
    # v6: the error taxonomy and its confusions on MER units (issue 28): a Latin word or a number is
    # one unit (hello → 哈喽 is one confusion); the buckets sum to MER errors, over reference units.
    # The character-level rows are derived data: dropped here, classified again by store.db.migrate.
    """
ALTER TABLE error_slices ADD COLUMN ref_units BIGINT;                 -- MER reference units (the errors' denominator)
DELETE FROM error_confusions;
DELETE FROM error_slices;
DELETE FROM utterance_errors;
""",
    # v7: hallucination over silence (issue 31): per recording with reference segments and per slice,
    # for offline long-form runs, streaming runs and imported streaming logs alike.
    """
CREATE TABLE IF NOT EXISTS hallucination_scores (
    run_id VARCHAR NOT NULL,
    utt_id VARCHAR NOT NULL,
    normalizer VARCHAR NOT NULL,
    normalizer_hash VARCHAR,
    time_bound VARCHAR,                   -- where a hypothesis character can come from: 'emission' (streaming: its commit time) | 'segment' (its hypothesis segment) | 'none'
    min_silence_s DOUBLE,                 -- shortest reference gap that counts as silence (MIN_SILENCE_S)
    ref_units INTEGER,                    -- reference CER units (segments normalized one by one)
    hyp_units INTEGER,
    inserted INTEGER,                     -- hypothesis units the character alignment inserts
    inserted_in_silence INTEGER,          -- of those, in a silent gap of the reference, consistent with their time bound
    repeated_insertions INTEGER,          -- inserted units in blocks of >= 2 that repeat earlier hypothesis or reference text
    silence_s DOUBLE,                     -- total length of the counted silent gaps
    examples JSON,                        -- [{"text", "gap_start_s", "gap_end_s", "emit_s", "repeated"}, ...] longest first, at most 3
    PRIMARY KEY (run_id, utt_id, normalizer)
);

CREATE TABLE IF NOT EXISTS hallucination_slices (
    run_id VARCHAR NOT NULL,
    normalizer VARCHAR NOT NULL,
    normalizer_hash VARCHAR,
    slice_attr VARCHAR NOT NULL,
    slice_value VARCHAR NOT NULL,
    n BIGINT,                             -- recordings measured (those with reference segments)
    ref_units BIGINT,
    inserted BIGINT,
    inserted_in_silence BIGINT,
    repeated_insertions BIGINT,
    silence_s DOUBLE,
    min_silence_s DOUBLE,
    PRIMARY KEY (run_id, normalizer, slice_attr, slice_value)
);
""",
]

TABLES = (
    "meta", "corpora", "utterances", "utterance_attrs", "models", "eval_runs", "hypotheses",
    "utterance_scores", "slice_metrics", "comparisons", "training_runs", "training_log", "alerts", "gates",
    "stream_events", "stream_recordings", "stream_scores", "stream_slices",
    "utterance_errors", "error_slices", "error_confusions", "contamination_sources", "contamination",
    "lineage_contamination", "hallucination_scores", "hallucination_slices",
)
STREAM_TABLES = ("stream_events", "stream_recordings", "stream_scores", "stream_slices")  # v3: absent from a read-only older store
# v4: absent from a read-only older store (the report leaves the "What kind of errors" section out)
ERROR_TABLES = ("utterance_errors", "error_slices", "error_confusions", "contamination_sources", "contamination",
                "lineage_contamination")
# v7: absent from a read-only older store (the report leaves the hallucination numbers out)
HALLUCINATION_TABLES = ("hallucination_scores", "hallucination_slices")
