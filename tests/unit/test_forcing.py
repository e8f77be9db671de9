"""s1's budget forcing (eval.budget_forcing) on the HF backend, against a
hand-written token loop: one full forward per token, nothing batched,
padded or cached. (The vLLM backend is checked against HF in test_vllm.py.)

Two models: the tiny random Qwen2 of conftest.py, which never ends its
thinking (so the cap and the forced `Answer:` are what is exercised), and
the shipped toy base, trained on the s1 format, which ends its thinking at
once: suppressing that end and replacing it by `Wait` change its output.
Both in float64, so batching and padding cannot flip a near-tied argmax.
"""

import pytest
import torch
from conftest import make_tiny_qwen

from lorascope.core.chat import ANSWER_MARKER, split_completion
from lorascope.core.decoding import (
    build_prompts,
    finish,
    generate_hf,
    stop_token_ids,
)
from lorascope.core.forcing import BudgetForcing, describe, forcing_from_config
from lorascope.core.models import load_causal_lm, load_tokenizer
from lorascope.toy.world import SHIPPED_DIR

PROBLEMS = ["What is 12+34?", "What is 1234+5678?", "1+1"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(str(SHIPPED_DIR))


@pytest.fixture(scope="module")
def toy(tok):
    model = load_causal_lm(str(SHIPPED_DIR), dtype="float32")
    return model.to(torch.float64).eval()


@pytest.fixture(scope="module")
def tiny(tok):
    return make_tiny_qwen(len(tok), tie_word_embeddings=False).to(torch.float64)


@torch.no_grad()
def by_hand(model, tok, prompt: str, budget: int, f: BudgetForcing):
    """s1's protocol one token at a time; returns (completion ids, events)."""

    def enc(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    stops = set(stop_token_ids(tok, model.generation_config))
    think_end = stops | {tok.convert_tokens_to_ids("<|im_start|>")}
    marker, answer = enc("<|im_start|>answer\n"), enc("Answer:")
    cap = budget - f.answer_tokens - len(enc("\n") + marker + answer)
    if f.max_thinking_tokens is not None:
        cap = min(cap, f.max_thinking_tokens)
    ids, out = enc(prompt), []
    events = {"suppressed": 0, "waits": 0, "cut": 0, "ended": 0}
    thinking, round_start = True, 0

    def close(cut: bool):
        if not tok.decode(out[-1:]).endswith("\n"):
            out.extend(enc("\n"))
        out.extend(marker + (answer if cut else []))

    while len(out) < budget:
        if thinking and len(out) >= cap:
            close(cut=True)
            events["cut"] += 1
            thinking = False
            continue
        logits = model(torch.tensor([ids + out])).logits[0, -1]
        ends = think_end if thinking else stops
        held = thinking and (
            len(out) < f.min_thinking_tokens
            or (f.max_waits > 0 and len(out) == round_start)
        )
        if held:
            best = int(logits.argmax())
            logits[list(ends)] = -float("inf")
            events["suppressed"] += best in ends
        token = int(logits.argmax())
        if token not in ends:
            out.append(token)
            continue
        if not thinking:
            out.append(token)  # the answer's stop token
            break
        if events["waits"] < f.max_waits and len(out) + len(enc(f.wait)) <= cap:
            out.extend(enc(f.wait))
            events["waits"] += 1
            round_start = len(out)
            continue
        close(cut=False)
        events["ended"] += 1
        thinking = False
    return out, events


CASES = {
    # model, forcing, max_new_tokens; the event it must exercise
    "suppress": ("toy", BudgetForcing(min_thinking_tokens=10, answer_tokens=16), 44),
    "wait": ("toy", BudgetForcing(max_waits=2, answer_tokens=16), 44),
    "wait+cap": (
        "toy",
        BudgetForcing(min_thinking_tokens=5, max_waits=1, max_thinking_tokens=8,
                      answer_tokens=16),
        44,
    ),
    "cap": ("tiny", BudgetForcing(max_thinking_tokens=10, answer_tokens=6), 30),
    "auto cap, answer cut": ("tiny", BudgetForcing(answer_tokens=3), 20),
}  # fmt: skip
EVENT = {
    "suppress": "suppressed",
    "wait": "waits",
    "wait+cap": "cut",
    "cap": "cut",
    "auto cap, answer cut": "cut",
}


@pytest.mark.parametrize("case", list(CASES))
def test_forced_generation_equals_a_token_loop(case, tok, toy, tiny):
    which, forcing, max_new = CASES[case]
    model = {"toy": toy, "tiny": tiny}[which]
    prompts = build_prompts(tok, PROBLEMS)
    gen = dict(max_new_tokens=max_new, batch_size=2, progress=False)
    forced = generate_hf(model, tok, prompts, forcing=forcing, **gen)
    plain = generate_hf(model, tok, prompts, **gen)
    assert forced != plain, "forcing changed nothing: the case tests nothing"
    stops = set(stop_token_ids(tok, model.generation_config))
    fired = 0
    for prompt, got in zip(prompts, forced, strict=True):
        want, events = by_hand(model, tok, prompt, max_new, forcing)
        assert got == finish(tok, want, stops, max_new), (case, prompt, events)
        # Every forced completion has an answer section to grade, and the
        # thinking holds each `Wait` that replaced an end.
        thinking, answer = split_completion(got.text)
        assert answer is not None and ANSWER_MARKER in got.text
        assert thinking.count(forcing.wait) >= events["waits"]
        fired += events[EVENT[case]]
    assert fired, f"{case}: no prompt exercised {EVENT[case]}"


def test_a_budget_too_small_to_think_fails_naming_the_prompt(tok, tiny):
    prompts = build_prompts(tok, PROBLEMS[:2])
    with pytest.raises(ValueError, match="problem 'a': a budget of 24 tokens"):
        generate_hf(
            tiny, tok, prompts, max_new_tokens=24, names=["problem 'a'", "problem 'b'"],
            forcing=BudgetForcing(min_thinking_tokens=30, answer_tokens=4),
        )  # fmt: skip


def test_forcing_off_is_the_paper_protocol():
    assert forcing_from_config({"enabled": False, "max_waits": 2}) is None
    assert describe({"enabled": False}).startswith("off (the paper's protocol")
    on = {"enabled": True, "min_thinking_tokens": 0, "max_waits": 2, "wait": "Wait",
          "max_thinking_tokens": None, "answer_tokens": 100}  # fmt: skip
    assert forcing_from_config(on) == BudgetForcing(max_waits=2)
    assert "'Wait' up to 2 times" in describe(on)


def test_budget_forcing_defaults_off_in_the_schema():
    from lorascope.core.config import ConfigError, validate

    assert validate({})["eval"]["budget_forcing"]["enabled"] is False
    with pytest.raises(ConfigError, match="budget_forcing.max_waits: -1"):
        validate({"eval": {"budget_forcing": {"enabled": True, "max_waits": -1}}})


@pytest.mark.parametrize(
    "setting,line",
    [
        ({}, "without budget forcing (the paper's protocol"),
        (
            {"enabled": True, "max_waits": 2, "max_thinking_tokens": 500},
            'replaced by "Wait" up to 2 times, cut at 500 tokens or where',
        ),
    ],
)
def test_tables_record_the_generation_protocol(setting, line):
    """Tables 1 and 2 say how their completions were generated: a column and
    a line in the markdown file, and the report's captions (jinja over the
    validated config, as Snakemake renders them)."""
    import types

    import jinja2
    import numpy as np

    from lorascope.core.checks import REPO
    from lorascope.core.config import validate
    from lorascope.evaluation.tables import table1, to_markdown_report, with_prompting

    config = validate({"eval": {"budget_forcing": dict(setting)}})
    said = describe(config["eval"]["budget_forcing"])
    correct = {
        "b": {v: np.array([1, 0, 1, 1], bool) for v in ("base", "rank1", "full")}
    }
    table = with_prompting(table1(correct, n_boot=20), "all", said)
    assert table["budget_forcing"].to_list() == [said]
    text = to_markdown_report(table, "table1", 0.95, 20, "all: x", said)
    assert f"Generation (eval.budget_forcing): {said}." in text
    assert ("'Wait' up to 2" in said) == bool(setting)
    for name in ("table1", "table2"):
        source = (REPO / "workflow" / "report" / f"{name}.rst").read_text()
        rendered = (
            jinja2.Environment()
            .from_string(source)
            .render(snakemake=types.SimpleNamespace(config=config))
        )
        assert line in " ".join(rendered.split()), name
