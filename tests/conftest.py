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
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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


def pytest_collection_finish(session):
    """Start the shared micro reference run in the background as soon as the
    session knows it will need it (one xdist worker starts it; every test
    that needs it waits on its lock): the other tests run meanwhile."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if (
        worker not in (None, "gw0")
        or session.config.option.collectonly
        or os.environ.get("LORASCOPE_REFERENCE_RUN")
    ):
        return
    files = {item.path for item in session.items}
    if any("reference_run(" in f.read_text() for f in files):
        import wfrun

        wfrun.start_reference_build(session.config._tmp_path_factory.getbasetemp())
