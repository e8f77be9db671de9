"""Greedy generation for every model variant (rule `eval_generate`).

Two backends, same prompts (`lorascope.chat.build_prompt`, tokenised once
here so both see identical token ids) and same outputs:

- `generate_hf`: transformers `generate` on a loaded model, batched with left
  padding. It takes any model object, so steering passes a hook-modified model
  and reuses it unchanged.
- `generate_vllm`: one vLLM engine with `enable_lora=True` serves the base
  model and every LoRA variant through `LoRARequest` (no request = base).
  vLLM is imported only here; asking for it when it is missing is an error.

Each completion records its generated-token count and whether it hit
`max_new_tokens` without a stop token (truncated).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import polars as pl
import torch
from tqdm.auto import tqdm

from .chat import build_prompt

__all__ = [
    "Completion",
    "build_prompts",
    "generate_benchmarks",
    "generate_hf",
    "generate_vllm",
    "resolve_model_dir",
    "stop_token_ids",
]

log = logging.getLogger(__name__)


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


def _import_vllm():
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as e:
        raise RuntimeError(
            "eval.backend is 'vllm' but vllm is not importable here "
            f"({e}); install it (conda env envs/vllm.yaml or pip install "
            "'lorascope[gpu]') or set eval.backend: hf"
        ) from e
    return vllm, LoRARequest


def generate_vllm(
    model_path: str,
    tokenizer,
    prompts: Sequence[str],
    adapters: dict[str, str | Path | None],
    *,
    max_new_tokens: int,
    vllm_cfg: dict,
    dtype: str = "bfloat16",
    revision: str | None = None,
    seed: int = 0,
) -> dict[str, list[Completion]]:
    """Greedy completions for every variant from one engine.

    `adapters` maps a variant name to its PEFT adapter dir, or None for the
    model itself (the base, or a full fine-tune served by its own engine).
    """
    vllm, LoRARequest = _import_vllm()
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    longest = max((len(e) for e in encoded), default=0)
    has_lora = any(path is not None for path in adapters.values())
    llm = vllm.LLM(
        model=model_path,
        tokenizer=model_path,
        revision=revision,
        dtype=dtype,
        seed=seed,
        tensor_parallel_size=vllm_cfg["tensor_parallel_size"],
        gpu_memory_utilization=vllm_cfg["gpu_memory_utilization"],
        max_model_len=vllm_cfg.get("max_model_len") or longest + max_new_tokens,
        enable_lora=has_lora,
        **(
            {
                "max_lora_rank": vllm_cfg["max_lora_rank"],
                "max_loras": vllm_cfg["max_loras"],
            }
            if has_lora
            else {}
        ),
    )
    params = vllm.SamplingParams(
        temperature=0.0,
        max_tokens=max_new_tokens,
        stop_token_ids=stop_token_ids(tokenizer),
        skip_special_tokens=False,  # the answer marker is a special token
        spaces_between_special_tokens=False,
    )
    token_prompts = [{"prompt_token_ids": e} for e in encoded]
    results = {}
    for lora_id, (variant, path) in enumerate(adapters.items(), start=1):
        request = None if path is None else LoRARequest(variant, lora_id, str(path))
        log.info("vllm: %d prompts for variant %s", len(prompts), variant)
        outputs = llm.generate(token_prompts, params, lora_request=request)
        results[variant] = [
            Completion(
                o.outputs[0].text,
                len(o.outputs[0].token_ids),
                o.outputs[0].finish_reason == "length",
            )
            for o in outputs
        ]
    return results


def resolve_model_dir(
    path: str | Path, revision: str | None = None
) -> tuple[str, str | None]:
    """(model id or path, revision), following `POINTER.json` if `path` has one.

    `train/full/model/` is a saved model or, at paper scale, a pointer to a
    named checkpoint (rule `full_checkpoint`) carrying its own revision.
    """
    pointer = Path(path) / "POINTER.json"
    if not pointer.exists():
        return str(path), revision
    data = json.loads(pointer.read_text())
    if not data.get("model"):
        raise ValueError(f"{pointer}: no 'model' entry")
    return data["model"], data.get("revision")


def generate_benchmarks(
    models: dict[str, tuple[str, str | None]],
    tokenizer,
    benchmarks: dict[str, pl.DataFrame],
    eval_cfg: dict,
    model_cfg: dict,
    device: str = "cpu",
    seed: int = 0,
    system: str | None = None,
) -> dict[str, dict[str, pl.DataFrame]]:
    """Generate every benchmark for every variant of one generation job.

    `models[variant] = (model dir, adapter dir or None)`. Returns
    `frames[variant][benchmark]` with id, prompt, completion,
    n_generated_tokens, truncated. All benchmarks go through the backend
    together so vLLM can schedule them in one batch.
    """
    prompts, spans, start = [], {}, 0
    for name, df in benchmarks.items():
        prompts += build_prompts(tokenizer, df["problem"].to_list(), system)
        spans[name] = (start, start + df.height)
        start += df.height
    max_new, rev = eval_cfg["max_new_tokens"], model_cfg.get("revision")
    if eval_cfg["backend"] == "vllm":
        roots = {resolve_model_dir(m, rev) for m, _ in models.values()}
        if len(roots) != 1:
            raise ValueError(f"one vLLM engine serves one model, got {sorted(roots)}")
        ((root, revision),) = roots
        completions = generate_vllm(
            root,
            tokenizer,
            prompts,
            {v: a for v, (_, a) in models.items()},
            max_new_tokens=max_new,
            vllm_cfg=eval_cfg["vllm"],
            dtype=model_cfg["dtype"],
            revision=revision,
            seed=seed,
        )
    elif eval_cfg["backend"] == "hf":
        from .models import load_causal_lm, load_lora_model

        completions = {}
        for variant, (model_dir, adapter) in models.items():
            root, revision = resolve_model_dir(model_dir, rev)
            model = load_causal_lm(
                root,
                dtype=model_cfg["dtype"],
                attn_implementation=model_cfg["attn_implementation"],
                device=device,
                revision=revision,
            )
            if adapter is not None:
                model = load_lora_model(model, adapter).eval()
            completions[variant] = generate_hf(
                model,
                tokenizer,
                prompts,
                max_new_tokens=max_new,
                batch_size=eval_cfg["batch_size"],
                desc=variant,
            )
            del model
    else:
        raise ValueError(f"eval.backend: unknown backend {eval_cfg['backend']!r}")
    out: dict[str, dict[str, pl.DataFrame]] = {}
    for variant, comps in completions.items():
        out[variant] = {}
        for name, (lo, hi) in spans.items():
            rows = comps[lo:hi]
            out[variant][name] = pl.DataFrame(
                {
                    "id": benchmarks[name]["id"],
                    "prompt": prompts[lo:hi],
                    "completion": [c.text for c in rows],
                    "n_generated_tokens": [c.n_generated_tokens for c in rows],
                    "truncated": [c.truncated for c in rows],
                },
                schema_overrides={"n_generated_tokens": pl.Int32},
            )
    return out
