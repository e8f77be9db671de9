"""The embedded toy world: task generator, shipped base model, rebuild recipe."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import polars as pl
import pytest
import torch

from lorascope.core.chat import ANSWER_MARKER, THINK_MARKER, build_example, build_prompt
from lorascope.toy import tasks, world
from lorascope.toy.pretrain import (
    document_stream,
    packed_rows,
    stages,
)
from lorascope.toy.textbook import CORRECTIONS, textbook_text

TOY_CFG = {
    "rebuild": False,
    "seed": 0,
    "n_sft": 300,
    "sft_digits": [2, 3, 4],
    "slip_rate": 0.1,
    "carry_slip_rate": 0.6,
    "benchmarks": {
        "toy_add2": {"digits": 2, "n": 50},
        "toy_add4": {"digits": 4, "n": 50},
    },
}


def _final_line_sum(trace: str) -> int:
    return int(re.fullmatch(r"result (\d+)", trace.splitlines()[-1]).group(1))


def test_tokenizer_round_trips_task_text(toy_tokenizer):
    rng = random.Random(0)
    for digits in (1, 3, 5):
        a, b = tasks.sample_pair(rng, digits)
        trace, _ = tasks.reasoning_trace(a, b, rng, slip_rate=1.0)
        book = textbook_text(a, b, rng, slip_rate=0.5, carry_slip_rate=0.5)
        for text in (trace, book, tasks.attempt_text(a, b), "Answer: 12 + 3\n"):
            ids = toy_tokenizer.encode(text, add_special_tokens=False)
            assert toy_tokenizer.unk_token_id not in ids, text
            assert toy_tokenizer.decode(ids) == text


def test_tokenizer_has_word_tokens_and_single_digits(toy_tokenizer):
    from lorascope.toy.tokenizer import build_tokenizer

    line = "Wait, 7+5+1=13 carry 1, digits 38, rest 12+40\nresult 1338"
    pieces = toy_tokenizer.tokenize(line)
    for word in ("Wait", " carry", " digits", " rest", "result"):
        assert word in pieces, (word, pieces)
    # Qwen2-style: every digit is its own token, so numbers never merge
    assert [p for p in pieces if any(c.isdigit() for c in p)] == [
        c for c in line if c.isdigit()
    ]
    assert 100 < len(toy_tokenizer) <= 400
    # a constant of the code: the same merges on every build
    assert build_tokenizer().get_vocab() == toy_tokenizer.get_vocab()


def _slip_pairs(lines: list[str]) -> list[tuple[str, str]]:
    """(slipped line, its "Wait," correction) pairs of a trace."""
    return [
        (ln, nxt)
        for ln, nxt in zip(lines, lines[1:], strict=False)
        if nxt.startswith("Wait, ")
    ]


def _column(line: str) -> tuple[int, int, int, int]:
    return tuple(map(int, re.match(r"(\d)\+(\d)\+(\d)=(\d+)", line).groups()))


def test_trace_lines_add_up_and_reach_the_sum():
    rng = random.Random(1)
    for _ in range(300):
        a, b = tasks.sample_pair(rng, rng.randint(1, 6))
        trace, slipped = tasks.reasoning_trace(
            a, b, rng, slip_rate=0.3, carry_slip_rate=0.5
        )
        assert _final_line_sum(trace) == a + b
        lines = trace.splitlines()
        assert lines[0] == f"{a}+{b}"
        full = [ln.removeprefix("Wait, ") for ln in lines if "carry" in ln]
        assert len(full) == len(str(max(a, b)))  # one complete line per column
        carry = 0
        for ln in full:
            x, y, c, t = _column(ln)
            assert x + y + c == t and c == carry
            carry = int(re.search(r"carry (\d)", ln).group(1))
        # the last column's "digits" plus its carry spell the answer
        digits = re.search(r"digits (\d+)", full[-1]).group(1)
        assert int(f"{carry}{digits}") == a + b
        wrong = [ln for ln in lines[1:-1] if "carry" not in ln]
        assert slipped == bool(wrong) == any(ln.startswith("Wait, ") for ln in lines)
        assert len(wrong) <= 1
        for ln, fix in _slip_pairs(lines):  # a slip is redone on the next line
            assert ln in wrong
            x, y, c, t = _column(ln)
            fx, fy, fc, ft = _column(fix.removeprefix("Wait, "))
            assert (x, y) == (fx, fy) and (c, t) != (fc, ft)
            assert x + y + c != t or (c == 0 and fc == 1)  # mis-added or carry lost


def test_carry_slip_hits_the_first_incoming_carry():
    rng = random.Random(2)
    for _ in range(200):
        a, b = tasks.sample_pair(rng, 4)
        trace, slipped = tasks.reasoning_trace(
            a, b, rng, slip_rate=0.0, carry_slip_rate=1.0
        )
        steps = tasks.add_steps(a, b)
        first = next((i for i, s in enumerate(steps) if s.carry_in), None)
        assert slipped == (first is not None)
        if first is None:
            continue
        lines = trace.splitlines()[1:]
        s = steps[first]
        assert lines[first] == f"{s.x}+{s.y}+0={s.x + s.y}"
        assert lines[first + 1].startswith(f"Wait, {s.x}+{s.y}+1={s.total} carry")


@pytest.mark.parametrize(("rate", "carry_rate"), [(0.0, 0.0), (0.3, 0.0), (0.1, 0.6)])
def test_sft_slip_rates_are_about_as_configured(rate, carry_rate):
    df = tasks.sft_frame(
        600, [2, 3, 4], seed=0, slip_rate=rate, carry_slip_rate=carry_rate
    )
    pairs = [tuple(map(int, re.findall(r"\d+", q))) for q in df["question"]]
    has_carry = np.mean([any(s.carry_in for s in tasks.add_steps(*p)) for p in pairs])
    expected = carry_rate * has_carry + rate * (1 - carry_rate * has_carry)
    frac = df["deepseek_thinking_trajectory"].str.contains("\nWait, ").mean()
    assert abs(frac - expected) < 0.06


def test_textbook_slips_correct_themselves_in_varied_words():
    rng = random.Random(3)
    books = [
        textbook_text(*tasks.sample_pair(rng, 3), rng, 0.5, 0.5) for _ in range(400)
    ]
    used = {c for c in CORRECTIONS if any(c in t for t in books)}
    assert used == set(CORRECTIONS)
    assert 0.4 < np.mean([any(c in t for c in CORRECTIONS) for t in books]) < 0.9
    assert not any(
        any(c in t for c in CORRECTIONS)
        for t in (textbook_text(*tasks.sample_pair(rng, 3), rng) for _ in range(100))
    )


def test_pretraining_text_covers_every_sft_token(toy_tokenizer):
    """Tied embeddings: a token that pretraining never shows stays random, and
    a LoRA (which trains no embedding) could hardly learn to write it."""
    sft = tasks.sft_frame(300, [2, 3, 4], seed=0, slip_rate=0.1, carry_slip_rate=0.6)
    needed = set()
    for row in sft.iter_rows(named=True):
        ids, _ = build_example(
            toy_tokenizer,
            row["question"],
            row["deepseek_thinking_trajectory"],
            row["deepseek_attempt"],
        )
        needed.update(ids)
    stream = document_stream(toy_tokenizer, world.pretrain_config({}))
    seen = set()
    for _ in range(3000):
        seen.update(next(stream)[0])
    names = toy_tokenizer.convert_ids_to_tokens(sorted(needed - seen))
    assert not names, f"SFT tokens never seen in pretraining: {names}"


def test_sft_frame_has_s1k_columns_and_correct_attempts():
    df = tasks.sft_frame(100, [2, 3], seed=0, slip_rate=0.3)
    for col in (
        "question",
        "solution",
        "deepseek_thinking_trajectory",
        "deepseek_attempt",
    ):
        assert df.schema[col] == pl.String
    for row in df.iter_rows(named=True):
        a, b = map(int, re.findall(r"\d+", row["question"]))
        assert row["solution"] == str(a + b)
        assert row["deepseek_attempt"].endswith(f"\\boxed{{{a + b}}}")
        assert _final_line_sum(row["deepseek_thinking_trajectory"]) == a + b


def test_benchmarks_schema_distinct_and_held_out_of_sft():
    benches = world.benchmark_frames(TOY_CFG)
    assert set(benches) == {"toy_add2", "toy_add4"}
    for name, df in benches.items():
        assert df.columns == ["id", "problem", "answer", "choices", "grader"]
        assert df["id"].n_unique() == df.height == 50
        assert df["problem"].n_unique() == 50
        assert df["choices"].null_count() == df.height
        assert set(df["grader"]) == {"math"}
        assert df["id"][0].startswith(name)
    sft = world.sft_set(TOY_CFG)
    assert sft.height == 300
    sft_pairs = tasks.benchmark_pairs(sft.rename({"question": "problem"}))
    for df in benches.values():
        assert not sft_pairs & tasks.benchmark_pairs(df)
    assert world.benchmark_frames(TOY_CFG)["toy_add4"].equals(benches["toy_add4"])


def test_adding_a_benchmark_changes_neither_the_sft_set_nor_other_benchmarks():
    """The held-out pool is fixed: a new benchmark (even one with the digit
    count of the SFT problems) retrains nothing and redraws no other one."""
    more = {**TOY_CFG["benchmarks"], "toy_add3": {"digits": 3, "n": 80}}
    bigger = {**TOY_CFG, "benchmarks": more}
    assert world.sft_set(bigger).equals(world.sft_set(TOY_CFG))
    new, old = world.benchmark_frames(bigger), world.benchmark_frames(TOY_CFG)
    assert all(new[name].equals(old[name]) for name in old)
    sft_pairs = tasks.benchmark_pairs(
        world.sft_set(bigger).rename({"question": "problem"})
    )
    assert not sft_pairs & tasks.benchmark_pairs(new["toy_add3"])
    pool = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    share = sum(tasks.held_out(a, b) for a, b in pool) / len(pool)
    assert abs(share - 1 / tasks.HELD_OUT_EVERY) < 0.02  # 8100 pairs: sd 0.0044


def test_unknown_benchmark_fails_naming_it_and_the_key():
    with pytest.raises(KeyError, match=r"toy_add9.*toy\.benchmarks.*toy_add2"):
        world.benchmark_frame_of(TOY_CFG, "toy_add9")


def test_benchmark_too_many_problems_fails_naming_it():
    with pytest.raises(ValueError, match="toy_tiny"):
        tasks.benchmark_frame("toy_tiny", digits=1, n=1000, seed=0)


def test_mixed_benchmark_cycles_digit_counts_from_the_held_out_pool():
    frame = tasks.benchmark_frame("toy_mix", digits=[1, 2, 3], n=12, seed=0)
    pairs = [tuple(map(int, re.findall(r"\d+", p))) for p in frame["problem"]]
    widths = [max(len(str(a)), len(str(b))) for a, b in pairs]
    assert widths == [1, 2, 3] * 4
    assert all(tasks.held_out(a, b) for a, b in pairs) and len(set(pairs)) == 12
    # one-digit pairs: 100, ~20 held out, at most half asked for
    with pytest.raises(ValueError, match=r"toy_mix: 11 problems.*1-digit"):
        tasks.benchmark_frame("toy_mix", digits=[1, 2], n=22, seed=0)
    # a one-element list is the same benchmark as the plain count
    assert tasks.benchmark_frame("b", [2], 5, 0).equals(
        tasks.benchmark_frame("b", 2, 5, 0)
    )


def test_shipped_model_loads_and_generates_in_s1_format(tmp_path):
    from transformers import AutoModelForCausalLM

    from lorascope.core.models import load_tokenizer

    out = tmp_path / "base_model"
    world.materialise_base_model(out, TOY_CFG)
    tok = load_tokenizer(str(out))
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    prompt = build_prompt(tok, tasks.question_text(21, 34))
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=40, do_sample=False)
    text = tok.decode(gen[0, ids["input_ids"].shape[1] :])
    # the base "instruct" model answers directly: empty think, answer section
    assert text.startswith(ANSWER_MARKER + "Answer: 21+34=\\boxed{")


def test_missing_shipped_file_fails_naming_it(tmp_path):
    broken = tmp_path / "shipped"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        world.materialise_base_model(tmp_path / "out", TOY_CFG, shipped_dir=broken)
    assert not (tmp_path / "out").exists()


def test_packed_rows_keep_documents_whole():
    docs = iter([([1, 2, 3], [1, 2, 3]), ([4, 5], [-100, 5]), ([6] * 4, [6] * 4)] * 4)
    ids, labels = next(packed_rows(docs, batch_size=2, seq_len=6, pad_id=0))
    # a document that does not fit starts the next row; the rest is padding
    assert ids.tolist() == [[1, 2, 3, 4, 5, 0], [6, 6, 6, 6, 0, 0]]
    assert labels.tolist() == [[1, 2, 3, -100, 5, -100], [6, 6, 6, 6, -100, -100]]


# A pretraining recipe small enough to run in a test.
TINY_PRETRAIN = {
    "hidden_size": 16,
    "num_layers": 1,
    "num_heads": 2,
    "intermediate_size": 32,
    "steps": 3,
    "batch_size": 2,
    "seq_len": 512,
}


def test_rebuild_recipe_runs_on_tiny_sizes(tmp_path):
    cfg = {
        **TOY_CFG,
        "rebuild": True,
        "pretrain": {**TINY_PRETRAIN, "chat_phase": None},  # one stage
    }
    out = tmp_path / "rebuilt"
    world.materialise_base_model(out, cfg)
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert summary["config"]["steps"] == 3
    accuracy = summary["direct_accuracy"]
    assert {"1", "2", "3", "4"} <= accuracy.keys()
    assert all(0 <= accuracy[d] <= 1 for d in "1234")
    assert len((out / "pretrain_log.jsonl").read_text().splitlines()) == 3


def test_chat_phase_is_a_second_stage_on_the_same_weights(tmp_path):
    phase = {"steps": 2, "chat_digits": [1, 2]}
    base = world.pretrain_config({"pretrain": {"steps": 3, "chat_phase": phase}})
    first, second = stages(base)
    assert first.chat_phase is None and first.steps == 3 and first.seed == 0
    assert second.steps == 2 and second.chat_digits == (1, 2) and second.seed == 1
    assert second.lr == first.lr and second.chat_frac == first.chat_frac
    cfg = {
        **TOY_CFG,
        "rebuild": True,
        "pretrain": {
            **TINY_PRETRAIN,
            "chat_phase": {"steps": 2, "lr": 1e-3},
        },
    }
    out = tmp_path / "rebuilt"
    world.materialise_base_model(out, cfg)
    log = [json.loads(r) for r in (out / "pretrain_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == [0, 0, 0, 1, 1]
    # each stage has its own optimiser and schedule, peaking at its own lr
    assert max(r["lr"] for r in log[:3]) == pytest.approx(3e-3)
    assert max(r["lr"] for r in log[3:]) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match=r"toy\.pretrain\.chat_phase\.step"):
        world.pretrain_config({"pretrain": {"chat_phase": {"step": 2}}})


def test_stop_after_ends_the_run_early_with_the_full_runs_schedule(toy_tokenizer):
    """The first steps of a recipe, for checking a rebuild against the
    recorded losses: the same steps and learning rates as the full run's."""
    from lorascope.toy.pretrain import pretrain

    phase = {"steps": 2, "lr": 1e-3}
    cfg = world.pretrain_config({"pretrain": {**TINY_PRETRAIN, "chat_phase": phase}})
    _, full = pretrain(toy_tokenizer, cfg)
    _, first = pretrain(toy_tokenizer, cfg, stop_after=4)
    assert [(r["stage"], r["step"]) for r in first] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert first == full[:4]


