"""Generation jobs: every benchmark for the variants one job serves (rule
`eval_generate`).

Two backends, same prompts (`lorascope.core.decoding.build_prompts`,
tokenised once so both see identical token ids) and same outputs:

- `hf`: `lorascope.core.decoding.generate_hf` per variant (the greedy decode
  steering reuses);
- `vllm`: one vLLM engine with `enable_lora=True` serves the base model and
  every LoRA variant through `LoRARequest` (no request = base). vLLM is
  imported only here; asking for it when it is missing is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from lorascope.core.decoding import (
    Completion,
    build_prompts,
    generate_hf,
    stop_token_ids,
)
from lorascope.core.models import resolve_model_dir

__all__ = ["generate_benchmarks", "generate_vllm"]

log = logging.getLogger(__name__)


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
        from lorascope.core.models import load_causal_lm, load_lora_model

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
