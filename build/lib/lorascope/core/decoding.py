"""Greedy decoding in the s1 format: prompts, stop tokens, HF `generate`.

Shared by evaluation (rule `eval_generate`, backend hf), the steering sweep
and feature-ablation accuracy, so every stage that asks a model a question
asks it the same way. `generate_hf` takes any model object, so steering
passes a hook-modified model and reuses it unchanged.

Each completion records its generated-token count and whether it hit
`max_new_tokens` without a stop token (truncated).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from lorascope.core.chat import build_prompt

__all__ = ["Completion", "build_prompts", "generate_hf", "stop_token_ids"]


class Completion(NamedTuple):
    """One generated continuation of a prompt (after the think marker)."""

    text: str  # decoded new tokens, special tokens kept, stop token removed
    n_generated_tokens: int  # new tokens including the stop token
    truncated: bool  # hit max_new_tokens without a stop token


def build_prompts(tokenizer, problems: Sequence[str], system: str | None = None):
    """s1-format prompt strings for a list of problems."""
    return [build_prompt(tokenizer, p, system) for p in problems]


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """End-of-turn ids: the tokenizer's eos, <|im_end|>, and the model's own."""
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if im_end is not None and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return sorted(i for i in ids if i is not None)


def _finish(tokenizer, new_ids: list[int], stops: set[int], limit: int) -> Completion:
    """Cut a generated id row at its first stop token and decode it."""
    n = next((i + 1 for i, t in enumerate(new_ids) if t in stops), None)
    if n is None:
        body, n_gen, truncated = new_ids, len(new_ids), len(new_ids) >= limit
    else:
        body, n_gen, truncated = new_ids[: n - 1], n, False
    text = tokenizer.decode(body, skip_special_tokens=False)
    return Completion(text, n_gen, truncated)


@torch.no_grad()
def generate_hf(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    desc: str = "generate",
    progress: bool = True,
) -> list[Completion]:
    """Greedy completions of `prompts` (strings ending at the think marker).

    Prompts are sorted by length before batching (less padding) and returned
    in the input order. Padding is on the left so every row's new tokens
    start at the same column.
    """
    from transformers import GenerationConfig

    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    stops = stop_token_ids(tokenizer, model)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("tokenizer has no pad token; batched generation needs one")
    gen_cfg = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=stops,
        pad_token_id=pad_id,
    )
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    device = next(model.parameters()).device
    out: list[Completion | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids_BT = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask_BT = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids_BT[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask_BT[row, width - len(encoded[i]) :] = 1
        seqs_BS = model.generate(
            input_ids=ids_BT.to(device),
            attention_mask=mask_BT.to(device),
            generation_config=gen_cfg,
        )
        for row, i in enumerate(idx):
            new_ids = seqs_BS[row, width:].tolist()
            out[i] = _finish(tokenizer, new_ids, set(stops), max_new_tokens)
        bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]
