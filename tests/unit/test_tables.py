"""Tables 1 and 2: the paper's formulas, undefined recoveries, bootstrap."""

import numpy as np
import polars as pl
import pytest

from lorascope.evaluation.tables import (
    correct_matrix,
    table1,
    table2,
    to_display,
    to_markdown_report,
)


def _hits(k, n=30):
    return np.arange(n) < k


def test_table1_reproduces_the_paper_aime_recovery():
    # AIME'24 in the paper: 7/30, 15/30, 18/30 -> 72.73%
    correct = {"aime24": {"base": _hits(7), "rank1": _hits(15), "full": _hits(18)}}
    t = table1(correct, n_boot=200, seed=1)
    row = t.row(0, named=True)
    assert row["base"] == pytest.approx(0.2333, abs=1e-4)
    assert row["recovery"] == pytest.approx(8 / 11)
    assert row["base_lo"] <= row["base"] <= row["base_hi"]
    assert row["recovery_lo"] <= row["recovery"] <= row["recovery_hi"]
    assert "72.73%" in to_display(t, ["recovery"])["recovery"][0]


@pytest.mark.parametrize("full_hits", [7, 5])  # zero and negative gain
def test_recovery_with_no_full_gain_is_undefined(full_hits):
    correct = {"b": {"base": _hits(7), "rank1": _hits(9), "full": _hits(full_hits)}}
    row = table1(correct, n_boot=100).row(0, named=True)
    assert row["recovery"] is None
    assert row["recovery_lo"] is None and row["recovery_hi"] is None
    assert to_display(table1(correct, n_boot=10), ["recovery"])["recovery"][0] == (
        "undefined"
    )


def test_paired_bootstrap_identical_variants_have_recovery_exactly_one():
    rng = np.random.default_rng(0)
    base = rng.random(50) < 0.3
    full = base | (rng.random(50) < 0.5)
    row = table1(
        {"b": {"base": base, "rank1": full.copy(), "full": full}}, n_boot=300
    ).row(0, named=True)
    assert row["recovery"] == 1.0
    assert row["recovery_lo"] == row["recovery_hi"] == 1.0
    assert 0 < row["recovery_defined"] <= 1


def test_bootstrap_accuracy_interval_matches_naive_loop():
    rng = np.random.default_rng(3)
    c = {
        v: rng.random(40) < p for v, p in [("base", 0.2), ("rank1", 0.5), ("full", 0.6)]
    }
    t = table1({"b": c}, n_boot=500, seed=7).row(0, named=True)
    # naive reference with the same generator stream
    g = np.random.default_rng(7)
    idx = g.integers(0, 40, size=(500, 40))
    accs = [c["rank1"][i].mean() for i in idx]
    lo, hi = np.percentile(accs, [2.5, 97.5])
    assert t["rank1_lo"] == pytest.approx(lo) and t["rank1_hi"] == pytest.approx(hi)


def test_table2_relative_to_the_lora_gain():
    correct = {
        "math": {
            "base": _hits(10, 40),
            "rank1": _hits(30, 40),
            "rank1-attn-ablated": _hits(25, 40),
            "rank1-mlp-ablated": _hits(6, 40),
        }
    }
    row = table2(correct, n_boot=100).row(0, named=True)
    assert row["attn_ablated_recovery"] == pytest.approx(15 / 20)
    assert row["mlp_ablated_recovery"] == pytest.approx(-4 / 20)  # below base
    # The interval settings reach the bootstrap: one seed, one table; a
    # narrower level, a narrower interval.
    lo, hi = "attn_ablated_recovery_lo", "attn_ablated_recovery_hi"
    again = table2(correct, n_boot=100).row(0, named=True)
    assert again == row
    other = table2(correct, n_boot=100, seed=1).row(0, named=True)
    assert (other[lo], other[hi]) != (row[lo], row[hi])
    half = table2(correct, n_boot=100, ci=0.5).row(0, named=True)
    assert row[lo] < half[lo] <= half[hi] < row[hi]