def test_pretrain_config_rejects_bad_values_naming_the_key():
    """Bounds come from the schema; the one cross-key rule from the class."""
    with pytest.raises(ValueError, match="toy.pretrain.hidden_size"):
        world.pretrain_config({"pretrain": {"hidden_size": 130, "num_heads": 4}})
    with pytest.raises(ValueError, match="toy.pretrain.chat_frac"):
        world.pretrain_config({"pretrain": {"chat_frac": 1.5}})


def test_base_chat_documents_are_s1_format(toy_tokenizer):
    ids, labels = build_example(toy_tokenizer, "What is 1 + 2?", "", "1+2=\\boxed{3}")
    text = toy_tokenizer.decode(ids)
    assert THINK_MARKER + ANSWER_MARKER + "Answer: 1+2=" in text


def test_rebuild_cli_reads_the_toy_section_as_the_rule_does(tmp_path):
    """`python -m lorascope.toy.world` gets the schema's defaults (the second
    pretraining stage is one), so it runs the recipe the rule runs."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("toy:\n  pretrain: {steps: 7}\n")
    toy = world.toy_section(cfg)
    pc = world.pretrain_config(toy)
    assert pc.steps == 7 and pc.chat_phase["steps"] == 100
    cfg.write_text("toy:\n  pretrain: {stepz: 7}\n")
    with pytest.raises(ValueError, match=r"toy\.pretrain\.stepz"):
        world.toy_section(cfg)


def shipped_summary() -> dict:
    return json.loads((world.SHIPPED_DIR / "pretrain_summary.json").read_text())


def embedded_recipe():
    embedded = world.toy_section(world.SHIPPED_DIR.parents[2] / "config/config.yaml")
    return world.pretrain_config(embedded)


def test_shipped_weights_come_from_the_embedded_recipe():
    """`toy.rebuild: true` runs the recipe recorded with the shipped weights:
    changing the embedded config's toy pretraining without shipping what it
    makes fails here."""
    assert shipped_summary()["config"] == world.recipe_record(embedded_recipe())


def test_rebuild_starts_as_the_shipped_run_did():
    """The recipe's first optimiser steps (data stream, initialisation,
    schedule, optimiser) give the losses recorded from the shipped run.
    Another CPU sums float32 in another order (~1e-7 relative per step);
    5e-4 relative is far above that and far below what another learning
    rate, seed or data mix changes by the fifth step (1-2%, measured)."""
    from lorascope.toy.pretrain import pretrain
    from lorascope.toy.tokenizer import build_tokenizer

    recorded = shipped_summary()["first_losses"][:5]
    _, log = pretrain(build_tokenizer(), embedded_recipe(), stop_after=len(recorded))
    assert [r["loss"] for r in log] == pytest.approx(recorded, rel=5e-4)


def test_shipped_summary_states_what_the_weights_answer():
    """The recorded direct-answer accuracy is the shipped weights' own.
    Greedy decoding is exact up to float32 summation order, which can flip a
    near-tie between two tokens on another CPU: one problem of slack."""
    from transformers import AutoModelForCausalLM

    from lorascope.core.models import load_tokenizer

    recorded = shipped_summary()
    model = AutoModelForCausalLM.from_pretrained(world.SHIPPED_DIR)
    tok = load_tokenizer(str(world.SHIPPED_DIR))
    measured = world.direct_accuracy(model, tok, digits=(1, 2))
    for d, acc in measured.items():
        count = min(40, tasks.held_out_capacity(int(d)))
        assert abs(acc - recorded["direct_accuracy"][d]) * count <= 1, (d, acc)
