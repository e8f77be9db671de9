"""s1's budget forcing (`eval.budget_forcing`), shared by both generation
backends (rule `eval_generate`: `core.decoding.generate_hf` and
`evaluation.vllm_engine.generate_vllm`).

The paper evaluates with one greedy generation per problem, and so do we by
default. s1 (Muennighoff et al. 2025, §3.1) controls the thinking's length
instead, and its published s1/s1.1 numbers use it (its lm-evaluation-harness
fork, `max_tokens_thinking=auto,thinking_n_ignore=N,thinking_n_ignore_str=Wait`).
Here, for a prompt that ends with the think marker:

- the thinking runs until the model ends it: the token that opens the
  answer marker (`<|im_start|>`) or an end-of-turn token;
- an end before `min_thinking_tokens` thinking tokens is suppressed: those
  tokens are masked out of the argmax (vLLM's `min_tokens`);
- an end is replaced by `wait` up to `max_waits` times, and the thinking
  goes on (s1's `thinking_n_ignore`; then every round makes at least one
  token, as s1's `min_tokens=1`);
- the thinking stops at `max_thinking_tokens` (null: s1's `auto`, the
  budget less `answer_tokens` and the marker), and `Answer:` is appended
  after the marker so the model answers at once (s1 appends `Final
  Answer:`; ours is the trained format's prefix, which the grader strips);
- then the answer marker (a newline first if the thinking does not end in
  one), and the model answers until a stop token or the end of the budget.

The budget is the same as without forcing (`decoding.token_budgets`): every
token after the prompt counts, the appended ones too, so a forced completion
fits the context as an unforced one does. Both backends drive the same loop
(`force`) through a `step` that generates a batch of requests greedily; the
rounds are batched across prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from lorascope.core.chat import ANSWER_MARKER, ANSWER_PREFIX

__all__ = [
    "BudgetForcing",
    "Request",
    "check_room",
    "describe",
    "force",
    "forcing_from_config",
]

# Recorded in Tables 1 and 2 when eval.budget_forcing is off.
OFF = "off (the paper's protocol: one greedy generation per problem)"


class BudgetForcing(NamedTuple):
    """eval.budget_forcing, enabled (see the module docstring)."""

    min_thinking_tokens: int = 0
    max_waits: int = 0
    wait: str = "Wait"
    max_thinking_tokens: int | None = None
    answer_tokens: int = 100


def forcing_from_config(cfg: Mapping | None) -> BudgetForcing | None:
    """The forcing eval.budget_forcing asks for, or None when it is off."""
    if not cfg or not cfg.get("enabled"):
        return None
    fields = {k: cfg[k] for k in BudgetForcing._fields if k in cfg}
    unknown = set(cfg) - set(BudgetForcing._fields) - {"enabled"}
    if unknown:
        raise ValueError(f"eval.budget_forcing: unknown keys {sorted(unknown)}")
    return BudgetForcing(**fields)


def describe(cfg: Mapping | None) -> str:
    """One line for the tables: how the completions were generated."""
    forcing = forcing_from_config(cfg)
    if forcing is None:
        return OFF
    cap = forcing.max_thinking_tokens
    return (
        "s1 budget forcing: thinking at least "
        f"{forcing.min_thinking_tokens} tokens, its end replaced by "
        f"{forcing.wait!r} up to {forcing.max_waits} times, cut "
        + (f"at {cap} tokens or " if cap is not None else "")
        + f"where the budget keeps {forcing.answer_tokens} tokens for the answer"
    )


class Request(NamedTuple):
    """One greedy generation a backend's step runs."""

    ids: list[int]  # prompt + the completion so far
    max_tokens: int  # new tokens at most (0: nothing to generate)
    min_tokens: int  # `stops` are masked until this many new tokens
    stops: frozenset[int]  # a generated one ends the request (and is returned)
    tag: Any = None  # the backend's own (vLLM: the variant's LoRARequest)


# new ids per request: up to and including the first stop token, or
# `max_tokens` of them; requests with max_tokens 0 get [].
Step = Callable[[Sequence[Request]], list[list[int]]]


class _Ids(NamedTuple):
    think_end: frozenset[int]
    stops: frozenset[int]
    wait: list[int]
    newline: list[int]
    marker: list[int]  # the answer marker without its leading newline
    prefix: list[int]  # `Answer:`, after the marker when the thinking is cut