def test_correct_matrix_aligns_by_id_and_rejects_mismatch():
    a = pl.DataFrame({"id": ["2", "1"], "correct": [True, False]})
    b = pl.DataFrame({"id": ["1", "2"], "correct": [True, True]})
    ids, m = correct_matrix({"base": a, "rank1": b}, "bench")
    assert ids == ["1", "2"]
    assert m.tolist() == [[False, True], [True, True]]
    with pytest.raises(ValueError, match="bench: variant 'rank1' graded different"):
        correct_matrix({"base": a, "rank1": b.head(1)}, "bench")
    # Same count, other problems: still a mismatch, named against the first.
    c = pl.DataFrame({"id": ["1", "3"], "correct": [True, True]})
    with pytest.raises(ValueError, match=r"than 'base' \(2 vs 2 ids\)$"):
        correct_matrix({"base": a, "rank1": c}, "bench")


def test_with_prompting_records_the_prefill():
    from lorascope.evaluation.tables import with_prompting

    out = with_prompting(pl.DataFrame({"benchmark": ["a", "b"]}), "<think>")
    assert out["think_prefill"].to_list() == ["<think>", "<think>"]


def test_markdown_report_shows_intervals_and_undefined():
    from lorascope.evaluation.tables import to_markdown_report

    correct = {"b": {"base": _hits(7), "rank1": _hits(9), "full": _hits(7)}}
    text = to_markdown_report(table1(correct, n_boot=50), "table1", 0.95, 50)
    assert text.startswith("# Table 1")
    assert "| b | 30 | 0.2333 [" in text
    assert "| undefined |" in text and "95% paired bootstrap" in text
    assert "rank-1 LoRA" in text.splitlines()[0]
    # A sweep member's table names its rank.
    rank4 = to_markdown_report(table1(correct, n_boot=50), "table1", 0.95, 50, rank=4)
    assert "rank-4 LoRA" in rank4.splitlines()[0] and "rank-1" not in rank4


def test_trainable_fraction_from_headers_and_config(
    tiny_adapter_dir, tiny_model_dir, tmp_path, toy_tokenizer
):
    """Table 1's parameter fraction: adapter and base counted without loading
    weights (safetensors headers; a config on the meta device)."""
    from conftest import add_random_lora, make_tiny_qwen

    from lorascope.evaluation.tables import (
        base_param_count,
        safetensors_numel,
        with_param_fraction,
    )

    lora = add_random_lora(make_tiny_qwen(len(toy_tokenizer)))
    want_adapter = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    got = safetensors_numel(tiny_adapter_dir / "adapter_model.safetensors")
    assert got == want_adapter
    model = make_tiny_qwen(len(toy_tokenizer))
    want_base = sum(p.numel() for p in model.parameters())  # tied embedding once
    assert base_param_count(str(tiny_model_dir)) == (want_base, "safetensors headers")
    config_only = tmp_path / "config_only"
    model.config.save_pretrained(config_only)
    assert base_param_count(str(config_only)) == (want_base, "config")
    correct = {
        "b": {v: np.array([1, 0, 1, 1], bool) for v in ("base", "rank1", "full")}
    }
    table = with_param_fraction(table1(correct, n_boot=20), got, want_base)
    assert table["trainable_fraction"][0] == pytest.approx(got / want_base)
    text = to_markdown_report(table, "table1", 0.95, 20)
    assert f"{got:,} of the base model's {want_base:,}" in text
    assert "adapter_params" not in text.split("Brackets")[0]  # not a table column
    with pytest.raises(ValueError, match="base model has 0 parameters"):
        with_param_fraction(table, got, 0)


# Tests added from mutation testing (`make mutation SESSIONS=tables`).


def test_with_prompting_records_how_the_variants_were_generated():
    from lorascope.evaluation.tables import with_prompting

    table = pl.DataFrame({"benchmark": ["a", "b"]})
    out = with_prompting(table, "all", "budget forcing: at most 100 thinking tokens")
    assert out.columns == ["benchmark", "think_prefill", "budget_forcing"]
    assert (
        out["budget_forcing"].to_list()
        == ["budget forcing: at most 100 thinking tokens"] * 2
    )
    assert "budget_forcing" not in with_prompting(table, "all").columns


def test_markdown_report_says_how_variants_were_prompted_and_generated():
    from lorascope.evaluation.tables import to_markdown_report, with_prompting

    correct = {"b": {"base": _hits(7), "rank1": _hits(9), "full": _hits(8)}}
    gen = "at most 100 thinking tokens"
    table = with_prompting(table1(correct, n_boot=20), "all", gen)
    text = to_markdown_report(table, "table1", 0.9, 20, "think marker", gen)
    assert "Prompts (eval.think_prefill): think marker.\n" in text
    assert "Generation (eval.budget_forcing): at most 100 thinking tokens.\n" in text
    header = next(line for line in text.splitlines() if line.startswith("| benchmark"))
    assert "think_prefill" not in header and "budget_forcing" not in header
    bare = to_markdown_report(table1(correct, n_boot=20), "table1", 0.9, 20)
    assert "Prompts" not in bare and "Generation" not in bare


