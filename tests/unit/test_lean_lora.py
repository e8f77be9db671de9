"""The lean LoRA forward computes exactly what PEFT's does, or hands over to it."""

import pytest
import torch

from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.core.lean_lora import install_lean_forwards


@pytest.fixture()
def peft_model(tiny_model):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=1, lora_alpha=16, use_rslora=True, lora_dropout=0.0,
                     target_modules=["q_proj", "v_proj", "down_proj"])  # fmt: skip
    model = get_peft_model(tiny_model, cfg).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(model):
            layer.lora_B["default"].weight.normal_()  # PEFT starts B at zero
    return model


def _ids():
    return torch.randint(5, 100, (3, 11), generator=torch.Generator().manual_seed(0))


def _logits(model, **kwargs):
    with torch.no_grad():
        return model(input_ids=_ids(), **kwargs).logits


def test_lean_forward_is_bit_identical_and_edits_still_apply(peft_model):
    plain = _logits(peft_model)
    with ScalarControl(lora_layers(peft_model)) as control:
        control.add_VC = torch.full((1, control.n_components), 0.7)
        edited = _logits(peft_model)
    restore = install_lean_forwards(peft_model)
    assert all("forward" in m.__dict__ for m in lora_layers(peft_model))
    assert torch.equal(_logits(peft_model), plain)
    with ScalarControl(lora_layers(peft_model)) as control:
        control.add_VC = torch.full((1, control.n_components), 0.7)
        assert torch.equal(_logits(peft_model), edited)
        assert not torch.equal(edited, plain)  # the edit did something
    restore()
    assert not any("forward" in m.__dict__ for m in lora_layers(peft_model))


def test_cases_outside_the_plain_one_go_to_peft(peft_model):
    with peft_model.disable_adapter():
        base = _logits(peft_model)
    lora = _logits(peft_model)
    install_lean_forwards(peft_model)
    with peft_model.disable_adapter():
        assert torch.equal(_logits(peft_model), base)
    assert not torch.equal(base, lora)
    peft_model.merge_adapter()
    try:
        merged = _logits(peft_model)  # PEFT's merged weights: close, not equal
        assert torch.allclose(merged, lora, atol=1e-4 * float(lora.abs().max()))
    finally:
        peft_model.unmerge_adapter()  # W + dW - dW: the base weights round
    scale = float(lora.abs().max())
    assert torch.allclose(_logits(peft_model), lora, atol=1e-5 * scale)


def test_gradients_match_peft(peft_model):
    def grads():
        peft_model.zero_grad()
        peft_model(input_ids=_ids()).logits.square().mean().backward()
        return {n: p.grad.clone() for n, p in peft_model.named_parameters()
                if p.grad is not None}  # fmt: skip

    before = grads()
    install_lean_forwards(peft_model)
    after = grads()
    assert before.keys() == after.keys() and before
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_a_deep_copy_runs_its_own_weights(peft_model):
    import copy

    install_lean_forwards(peft_model)
    lora = _logits(peft_model)
    twin = copy.deepcopy(peft_model)
    assert torch.equal(_logits(twin), lora)
    with torch.no_grad():
        for layer in lora_layers(twin):
            layer.lora_B["default"].weight.zero_()
    with twin.disable_adapter():
        base = _logits(twin)
    assert torch.equal(_logits(twin), base)  # the copy's zeroed B, not the original's
    assert torch.equal(_logits(peft_model), lora)
