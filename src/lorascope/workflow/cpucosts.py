"""Per-rule formulas of the resource model for CPU rules that need more than
the profile's defaults (memory, time or cores): one function per rule, named
after it, taking a `Setting` and returning one job's `Needs` with
`gpus = 0`. The GPU rules' formulas are in `lorascope.workflow.rulecosts`;
CPU rules in neither module get the profile's default resources.

Times are modelled like the GPU rules' (x1.5 for what is not counted, plus
15 minutes) from a stated rate; neither time nor memory goes below what a
job without a formula gets (`CPU_FLOOR_MIN`, `CPU_FLOOR_BYTES`).
"""

from __future__ import annotations

import math

from lorascope.core.memory import GIB
from lorascope.workflow.resources import Needs, Setting
from lorascope.workflow.rulecosts import ALIVE_FRACTION, _docs

__all__ = [
    "CPU_FLOOR_BYTES",
    "CPU_FLOOR_MIN",
    "DOWNLOAD_BYTES_PER_S",
    "LLM_CALL_S",
    "STREAM_BYTES_PER_S",
    "features_per_kind",
]

# The slurm profile's default runtime and memory of a CPU job: a formula
# never asks for less than a job without one gets.
CPU_FLOOR_MIN = 60
CPU_FLOOR_BYTES = 16e9
# Assumed rates, not measured here: a hub download (huggingface.co to a
# cluster's login or CPU node), a CPU job streaming stored fp32 activations
# from a shared file system, and one LLM call's wall time (a reasoning
# model's reply with its retries).
DOWNLOAD_BYTES_PER_S = 20e6
STREAM_BYTES_PER_S = 50e6
LLM_CALL_S = 60.0


def _minutes(seconds: float) -> int:
    return max(CPU_FLOOR_MIN, math.ceil(1.5 * seconds / 60 + 15))


def _cpu(rule: str, host: float, seconds: float = 0.0, **kw) -> Needs:
    """A CPU job's Needs: `host` bytes and `seconds` of modelled work, each
    at least the profile's default."""
    return Needs(rule, 0, 0.0, max(host, CPU_FLOOR_BYTES),
                 runtime_min=_minutes(seconds), **kw)  # fmt: skip


def hub_fetch(s: Setting) -> Needs:
    """The largest snapshot a run fetches is the base model's weights (a full
    fine-tune or adapter has at most as many), at DOWNLOAD_BYTES_PER_S; the
    download runs several files at once."""
    seconds = s.weight_bytes / DOWNLOAD_BYTES_PER_S
    notes = [f"{s.weight_bytes / 1e9:.0f} GB at {DOWNLOAD_BYTES_PER_S / 1e6:g} MB/s"]
    return _cpu("hub_fetch", 8 * GIB, seconds, cpus=4, notes=notes)


def sft_dataset(s: Setting) -> Needs:
    """Tokenises the SFT set with the base model's tokenizer: ids, labels and
    the chat-templated text of every row (several copies while polars builds
    the frame), and the tokenizer's worker threads."""
    rows, _ = _docs(s)
    tokens = rows * s.config["data"]["max_length"]
    return _cpu("sft_dataset", 8 * GIB + 4 * tokens * 16, cpus=4)


def lora_features(s: Setting) -> Needs:
    """Streams the stored scalars (fp32) shard by shard: three shards at a
    time in memory, every stored byte read once at STREAM_BYTES_PER_S."""
    a = s.config["activations"]
    host = 3 * a["shard_tokens"] * s.components * 4 + 8 * GIB
    docs, mean = _docs(s)
    stored = docs * mean * s.components * 4
    return _cpu("lora_features", host, stored / STREAM_BYTES_PER_S, cpus=4)


def direct_effects(s: Setting) -> Needs:
    """Reads only the unembedding and final norm (safetensors slices, fp32
    copies beside the stored dtype) and the adapter; the base model is built
    on the meta device (no weights). One row of logits per feature."""
    shape = s.shape
    tensors = shape.vocab * shape.hidden + shape.hidden
    host = tensors * (4 + s.dtype_bytes) + s.lora_bytes + 4 * GIB
    return _cpu("direct_effects", host)


def features_per_kind(config: dict, components: int, layers: int) -> dict[str, int]:
    """Features each autointerp job handles: LoRA directions and MLP neurons
    (x2 with both polarities), alive SAE latents (ALIVE_FRACTION assumed)."""
    a = config["activations"]
    sides = {"both": 2}
    lora = components * sides.get(a["polarity"], 1)
    mlp_polarity = a["mlp_polarity"] or a["polarity"]
    mlp = layers * a["mlp_neurons_per_layer"] * sides.get(mlp_polarity, 1)
    sae = int(components * config["sae"]["expansion"] * ALIVE_FRACTION)
    return {"lora": lora, "mlp": mlp, "sae": sae}


def _llm_job(s: Setting, rule: str, per_feature: int = 1) -> Needs:
    """`per_feature` LLM calls per feature of the largest kind,
    autointerp.concurrency at a time, LLM_CALL_S each; the offline explainer
    makes none."""
    ai = s.config["autointerp"]
    n = max(features_per_kind(s.config, s.components, s.shape.layers).values())
    n *= per_feature
    if ai["provider"] == "offline":
        return _cpu(rule, 8 * GIB, notes=["offline: no calls"])
    seconds = n * LLM_CALL_S / ai["concurrency"]
    notes = [f"{n} calls, {ai['concurrency']} in flight, {LLM_CALL_S:g} s each"]
    return _cpu(rule, 8 * GIB, seconds, cpus=2, notes=notes)


def autointerp_explain(s: Setting) -> Needs:
    return _llm_job(s, "autointerp_explain")


def autointerp_assign(s: Setting) -> Needs:
    return _llm_job(s, "autointerp_assign")


def autointerp_score(s: Setting) -> Needs:
    # one judge call per feature per scorer (detection, fuzzing, simulation)
    n_scorers = len(s.config["autointerp"]["scorers"])
    return _llm_job(s, "autointerp_score", max(n_scorers, 1))
