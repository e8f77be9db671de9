"""Generation jobs: every benchmark for the variants one job serves (rule
`eval_generate`, run as `python -m lorascope.evaluation`).

Two backends, same prompts (`lorascope.core.decoding.build_prompts`,
tokenised by our tokenizer so both see identical token ids), same context
budget, same greedy decode, same outputs:

- `hf`: `lorascope.core.decoding.generate_hf` per variant (the decode
  steering reuses);
- `vllm`: `lorascope.evaluation.vllm_engine.generate_vllm`, one engine and
  one call for the base and every LoRA variant of the job, and one more
  engine, after it, for a full fine-tune in the same job
  (`lorascope.evaluation.engines`).

`eval.think_prefill` decides which variants' prompts end with the think
marker: `all` (every variant is asked in the trained format) or `not_base`
(the base gets the plain chat template, as s1's harness prompts a model it
did not fine-tune). `eval.budget_forcing` (off by default) applies s1's
budget forcing to the prompts that end with the think marker, on either
backend (`lorascope.core.forcing`).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from lorascope.core.chat import THINK_PREFILL
from lorascope.core.decoding import build_prompts, context_length, generate_hf
from lorascope.core.forcing import forcing_from_config
from lorascope.core.models import resolve_model_dir

__all__ = ["generate_benchmarks", "think_prefilled"]


# eval.think_prefill values, and how Tables 1 and 2 describe them.
def think_prefilled(variant: str, mode: str) -> bool:
    """Whether `variant`'s prompts end with the think marker."""
    if mode not in THINK_PREFILL:
        raise ValueError(f"eval.think_prefill: unknown value {mode!r}")
    return mode == "all" or variant != "base"


def _generate_hf(
    models, tokenizer, prompts, names, eval_cfg, model_cfg, device, forcing
):
    from lorascope.core.models import load_causal_lm, load_lora_model

    completions = {}
    for variant, (model_dir, adapter) in models.items():
        root, revision = resolve_model_dir(model_dir, model_cfg.get("revision"))
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
            prompts[variant],
            max_new_tokens=eval_cfg["max_new_tokens"],
            batch_size=eval_cfg["batch_size"],
            context=context_length(model.config, eval_cfg["context_length"]),
            names=names,
            desc=variant,
            forcing=forcing[variant],
        )
        del model
    return completions


def generate_benchmarks(
    models: Mapping[str, tuple[str, str | None]],
    tokenizer,
    benchmarks: Mapping[str, pl.DataFrame],
    eval_cfg: Mapping,
    model_cfg: Mapping,
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
    problems, names, spans = [], [], {}
    for name, df in benchmarks.items():
        spans[name] = (len(problems), len(problems) + df.height)
        problems += df["problem"].to_list()
        names += [f"{name} problem {i!r}" for i in df["id"].to_list()]
    mode = eval_cfg["think_prefill"]
    prompts = {
        v: build_prompts(tokenizer, problems, system, think_prefilled(v, mode))
        for v in models
    }
    # Budget forcing shapes a thinking: only prompts that open one get it.
    chosen = forcing_from_config(eval_cfg["budget_forcing"])
    forcing = {v: chosen if think_prefilled(v, mode) else None for v in models}
    backend = eval_cfg["backend"]
    if backend == "vllm":
        from lorascope.evaluation.vllm_engine import generate_vllm

        # One engine per model: the base serves its LoRA variants, a full
        # fine-tune (eval.vllm.one_job) gets the next engine.
        rev = model_cfg.get("revision")
        engines: dict[tuple[str, str | None], dict[str, str | None]] = {}
        for variant, (model_dir, adapter) in models.items():
            engines.setdefault(resolve_model_dir(model_dir, rev), {})[variant] = adapter
        completions = {}
        for (root, revision), adapters in engines.items():
            completions |= generate_vllm(
                root,
                tokenizer,
                prompts,
                adapters,
                max_new_tokens=eval_cfg["max_new_tokens"],
                vllm_cfg=eval_cfg["vllm"],
                context=eval_cfg["context_length"],
                dtype=model_cfg["dtype"],
                revision=revision,
                seed=seed,
                names=names,
                device=device,
                forcing=forcing,
            )
    elif backend == "hf":
        completions = _generate_hf(
            models, tokenizer, prompts, names, eval_cfg, model_cfg, device, forcing
        )
    else:
        raise ValueError(f"eval.backend: unknown backend {backend!r}")
    out: dict[str, dict[str, pl.DataFrame]] = {}
    for variant, comps in completions.items():
        out[variant] = {}
        for name, (lo, hi) in spans.items():
            rows = comps[lo:hi]
            out[variant][name] = pl.DataFrame(
                {
                    "id": benchmarks[name]["id"],
                    "prompt": prompts[variant][lo:hi],
                    "completion": [c.text for c in rows],
                    "n_generated_tokens": [c.n_generated_tokens for c in rows],
                    "truncated": [c.truncated for c in rows],
                },
                schema_overrides={"n_generated_tokens": pl.Int32},
            )
    return out
