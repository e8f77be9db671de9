"""Greedy decoding in the s1 format: prompts, context budget, stop tokens, HF
`generate`.

Shared by evaluation (rule `eval_generate`: both backends), the steering sweep
and feature-ablation accuracy, so every stage that asks a model a question
asks it the same way. `generate_hf` takes any model object, so steering
passes a hook-modified model and reuses it unchanged.

The generation budget means what it means in s1: prompt and generation share
the model's context. Each prompt gets `min(max_new_tokens, context - prompt
length)` new tokens (`token_budgets`), the context being the model's
`max_position_embeddings` or a smaller configured one (`context_length`); a
prompt that leaves no room is an error naming it. The vLLM backend uses the
same budgets, so both backends generate the same number of tokens.

Greedy is greedy: `generate` fills every field left unset from the model's
`generation_config.json` (Qwen2.5's sets sampling fields and
`repetition_penalty: 1.05`), so `generate_hf` decodes with a blank one.

Each completion records its generated-token count and whether it used its
whole budget without a stop token (truncated).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from lorascope.core.chat import build_prompt
from lorascope.core.forcing import BudgetForcing, Request, force

__all__ = [
    "Completion",
    "build_prompts",
    "context_length",
    "finish",
    "generate_hf",
    "stop_token_ids",
    "token_budgets",
]


class Completion(NamedTuple):
    """One generated continuation of a prompt (after the think marker)."""

    text: str  # decoded new tokens, special tokens kept, stop token removed
    n_generated_tokens: int  # new tokens including the stop token
    truncated: bool  # used its whole budget without a stop token


def build_prompts(
    tokenizer, problems: Sequence[str], system: str | None = None, think: bool = True
):
    """s1-format prompt strings for a list of problems (see `chat.build_prompt`)."""
    return [build_prompt(tokenizer, p, system, think) for p in problems]


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """End-of-turn ids: the tokenizer's eos, <|im_end|>, and the model's own
    (its generation config's `eos_token_id`)."""
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if im_end is not None and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    gen_eos = getattr(generation_config, "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return sorted(i for i in ids if i is not None)


def context_length(model_config, configured: int | None = None) -> int:
    """The context a prompt and its generation share: the model's positions,
    or `configured` (eval.context_length) when that is smaller."""
    text_config = getattr(model_config, "get_text_config", lambda: model_config)()
    limit = getattr(text_config, "max_position_embeddings", None)
    if limit is None:
        if configured is None:
            raise ValueError(
                "the model config has no max_position_embeddings; set "
                "eval.context_length to the model's context"
            )
        return configured
    if configured is not None and configured > limit:
        raise ValueError(
            f"eval.context_length {configured} exceeds the model's "
            f"max_position_embeddings {limit}"
        )
    return configured or limit


def token_budgets(
    lengths: Sequence[int],
    max_new_tokens: int,
    context: int,
    names: Sequence[str] | None = None,
) -> list[int]:
    """New tokens each prompt may generate: what fits in the context, at most
    `max_new_tokens`. A prompt that alone fills the context is an error."""
    budgets = []
    for i, n in enumerate(lengths):
        if n >= context:
            name = names[i] if names is not None else f"prompt {i}"
            raise ValueError(
                f"{name}: the prompt has {n} tokens, the model's context is "
                f"{context}: no room to generate (shorten the problem, or drop it)"
            )
        budgets.append(min(max_new_tokens, context - n))
    return budgets


def finish(tokenizer, new_ids: Sequence[int], stops: set[int], limit: int):
    """Cut generated ids at the first stop token (or at `limit`) and decode."""
    new_ids = list(new_ids)[:limit]
    n = next((i + 1 for i, t in enumerate(new_ids) if t in stops), None)
    if n is None:
        body, n_gen, truncated = new_ids, len(new_ids), len(new_ids) >= limit
    else:
        body, n_gen, truncated = new_ids[: n - 1], n, False
    text = tokenizer.decode(body, skip_special_tokens=False)
    return Completion(text, n_gen, truncated)


def _hf_model(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@contextlib.contextmanager
def _blank_generation_config(model) -> Iterator[None]:
    """While generating, the model's own generation config is a blank one,
    so no sampling or penalty field of generation_config.json fills in."""
    from transformers import GenerationConfig

    inner = _hf_model(model)
    saved = inner.generation_config
    inner.generation_config = GenerationConfig()
    try:
        yield
    finally:
        inner.generation_config = saved


def _row_budgets(start: int, budgets_B: torch.Tensor):
    """A stopping criterion that ends each row after its own budget."""
    from transformers import StoppingCriteria

    class RowBudgets(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return (input_ids.shape[1] - start) >= budgets_B.to(input_ids.device)

    return RowBudgets()


def _hold_stops(start: int, least_B: torch.Tensor, stops: Sequence[int]):
    """A logits processor that masks the stop tokens of each row until it has
    its own minimum of new tokens (vLLM's `min_tokens`; budget forcing)."""
    from transformers import LogitsProcessor

    class HoldStops(LogitsProcessor):
        def __call__(self, input_ids, scores):
            hold_B = (input_ids.shape[1] - start) < least_B.to(scores.device)
            rows = hold_B.nonzero().flatten()
            if len(rows):
                cols = torch.tensor(list(stops), device=scores.device)
                scores[rows[:, None], cols[None, :]] = -float("inf")
            return scores

    return HoldStops()


def _hf_step(model, pad_id: int, batch_size: int, bar, on_batch=None):
    """A `forcing.Step` on an HF model: the requests sorted by length and
    batched (less padding), left-padded so every row's new tokens start at
    the same column, each row stopping at its own budget. `on_batch` gets
    the tags of each generate call's rows (generate_hf: prompt indices)."""
    from transformers import (
        GenerationConfig,
        LogitsProcessorList,
        StoppingCriteriaList,
    )

    device = next(model.parameters()).device

    def step(requests: Sequence[Request]) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in requests]
        live = [i for i, r in enumerate(requests) if r.max_tokens > 0]
        groups: dict[frozenset[int], list[int]] = {}
        for i in live:
            groups.setdefault(requests[i].stops, []).append(i)
        for stops, members in groups.items():
            order = sorted(members, key=lambda i: len(requests[i].ids))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                rows = [requests[i] for i in idx]
                width = max(len(r.ids) for r in rows)
                ids_BT = torch.full((len(idx), width), pad_id, dtype=torch.long)
                mask_BT = torch.zeros((len(idx), width), dtype=torch.long)
                for row, r in enumerate(rows):
                    ids_BT[row, width - len(r.ids) :] = torch.tensor(r.ids)
                    mask_BT[row, width - len(r.ids) :] = 1
                budgets_B = torch.tensor([r.max_tokens for r in rows])
                least_B = torch.tensor([r.min_tokens for r in rows])
                gen_cfg = GenerationConfig(
                    do_sample=False,
                    num_beams=1,
                    repetition_penalty=1.0,
                    max_new_tokens=int(budgets_B.max()),
                    eos_token_id=sorted(stops),
                    pad_token_id=pad_id,
                )
                processors = LogitsProcessorList(
                    [_hold_stops(width, least_B, sorted(stops))]
                    if bool((least_B > 0).any())
                    else []
                )
                if on_batch is not None:
                    on_batch([r.tag for r in rows])
                with _blank_generation_config(model):
                    seqs_BS = model.generate(
                        input_ids=ids_BT.to(device),
                        attention_mask=mask_BT.to(device),
                        generation_config=gen_cfg,
                        logits_processor=processors,
                        stopping_criteria=StoppingCriteriaList(
                            [_row_budgets(width, budgets_B)]
                        ),
                    )
                for row, i in enumerate(idx):
                    new = seqs_BS[row, width:].tolist()[: rows[row].max_tokens]
                    end = next((k + 1 for k, t in enumerate(new) if t in stops), None)
                    out[i] = new[:end]
                bar.update(len(idx))
        return out

    return step


@torch.no_grad()
def generate_hf(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    context: int | None = None,
    names: Sequence[str] | None = None,
    desc: str = "generate",
    progress: bool = True,
    forcing: BudgetForcing | None = None,
    on_batch: Callable[[list[int]], None] | None = None,
) -> list[Completion]:
    """Greedy completions of `prompts` (strings ending at the think marker).

    `context` defaults to the model's `max_position_embeddings`; `names`
    (e.g. problem ids) name a prompt that does not fit. Prompts are sorted
    by length before batching (less padding) and returned in the input
    order. Padding is on the left so every row's new tokens start at the
    same column; each row stops at its own budget. `forcing` applies s1's
    budget forcing to every prompt (`lorascope.core.forcing`). `on_batch`,
    called before each generate call with the indices (into `prompts`) of
    its rows in row order, lets a caller set per-row edits (steering many
    alphas in one call).
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    stops = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("tokenizer has no pad token; batched generation needs one")
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if context is None:
        context = context_length(model.config)
    budgets = token_budgets([len(e) for e in encoded], max_new_tokens, context, names)
    # A forced prompt is generated in rounds: the bar counts requests then.
    total = len(prompts) if forcing is None else None
    with tqdm(total=total, desc=desc, disable=not progress) as bar:
        step = _hf_step(model, pad_id, batch_size, bar, on_batch)
        new_ids = force(
            step,
            tokenizer,
            encoded,
            budgets,
            [forcing] * len(prompts),
            stops,
            tags=range(len(prompts)),
            names=names,
        )
    return [
        finish(tokenizer, ids, set(stops), budget)
        for ids, budget in zip(new_ids, budgets, strict=True)
    ]
