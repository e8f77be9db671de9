"""The steering sweep's model axis (lorascope.steering.models): rank-1 rows
unchanged by it, the base and the full fine-tune get the same push."""

import copy

import numpy as np
import polars as pl
import pytest
import torch
from conftest import add_random_lora, make_tiny_qwen
from polars.testing import assert_frame_equal

from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.core.components import lora_modules, table_from_modules
from lorascope.steering.models import adapter_silenced, sweep_models, transfer_summary
from lorascope.steering.sweep import sweep
from lorascope.steering.targets import Target, component_direction

BENCH = [
    {"problem": "What is 1+2?", "answer": "3", "choices": None, "grader": "math"},
    {"problem": "What is 2+2?", "answer": "4", "choices": None, "grader": "math"},
]


def models(tokenizer):
    """(base + adapter, full fine-tune + the same adapter, component table)."""
    base = add_random_lora(make_tiny_qwen(len(tokenizer))).double()
    full = add_random_lora(make_tiny_qwen(len(tokenizer), seed=5)).double()
    full.load_state_dict(base.state_dict() | {
        k: v for k, v in full.state_dict().items() if "lora_" not in k
    })  # fmt: skip
    table = table_from_modules([m for m, _ in lora_modules(base)])
    return base, full, table


def run(tokenizer, table):
    ids_T = torch.tensor(tokenizer("12+34=46. Wait, 12+34=46.")["input_ids"])
    seqs = [(ids_T, torch.arange(len(ids_T)) < len(ids_T) - 1)]
    out_index = int(table.filter(pl.col("module") == "o")["index"][0])
    targets = [
        Target("component", out_index, "L0.o", "config",
               component_direction(table.height, out_index, 1.0)),
    ]  # fmt: skip

    def run_sweep(model, control):
        return sweep(
            model, tokenizer, control, targets, [0.0, 30.0], BENCH, seqs,
            table["layer"].to_numpy(), words=["Wait"], max_new_tokens=6,
            batch_size=2,
        )  # fmt: skip

    return run_sweep


def test_rank1_rows_do_not_change_with_the_model_axis(toy_tokenizer):
    base, full, table = models(toy_tokenizer)
    run_sweep = run(toy_tokenizer, table)
    alone = sweep_models(["rank1"], [copy.deepcopy(base)], None, run_sweep)
    loaded = []

    def load_full():
        loaded.append(True)
        return full

    every = sweep_models(["full", "base", "rank1"], [base], load_full, run_sweep)
    assert loaded == [True]
    assert every["model"].unique(maintain_order=True).to_list() == [
        "rank1", "base", "full",
    ]  # fmt: skip
    assert_frame_equal(every.filter(pl.col("model") == "rank1"), alone)
    # The other models are other models: their KL to their own unsteered
    # selves differs from the rank-1 model's.
    kl = {m: every.filter(pl.col("model") == m)["kl_to_unsteered"][1]
          for m in ("rank1", "base", "full")}  # fmt: skip
    assert kl["base"] != pytest.approx(kl["rank1"])
    assert kl["full"] != pytest.approx(kl["base"])
    summary = transfer_summary(every, "kl_to_unsteered")
    assert set(summary.columns) >= {"label", "sign", "rank1", "base", "full"}


@torch.no_grad()
def test_silenced_adapter_is_the_base_plus_the_push(toy_tokenizer):
    """Silenced: the base model's logits; a push adds lora_B x shift x
    scaling, the same as the rank-1 model with its scalars zeroed and pushed."""
    model, _, table = models(toy_tokenizer)
    ids = torch.tensor([toy_tokenizer("1+2=3")["input_ids"]])
    with model.disable_adapter():
        base_logits = model(input_ids=ids).logits
    before = [p.clone() for n, p in model.named_parameters() if "lora_A" in n]
    push_1C = torch.zeros(1, table.height, dtype=torch.float64)
    push_1C[0, 3] = 2.5
    with ScalarControl(lora_layers(model)) as control:
        with adapter_silenced(lora_layers(model)):
            torch.testing.assert_close(model(input_ids=ids).logits, base_logits)
            control.add_VC = push_1C
            silenced = model(input_ids=ids).logits
        control.mult_VC = torch.zeros_like(push_1C)  # the other path, unsilenced
        zeroed = model(input_ids=ids).logits
    torch.testing.assert_close(silenced, zeroed)
    assert not torch.allclose(silenced, base_logits)
    after = [p for n, p in model.named_parameters() if "lora_A" in n]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match=r"steering.models: unknown \['ful'\]"):
        sweep_models(["ful"], [None], None, None)


def test_transfer_summary_is_the_strongest_push_minus_unsteered():
    rows = [
        (m, a, v)
        for m, base in (("rank1", 1.0), ("base", 2.0))
        for a, v in ((0.0, base), (10.0, base + 1), (30.0, base + 5), (-30.0, base))
    ]
    sweep_df = pl.DataFrame(
        {"kind": "component", "id": 1, "label": "L0.o",
         "model": [r[0] for r in rows], "alpha": [r[1] for r in rows],
         "m": [r[2] for r in rows]}
    )  # fmt: skip
    out = transfer_summary(sweep_df, "m").sort("sign")
    assert out["alpha"].to_list() == [30.0, -30.0]
    np.testing.assert_allclose(out["rank1"], [5.0, 0.0])
    np.testing.assert_allclose(out["base"], [5.0, 0.0])