def test_param_fraction_needs_a_positive_base_count():
    from lorascope.evaluation.tables import with_param_fraction

    table = pl.DataFrame({"benchmark": ["b"]})
    assert with_param_fraction(table, 1, 1)["trainable_fraction"][0] == 1.0
    with pytest.raises(ValueError, match="^base model has 0 parameters$"):
        with_param_fraction(table, 1, 0)


def test_markdown_report_cells_and_parameter_line_exactly():
    from lorascope.evaluation.tables import to_markdown_report, with_param_fraction

    table = pl.DataFrame(
        {
            "benchmark": ["b"], "n": [30],
            "rank1": [0.5], "rank1_lo": [0.25], "rank1_hi": [0.75],
            "full": [0.125], "full_lo": [None], "full_hi": [None],
            "rank1_recovery": [0.5], "rank1_recovery_lo": [0.25],
            "rank1_recovery_hi": [1.5],
        }
    )  # fmt: skip
    text = to_markdown_report(
        with_param_fraction(table, 1000, 4_000_000), "table1", 0.9, 20
    )
    lines = text.splitlines()
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["benchmark", "n", "rank1", "full", "rank1_recovery"]
    row = next(line for line in lines if line.startswith("| b |"))
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "b", "30", "0.5000 [0.250, 0.750]", "0.1250", "50.00% [25.00, 150.00]"
    ]  # fmt: skip
    assert text.endswith(
        "'undefined': the gain divided by is zero or negative.\n"
        "\nTrainable parameters of the adapter: 1,000 of the base model's "
        "4,000,000 (0.0250%; paper: less than 0.03%).\n"
    )


def test_ratio_is_nan_unless_the_denominator_is_positive_and_broadcasts():
    from lorascope.evaluation.tables import _ratio

    got = _ratio(np.array([1.0, 1.0, 1.0]), np.array([2.0, 0.0, -1.0]))
    assert got[0] == 0.5 and np.isnan(got[1:]).all()
    # A scalar against an array, either way round: the broadcast shape.
    assert _ratio(np.array([1.0, 3.0]), np.array(2.0)).tolist() == [0.5, 1.5]
    assert _ratio(np.array(1.0), np.array([2.0, 4.0])).tolist() == [0.5, 0.25]


def _naive_recovery(c, n_boot, seed, ci):
    """Table 1's recovery interval from the definition: the same resampled
    problems for every variant, one ratio per resample where it is defined."""
    n = len(c["base"])
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    ratios = []
    for i in idx:
        b, r, f = (c[v][i].mean() for v in ("base", "rank1", "full"))
        if f - b > 0:
            ratios.append((r - b) / (f - b))
    q = 50 * (1 - ci)
    return (*np.percentile(ratios, [q, 100 - q]), len(ratios) / n_boot)


def test_bootstrap_interval_and_defined_share_match_the_definition():
    rng = np.random.default_rng(5)
    c = {
        v: rng.random(25) < p for v, p in [("base", 0.3), ("rank1", 0.4), ("full", 0.5)]
    }
    for ci, seed in [(0.5, 3), (0.9, 0)]:
        row = table1({"b": c}, n_boot=400, ci=ci, seed=seed).row(0, named=True)
        lo, hi, share = _naive_recovery(c, 400, seed, ci)
        assert (row["recovery_lo"], row["recovery_hi"]) == pytest.approx((lo, hi))
        assert row["recovery_defined"] == pytest.approx(share)
        assert 0 < share < 1  # some resamples leave no gain to divide by
    # table1's seed and level are the bootstrap's: the defaults are 0 and 95%.
    default = table1({"b": c}, n_boot=400).row(0, named=True)
    lo, hi, _ = _naive_recovery(c, 400, 0, 0.95)
    assert (default["recovery_lo"], default["recovery_hi"]) == pytest.approx((lo, hi))