def _ids(tokenizer, stops: Sequence[int], wait: str) -> _Ids:
    def enc(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    opener = enc("<|im_start|>")
    if len(opener) != 1:
        raise ValueError(
            "budget forcing needs <|im_start|> to be one token (the s1 format's "
            f"end of thinking), got {opener}"
        )
    return _Ids(
        think_end=frozenset(stops) | {opener[0]},
        stops=frozenset(stops),
        wait=enc(wait),
        newline=enc("\n"),
        marker=enc(ANSWER_MARKER.removeprefix("\n")),
        prefix=enc(ANSWER_PREFIX.rstrip()),
    )


def _thinking_cap(forcing: BudgetForcing, budget: int, ids: _Ids) -> int:
    """Thinking tokens at most: what leaves the answer its tokens and marker."""
    room = budget - forcing.answer_tokens - len(ids.newline + ids.marker + ids.prefix)
    if forcing.max_thinking_tokens is not None:
        room = min(room, forcing.max_thinking_tokens)
    return room


def check_room(
    tokenizer,
    budgets: Sequence[int],
    forcing: Sequence[BudgetForcing | None],
    stops: Sequence[int],
    names: Sequence[str] | None = None,
) -> None:
    """A forced prompt whose budget leaves it no thinking is an error naming
    it, not a completion that silently skips the protocol (`force` checks;
    the vLLM backend calls it before its engine starts)."""
    wait = next((f.wait for f in forcing if f is not None), None)
    if wait is None:
        return
    ids = _ids(tokenizer, stops, wait)
    for i, (f, budget) in enumerate(zip(forcing, budgets, strict=True)):
        if f is None:
            continue
        cap = _thinking_cap(f, budget, ids)
        if cap < max(f.min_thinking_tokens, 1):
            name = names[i] if names is not None else f"prompt {i}"
            raise ValueError(
                f"{name}: a budget of {budget} tokens leaves {max(cap, 0)} for "
                f"thinking after eval.budget_forcing.answer_tokens "
                f"({f.answer_tokens}) and the answer marker, fewer than "
                f"{max(f.min_thinking_tokens, 1)} (min_thinking_tokens): raise "
                "eval.max_new_tokens or lower answer_tokens"
            )


def force(
    step: Step,
    tokenizer,
    prompts: Sequence[list[int]],
    budgets: Sequence[int],
    forcing: Sequence[BudgetForcing | None],
    stops: Sequence[int],
    tags: Sequence[Any] | None = None,
    names: Sequence[str] | None = None,
) -> list[list[int]]:
    """Completion ids of every prompt (then `decoding.finish`), each within
    its budget; `forcing[i]` None generates prompt i plainly, in one round.
    `names` (problem ids) name a prompt whose budget leaves no thinking.

    Each round sends every unfinished prompt to `step` once, so a plain run
    is one step call and a forced one a few more (one per `wait`, one for
    the answer)."""
    n = len(prompts)
    tags = list(tags) if tags is not None else [None] * n
    wait = next((f.wait for f in forcing if f is not None), "Wait")
    ids = _ids(tokenizer, stops, wait) if any(forcing) else None
    check_room(tokenizer, budgets, forcing, stops, names)
    done: list[list[int]] = [[] for _ in range(n)]
    thinking = [f is not None for f in forcing]
    waits = [0] * n
    active = list(range(n))
    plain = frozenset(stops)
    while active:
        requests = []
        for i in active:
            used, f, head = len(done[i]), forcing[i], prompts[i] + done[i]
            if thinking[i]:
                assert ids is not None and f is not None
                left = _thinking_cap(f, budgets[i], ids) - used
                floor = 1 if f.max_waits else 0  # s1: min_tokens=1 with waits
                least = min(max(f.min_thinking_tokens - used, floor), left)
                requests.append(Request(head, left, least, ids.think_end, tags[i]))
            else:
                requests.append(Request(head, budgets[i] - used, 0, plain, tags[i]))
        outs = step(requests)
        still = []
        for i, new in zip(active, outs, strict=True):
            done[i] += new
            if not thinking[i]:
                continue  # answered: a stop token or the end of the budget
            assert ids is not None
            f = forcing[i]
            ended = bool(new) and new[-1] in ids.think_end
            if ended:
                done[i].pop()  # the model's own end of thinking
            cap = _thinking_cap(f, budgets[i], ids)
            if ended and waits[i] < f.max_waits and len(done[i]) + len(ids.wait) <= cap:
                done[i] += ids.wait
                waits[i] += 1
            else:
                text = tokenizer.decode(done[i][-1:], skip_special_tokens=False)
                if not text.endswith("\n"):
                    done[i] += ids.newline
                done[i] += ids.marker + ([] if ended else ids.prefix)
                thinking[i] = False
            still.append(i)
        active = still
    return done
