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
    summary = transfer_summary(every, samples=20)
    assert summary["model"].to_list() == ["rank1", "base", "full"]
    assert summary["n_samples"].to_list() == [len(BENCH)] * 3


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


def test_transfer_summary_pairs_problems_and_names_repurposed_directions():
    """Backtracking moves in the full fine-tune only: repurposed; the
    intervals are paired over problems (a constant shift has width 0)."""

    def row(model, alpha, backtracks, correct):
        return {"kind": "component", "id": 1, "label": "L0.o", "model": model,
                "alpha": alpha, "sample_backtracks": backtracks,
                "sample_tokens": [100] * 4, "sample_correct": correct}  # fmt: skip

    base0, full0 = [0, 1, 0, 2], [3, 0, 1, 0]
    sweep_df = pl.DataFrame([
        row("base", 0.0, base0, [True, False, True, False]),
        row("base", 10.0, base0, [True, False, True, False]),
        row("base", -30.0, base0, [True, False, True, False]),
        row("full", 0.0, full0, [True] * 4),
        row("full", 10.0, [b + 1 for b in full0], [True] * 4),
        row("full", -30.0, [b + 2 for b in full0], [False] * 4),
    ])  # fmt: skip
    out = transfer_summary(sweep_df, samples=200, seed=0)
    full = out.filter(pl.col("model") == "full").sort("sign")
    assert full["alpha"].to_list() == [10.0, -30.0]  # the strongest of each sign
    np.testing.assert_allclose(full["backtrack_delta"], [10.0, 20.0])
    np.testing.assert_allclose(full["backtrack_lo"], full["backtrack_hi"])
    np.testing.assert_allclose(full["accuracy_delta"], [0.0, -1.0])
    base = out.filter(pl.col("model") == "base")
    np.testing.assert_allclose(base["backtrack_delta"], 0.0)
    assert set(out["transfer"]) == {"repurposed by fine-tuning"}
    with pytest.raises(ValueError, match="no unsteered run"):
        transfer_summary(sweep_df.filter(pl.col("alpha") != 0))


def test_figure_labels_other_models_lines():
    from lorascope.figures.steering import label_models

    df = pl.DataFrame({"label": ["L0.o"] * 3, "model": ["rank1", "base", "full"]})
    assert label_models(df)["label"].to_list() == ["L0.o", "L0.o [base]", "L0.o [full]"]
    assert label_models(df.drop("model"))["label"].to_list() == ["L0.o"] * 3