def test_bootstrap_table_defaults_are_a_95_percent_interval_with_seed_0():
    from lorascope.evaluation.tables import bootstrap_table

    rng = np.random.default_rng(1)
    c = {"b": {v: rng.random(20) < 0.5 for v in ("x", "y")}}
    ratios = [("r", "y", "x", "x")]
    assert bootstrap_table(c, ratios, n_boot=50).equals(
        bootstrap_table(c, ratios, n_boot=50, ci=0.95, seed=0)
    )


def test_undefined_point_recovery_has_no_interval_even_if_resamples_define_it():
    # Base and full both solve 7 of 30, different problems: no gain overall,
    # but resamples that favour full's problems have one.
    base, full = _hits(7), np.roll(_hits(7), 7)
    correct = {"b": {"base": base, "rank1": _hits(9), "full": full}}
    row = table1(correct, n_boot=200).row(0, named=True)
    assert row["recovery"] is None and 0 < row["recovery_defined"] < 1
    assert row["recovery_lo"] is None and row["recovery_hi"] is None


def test_one_problem_is_a_table_and_no_problem_an_error_naming_the_benchmark():
    one = {"b": {v: np.array([v != "base"]) for v in ("base", "rank1", "full")}}
    row = table1(one, n_boot=10).row(0, named=True)
    assert (row["n"], row["base"], row["rank1"], row["recovery"]) == (1, 0.0, 1.0, 1.0)
    empty = {"gsm": {v: np.array([], bool) for v in ("base", "rank1", "full")}}
    with pytest.raises(ValueError, match="^gsm: no graded problems$"):
        table1(empty, n_boot=10)


def test_a_column_undefined_in_the_first_hundred_benchmarks_keeps_its_type():
    flat = {"base": _hits(3, 4), "rank1": _hits(3, 4), "full": _hits(3, 4)}
    gain = {"base": _hits(1, 4), "rank1": _hits(2, 4), "full": _hits(3, 4)}
    correct = {f"b{i:03d}": flat for i in range(100)} | {"b100": gain}
    t = table1(correct, n_boot=2)
    assert t.schema["recovery"] == pl.Float64
    assert t["recovery"].null_count() == 100 and t["recovery"][100] == 0.5


def test_display_brackets_only_complete_intervals():
    table = pl.DataFrame(
        {
            "benchmark": ["a", "b"], "n": [4, 4],
            "rank1": [0.5, 0.25], "rank1_lo": [0.25, None],
            "rank1_hi": [None, 0.5], "recovery": [0.5, 1.0],
            "recovery_lo": [None, 0.75], "recovery_hi": [0.25, None],
        }
    )  # fmt: skip
    shown = to_display(table, ["rank1", "recovery"])
    assert shown.rows() == [("a", 4, "0.5000", "50.00%"), ("b", 4, "0.2500", "100.00%")]


def test_parameter_line_reads_the_first_row_and_is_absent_without_counts():
    from lorascope.evaluation.tables import with_param_fraction

    correct = {b: {v: _hits(2, 4) for v in ("base", "rank1", "full")} for b in "xy"}
    plain = table1(correct, n_boot=5)
    assert plain.height == 2
    assert to_markdown_report(plain, "table1", 0.95, 5).endswith(
        "'undefined': the gain divided by is zero or negative.\n"
    )
    table = with_param_fraction(plain, 3_000_000_000, 4_000_000_000)
    assert table.schema["adapter_params"] == table.schema["base_params"] == pl.Int64
    assert table.schema["trainable_fraction"] == pl.Float64
    small = with_param_fraction(plain, 1, 8)  # small counts are Int64 too
    assert small.schema["adapter_params"] == small.schema["base_params"] == pl.Int64
    assert "adapter: 1 of the base model's 8 (12.5000%" in to_markdown_report(
        small, "table1", 0.95, 5
    )


def test_hub_base_model_is_counted_at_its_revision(monkeypatch, tmp_path):
    from conftest import make_tiny_qwen
    from transformers import AutoConfig

    from lorascope.evaluation.tables import base_param_count

    model = make_tiny_qwen(11, layers=1)
    config = model.config
    asked = []

    def from_pretrained(path, **kw):
        asked.append((path, kw))
        return config

    monkeypatch.setattr(AutoConfig, "from_pretrained", from_pretrained)
    want = sum(p.numel() for p in model.parameters())
    assert base_param_count("org/name", "abc123") == (want, "config")
    assert asked == [("org/name", {"revision": "abc123"})]
