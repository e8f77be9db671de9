"""Shared fixtures: a tiny random Qwen2 with the toy tokenizer, and its LoRA.

Dims are tiny so every test runs in seconds on a CPU; the model class and the
PEFT wrapping are the real ones, so hook paths match paper scale.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
# Helpers shared by test files (run helpers, fake hub, fake LLM server, ...).
sys.path.insert(0, str(REPO / "tests" / "support"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No SLURM cluster for the tests that do not start one: tests/slurm/no_cluster.conf
# says why (test_slurm.py drops it for the cluster it starts).
os.environ.setdefault("SLURM_CONF", str(REPO / "tests" / "slurm" / "no_cluster.conf"))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_tiny_qwen(
    vocab_size: int, layers: int = 2, hidden: int = 32, seed: int = 0, **overrides
):
    """A randomly initialised Qwen2ForCausalLM of tiny size (overrides: any
    Qwen2Config field)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(Qwen2Config(**{**fields, **overrides})).eval()


def add_random_lora(model, r: int = 1, seed: int = 0, alpha: float = 16):
    """Wrap with a PEFT LoRA whose A and B are both random (B is 0 at init)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        use_rslora=True,
        target_modules=TARGETS,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            p.data = torch.randn(p.shape, generator=g) * 0.1
    return peft_model.eval()


@pytest.fixture(autouse=True)
def _salt_file(tmp_path_factory, monkeypatch):
    """Digests of request settings (lorascope.core.secrets) salt from a file
    of the session's, not `.snakemake/lorascope/salt` in the checkout the
    tests run from; workflow runs use their own working directory's
    (wfrun.env leaves the variable out)."""
    salt = tmp_path_factory.getbasetemp() / "lorascope-salt"
    monkeypatch.setenv("LORASCOPE_SALT_FILE", str(salt))


@pytest.fixture(scope="session")
def toy_tokenizer():
    from lorascope.toy.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, toy_tokenizer) -> Path:
    """A saved tiny random Qwen2 + toy tokenizer: loads like any HF model dir."""
    d = tmp_path_factory.mktemp("tiny_qwen")
    model = make_tiny_qwen(len(toy_tokenizer))
    model.save_pretrained(d)
    toy_tokenizer.save_pretrained(d)
    return d


@pytest.fixture()
def tiny_model(toy_tokenizer):
    return make_tiny_qwen(len(toy_tokenizer))


@pytest.fixture()
def tiny_lora(toy_tokenizer):
    """A tiny Qwen2 wrapped in a rank-1 PEFT LoRA with random A and B."""
    return add_random_lora(make_tiny_qwen(len(toy_tokenizer)))


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory, toy_tokenizer) -> Path:
    """A saved rank-1 PEFT adapter dir for the tiny model."""
    d = tmp_path_factory.mktemp("tiny_adapter")
    add_random_lora(make_tiny_qwen(len(toy_tokenizer))).save_pretrained(d)
    return d


def s1k_rows(n: int = 6) -> dict[str, list]:
    """Rows in the simplescaling/s1K-1.1 schema (the columns the hub has)."""
    return {
        "solution": [str(i + 2) for i in range(n)],
        "question": [f"What is {i}+2?" for i in range(n)],
        "cot_type": ["math"] * n,
        "source_type": ["toy"] * n,
        "metadata": ["{}"] * n,
        "gemini_thinking_trajectory": ["" for _ in range(n)],
        "gemini_attempt": ["" for _ in range(n)],
        "deepseek_thinking_trajectory": [f"{i} plus 2 is {i + 2}." for i in range(n)],
        "deepseek_attempt": [f"\\boxed{{{i + 2}}}" for i in range(n)],
        "gemini_grade": ["Yes"] * n,
        "gemini_grade_reason": [""] * n,
        "deepseek_grade": ["Yes"] * n,
        "deepseek_grade_reason": [""] * n,
    }


# Seconds a test file takes with two workers (tests/support/timeline.py on a
# `make test` run; files added on 2026-12-06 from pytest --durations and their
# authors' runs, on a busy machine), for the order below; files not listed
# take seconds.
HEAVY_FILES = {
    "test_vllm.py": 240, "test_ablation_workflow.py": 190, "test_slurm.py": 132,
    "test_faults.py": 116, "test_eval_backends.py": 107,
    "test_reproducibility.py": 72, "test_figures_workflow.py": 71,
    "test_rebuild_files.py": 66, "test_gpu_bundle.py": 60,
    "test_bad_input.py": 51, "test_train.py": 50, "test_forcing.py": 45,
    "test_rebuild.py": 42, "test_hub_workflow.py": 42,
    "test_stopped_run.py": 40, "test_workflow.py": 32, "test_plan.py": 30,
    "test_autointerp_clients.py": 26, "test_finished_run.py": 25,
    "test_existing_adapter_workflow.py": 24,
    "test_bad_input_finished_run.py": 24, "test_ablation.py": 22,
    "test_toy.py": 18, "test_autointerp_safety.py": 18,
}  # fmt: skip


def _needs_reference(path: Path) -> bool:
    return path.suffix == ".py" and "reference_run(" in path.read_text()


def pytest_collection_modifyitems(config, items):
    """Heavy files first, and the ones that need the shared reference run
    last: with two xdist workers (make test) each file runs on one worker,
    so this keeps both busy while the reference run builds in the
    background, and no worker ends with a long file alone. (Scheduling the
    files that wait for it only at their end early made the suite slower,
    21 min vs 17.7: they then idle on its lock while it competes for CPU.)"""
    order = {}
    for i, item in enumerate(items):
        if item.path not in order:
            heavy = HEAVY_FILES.get(item.path.name, 0)
            order[item.path] = (_needs_reference(item.path), -heavy, i)
    items.sort(key=lambda item: order[item.path])


def _start_reference(config) -> None:
    import wfrun

    wfrun.start_reference_build(config._tmp_path_factory.getbasetemp())


def pytest_configure(config):
    """xdist workers run a little below the reference run's priority: it is
    on every later test's critical path (tests wait for it), they are not."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.nice(5)


def pytest_sessionstart(session):
    """Under xdist the controller starts the reference run (at normal
    priority) when the paths asked for hold a test that needs it and no
    -k/-m filter could leave them out; workers only wait on its lock."""
    config = session.config
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(
        config.option, "numprocesses", None
    ):
        return
    if config.option.keyword or config.option.markexpr or _no_reference(config):
        return
    files = set()
    for arg in config.args:
        path = Path(arg.split("::")[0])
        files |= set(path.rglob("test_*.py")) if path.is_dir() else {path}
    if any(_needs_reference(f) for f in files if f.exists()):
        _start_reference(config)


def _no_reference(config) -> bool:
    return config.option.collectonly or bool(os.environ.get("LORASCOPE_REFERENCE_RUN"))


def pytest_collection_finish(session):
    """Without xdist: start the reference run in the background as soon as
    collection shows a test needs it; the other tests run meanwhile."""
    if os.environ.get("PYTEST_XDIST_WORKER") or _no_reference(session.config):
        return
    if getattr(session.config.option, "numprocesses", None):
        return  # the xdist controller started it (pytest_sessionstart)
    if any(_needs_reference(path) for path in {item.path for item in session.items}):
        _start_reference(session.config)
