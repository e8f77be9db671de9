"""LoraCapture wraps each lora_A's forward (no hooks): the recorded scalars
are lora_A's outputs, the model's outputs are unchanged, two captures nest,
and remove() leaves every module as it was."""

from __future__ import annotations

import pytest
import torch
from conftest import add_random_lora, make_tiny_qwen

from lorascope.activations.hooks import LoraCapture, forward_batch, pad_batch
from lorascope.core.components import lora_modules

VOCAB = 97


def _model():
    return add_random_lora(make_tiny_qwen(VOCAB, layers=2), seed=3).to(torch.float64)


def _batch():
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in (5, 9)]
    return pad_batch(seqs, "cpu")


@torch.no_grad()
def test_capture_records_lora_a_outputs_and_leaves_outputs_alone():
    model = _model()
    ids, mask = _batch()
    want = model(input_ids=ids, attention_mask=mask.long()).logits
    seen = {}
    handles = [
        layer.lora_A["default"].register_forward_hook(
            lambda m, i, o, name=info.name: seen.__setitem__(name, o.detach().clone())
        )
        for info, layer in lora_modules(model)
    ]  # a user's hook on lora_A still runs, and sees the same output
    cap = LoraCapture(model)
    lora_TC, _ = forward_batch(model, ids, mask, cap, None, dtype=torch.float64)
    got = model(input_ids=ids, attention_mask=mask.long()).logits
    assert torch.equal(got, want)
    for col, (info, _) in enumerate(lora_modules(model)):
        assert torch.equal(lora_TC[:, col], seen[info.name][mask][:, 0])
    for h in handles:
        h.remove()
    cap.remove()


@torch.no_grad()
def test_captures_nest_and_remove_restores_every_module():
    model = _model()
    modules = [layer.lora_A["default"] for _, layer in lora_modules(model)]
    assert all("forward" not in m.__dict__ for m in modules)
    ids, mask = _batch()
    outer, inner = LoraCapture(model), LoraCapture(model)
    a, _ = forward_batch(model, ids, mask, outer, None, dtype=torch.float64)
    b, _ = forward_batch(model, ids, mask, inner, None, dtype=torch.float64)
    assert torch.equal(a, b)
    inner.remove()
    c, _ = forward_batch(model, ids, mask, outer, None, dtype=torch.float64)
    assert torch.equal(a, c)
    outer.remove()
    outer.remove()  # twice is harmless
    assert all("forward" not in m.__dict__ for m in modules)


# Tests added from mutation testing (`make mutation SESSIONS=hooks`).


def test_dora_adapter_fails_naming_the_module():
    from peft import LoraConfig, get_peft_model

    from lorascope.activations.hooks import ExtractError

    cfg = LoraConfig(r=1, target_modules=["q_proj"], use_dora=True)
    model = get_peft_model(make_tiny_qwen(VOCAB, layers=1), cfg)
    with pytest.raises(ExtractError) as err:
        LoraCapture(model)
    assert str(err.value) == (
        "model.layers.0.self_attn.q_proj: LoRA variant (e.g. DoRA) has no plain scalar"
    )


@torch.no_grad()
def test_capture_of_an_adapter_not_named_default():
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=1, target_modules=["q_proj", "down_proj"])
    model = get_peft_model(make_tiny_qwen(VOCAB, layers=1), cfg, adapter_name="sft")
    cap = LoraCapture(model, "sft")
    assert cap.columns == ["L0.q", "L0.down"]
    ids, mask = _batch()
    lora_TC, _ = forward_batch(model, ids, mask, cap, None)
    assert lora_TC.shape == (int(mask.sum()), 2)


@torch.no_grad()
def test_a_module_run_twice_in_one_recording_fails():
    from lorascope.activations.hooks import ExtractError

    model = _model()
    ids, mask = _batch()
    cap = LoraCapture(model)
    buf = torch.empty(*ids.shape, cap.n_components, dtype=torch.float64)
    with pytest.raises(ExtractError, match=r"not run exactly once: \['L0.q', "):
        with cap.recording(buf):
            model(input_ids=ids, attention_mask=mask.long())
            model(input_ids=ids, attention_mask=mask.long())
