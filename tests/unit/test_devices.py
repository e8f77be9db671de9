"""Every tensor a hook mixes in follows the activation's device.

A GPU run fails when a hook adds a host tensor to CUDA activations (the
steering shift was built on the CPU and only its dtype converted). The same
class of bug shows on any machine when the model lives on the `meta` device:
meta and CPU tensors refuse to mix exactly as CUDA and CPU tensors do, and a
meta forward costs nothing. So these tests run the hook paths of ablation and
steering on a meta model, with every edit given as a host tensor (or numpy),
as the stages give them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers.masking_utils as masking
from conftest import add_random_lora, make_tiny_qwen

from lorascope.ablation.kl import PrefixRunner
from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.steering.sweep import steered

META = torch.device("meta")


@pytest.fixture()
def meta_lora(monkeypatch):
    """A tiny Qwen2 + rank-1 LoRA whose weights live on the meta device.

    Eager attention and no packed-sequence detection: both call `.item()`,
    which a meta tensor cannot answer (they are not code of ours)."""
    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda ids: None)
    model = add_random_lora(make_tiny_qwen(50, attn_implementation="eager"))
    model = model.to(META)
    with ScalarControl(lora_layers(model)) as control:
        yield model, control


def ids(n: int = 7) -> torch.Tensor:
    return torch.randint(0, 50, (1, n)).to(META)


def test_meta_model_rejects_a_host_tensor_in_a_hook(meta_lora):
    """The harness catches the bug class: a naive hook adding a CPU tensor."""
    model, _ = meta_lora
    layer = lora_layers(model)[0]
    host = torch.ones(1)
    handle = layer.lora_A["default"].register_forward_hook(lambda m, i, o: o + host)
    try:
        with pytest.raises(RuntimeError, match="device"):
            model(input_ids=ids())
    finally:
        handle.remove()


def test_scalar_edits_from_the_host_follow_the_activations(meta_lora):
    model, control = meta_lora
    n = control.n_components
    control.mult_VC = torch.ones(2, n)  # host tensors, float32
    control.add_VC = torch.zeros(2, n, dtype=torch.float64)
    control.record = True
    logits = model(input_ids=ids().expand(2, -1)).logits
    assert logits.device == META and control.recorded().device == META


def test_steering_shift_from_numpy_runs_on_the_model_device(meta_lora):
    model, control = meta_lora
    with steered(control, np.ones(control.n_components), 3.0):
        assert model(input_ids=ids()).logits.device == META


def test_prefix_reuse_and_kl_with_host_edits(meta_lora):
    model, control = meta_lora
    runner = PrefixRunner(model, control)
    runner.reference(ids())
    runner.ref_logp(logit_chunk=4)
    scope_T = torch.ones(7, dtype=torch.bool, device=META)
    n = control.n_components
    kl_V = runner.mean_kl(1, scope_T, mult_VC=torch.ones(3, n), logit_chunk=4)
    assert kl_V.device == META and kl_V.shape == (3,)
    hidden = runner.run_from(1, add_VC=torch.zeros(3, n), mlp_start=True)
    assert hidden.device == META


def test_steering_position_mask_from_the_host_follows_the_activations(meta_lora):
    model, control = meta_lora
    control.add_VC = torch.ones(1, control.n_components)
    control.add_mask_T = torch.tensor([True, False] * 3 + [True])  # host, bool
    assert model(input_ids=ids()).logits.device == META
