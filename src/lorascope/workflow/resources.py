"""What each rule needs (GPUs, GPU memory, host RAM, time, FLOPs), computed from
the validated config and a `Hardware` description read from the profile.

Used by the rules' `resources:` (`rule_resources`) and by the `plan` command
(`lorascope.workflow.plan`); nothing here imports torch (the Snakefile imports
it while it is parsed). The model's shape comes from its config.json (the toy
model, a local dir, or a prefetched hub snapshot); for a hub id with no local
copy, `KNOWN_SHAPES` holds the published Qwen2.5 Instruct shapes.

Per-rule formulas live in `lorascope.workflow.rulecosts`; the arithmetic of
shapes (parameters, KV cache, FLOPs) in `lorascope.core.memory`, where the
tests check it against transformers' own Qwen2.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lorascope.core.memory import DTYPE_BYTES, GIB, ModelShape, fit_batch
from lorascope.hub.names import hub_root, is_hub_id, snapshot_name

__all__ = [
    "CPU_RULES",
    "GPU_RULES",
    "HEADROOM",
    "Hardware",
    "KNOWN_SHAPES",
    "Needs",
    "Setting",
    "compute_seconds",
    "feature_accuracy_batch",
    "formula",
    "load_hardware",
    "model_shape",
    "rule_priority",
    "rule_needs",
    "rule_resources",
    "runtime_minutes",
]

# A modelled peak must leave this fraction of the card free (allocator
# fragmentation, CUDA context, what the model does not count).
HEADROOM = 0.10
# Assumed throughput: this fraction of the card's dense bf16 peak for long
# forwards and training (compute-bound), a lower one for token-by-token
# generation (bound by memory bandwidth, not FLOPs).
MFU = 0.40
DECODE_MFU = 0.10
# Token-by-token generation re-reads the weights and the KV cache at every
# step: time >= bytes streamed / (this fraction of the card's bandwidth).
BANDWIDTH_EFFICIENCY = 0.7
# Published config.json shapes (hub ids without a local copy; s1.1 fine-tunes
# share their base's shape).
_Q = dict(max_positions=32768)
KNOWN_SHAPES = {
    "Qwen/Qwen2.5-0.5B-Instruct": ModelShape(896, 24, 14, 2, 4864, 151936, True, **_Q),
    "Qwen/Qwen2.5-1.5B-Instruct": ModelShape(1536, 28, 12, 2, 8960, 151936, True, **_Q),
    "Qwen/Qwen2.5-7B-Instruct": ModelShape(3584, 28, 28, 4, 18944, 152064, **_Q),
    "Qwen/Qwen2.5-32B-Instruct": ModelShape(5120, 64, 40, 8, 27648, 152064, **_Q),
}
# Rules that run the model's weights on a GPU; every other rule is CPU-only.
GPU_RULES = (
    "train_rank1",
    "train_full",
    "eval_generate",
    "extract_activations",
    "mlp_features",
    "kl_ablation",
    "steering_sweep",
    "feature_ablation",
    "feature_accuracy",
    "model_diff",
    "train_sae",
    "sae_features",
    "feature_attribution",
    "behaviour_sets",
    "ground_truth",
)
CPU_RULES = (
    "toy_base_model toy_sft toy_bench hub_fetch sft_dataset bench_prepare "
    "adapter_import full_checkpoint sweep_checkpoint components adapters_ablate "
    "eval_grade "
    "eval_summary eval_table lora_features direct_effects autointerp_explain "
    "autointerp_categories autointerp_assign autointerp_score autointerp_summary "
    "figure_classes figure_categories figure_sae_density figure_ablation "
    "figure_steering figure_table1 figure_table2 figure_causal figure_diffing "
    "dashboards figure_attribution figure_behaviour_sets figure_groundtruth "
    "sae_architectures sae_export figure_scores sweep_recovery sweep_persistence "
    "sweep_emergence figure_recovery_rank figure_emergence"
).split()


@dataclass(frozen=True)
class Hardware:
    """What one node offers (a profile's hardware.yaml)."""

    gpu_mem_gib: float = 80.0
    gpus_per_node: int = 8
    max_runtime_min: int = 1440  # the GPU partition's time limit
    cpu_max_runtime_min: int | None = None  # the CPU partition's; None = none
    host_mem_gb: float = 1000.0
    gpu_tflops: float = 989.0  # dense bf16 peak of one card (H100 SXM)
    gpu_bandwidth_gbs: float = 3350.0  # memory bandwidth of one card, GB/s
    gpu_name: str = "H100 80GB"
    gpu_partition: str | None = None
    cpu_partition: str | None = None
    # CPU cores per GPU of a GPU job (SLURM's --cpus-per-gpu; null = the
    # job's threads). CPU jobs ask for cpus_per_task instead: the SLURM
    # plugin lets cpus_per_task win over cpus_per_gpu, so a GPU job never
    # gets it.
    cpus_per_gpu: int | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> Hardware:
        """Read a hardware.yaml (its keys: this class's fields)."""
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_profile(cls, profile: str | Path) -> Hardware:
        """Read `<profile>/hardware.yaml`."""
        return cls.from_file(Path(profile) / "hardware.yaml")

    @property
    def card_bytes(self) -> float:
        return self.gpu_mem_gib * GIB

    def limit_min(self, gpus: int) -> int | None:
        """The time limit of the partition a job with `gpus` GPUs goes to."""
        return self.max_runtime_min if gpus else self.cpu_max_runtime_min


@dataclass
class Needs:
    """One job of a rule: per-GPU modelled peak, host RAM, total FLOPs of the
    job and the fraction of peak throughput it is assumed to reach."""

    rule: str
    gpus: int = 0
    gpu_bytes: float = 0.0
    host_bytes: float = 2 * GIB
    flops: float = 0.0
    mfu: float = MFU
    runtime_min: int | None = None  # CPU rules: None = the profile's default
    cpus: int | None = None  # CPU rules: cores (None = the job's threads)
    work_share: float = 1.0  # the rule's jobs together / (jobs x this one)
    stream_bytes: float = 0.0  # bytes each GPU reads in sequential decode steps
    notes: list[str] = field(default_factory=list)

    @property
    def loads_weights(self) -> bool:
        return self.rule in GPU_RULES and self.rule not in ("train_sae", "sae_features")


@dataclass(frozen=True)
class Setting:
    """What every rule formula reads: the config, the node, the model."""

    config: dict
    hw: Hardware
    shape: ModelShape

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES.get(self.config["model"]["dtype"], 2)

    @property
    def weight_bytes(self) -> float:
        return self.shape.params * self.dtype_bytes

    @property
    def lora_bytes(self) -> float:
        r = self.config["train"]["lora"]["r"]
        modules = len(self.config["train"]["lora"]["target_modules"])
        return self.shape.lora_params(r, modules) * 4

    @property
    def components(self) -> int:
        lora = self.config["train"]["lora"]
        return self.shape.layers * len(lora["target_modules"]) * lora["r"]

    @property
    def budget(self) -> float:
        """Bytes a job may model on one card (the card less HEADROOM)."""
        return self.hw.card_bytes * (1 - HEADROOM)


def _config_json(path: Path) -> dict | None:
    file = path / "config.json"
    return json.loads(file.read_text()) if file.is_file() else None


def model_shape(config: dict, repo: str | Path = ".") -> ModelShape:
    """The base model's shape: the toy model's (built under the run, else the
    shipped one), a local dir's, a prefetched snapshot's, or KNOWN_SHAPES."""
    repo, base = Path(repo), config["model"]["base"]
    if base == "toy":
        places = [repo / "results" / config["run"] / "toy" / "base_model"]
        places.append(repo / "resources" / "toy" / "base_model")
    elif os.path.isdir(repo / base):
        places = [repo / base]
    elif is_hub_id(base):
        name = snapshot_name(base, config["model"].get("revision"))
        root = hub_root(config["hub"]["dir"], config["hub"].get("endpoint"))
        places = [repo / root / "model" / name]
    else:
        places = []
    for place in places:
        cfg = _config_json(place)
        if cfg:
            return ModelShape.from_config(cfg)
    if base in KNOWN_SHAPES:
        return KNOWN_SHAPES[base]
    if is_hub_id(base):
        cfg = _hub_config_json(config, base)
        if cfg:
            return ModelShape.from_config(cfg)
    raise ValueError(
        f"model.base {base!r}: no config.json found ({', '.join(map(str, places))}"
        f"{', nor on the hub' if is_hub_id(base) else ''}) and not a known shape: "
        "the resource model (config key `hardware`) needs the model's shape; "
        "copy its config.json there or add it to lorascope.workflow.resources."
        "KNOWN_SHAPES"
    )


def _hub_config_json(config: dict, repo_id: str) -> dict | None:
    """config.json of a hub model (one small file, from the local HF cache
    when there), or None when it cannot be had (no network, no access)."""
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(
            repo_id,
            "config.json",
            revision=config["model"].get("revision"),
            endpoint=config["hub"].get("endpoint"),
        )
    except Exception:  # offline, gated, missing: the caller's error names it
        return None
    return json.loads(Path(path).read_text())


def load_hardware(path: str | None, repo: str | Path = ".") -> Hardware | None:
    """The config key `hardware`: a hardware.yaml path, relative to the
    working directory or else to the repository; None = no resource model
    (every job gets the profile's default resources)."""
    if path is None:
        return None
    for place in (Path(path), Path(repo) / path):
        if place.is_file():
            return Hardware.from_file(place)
    raise ValueError(f"hardware: no file at {path!r} (nor under {repo})")


# Snakemake starts the ready job of highest priority first, and knows no
# job's length. Left alone, it ran the evaluation first and the steering
# sweep last, alone on a core, with the ground-truth jobs after it
# (bench/bench_dag.py prints the timeline's critical path). Priority 2: the
# longest chain and what joins it (extraction feeds the SAE, the SAE its
# features' explanations and ablation, those and the components' KL the
# steering sweep, the longest job); 1: the chain into ground truth and the
# SAE architecture comparison after it, attribution's and the feature
# accuracy (the behaviour sets and the feature accuracy, at 0, ran at the
# end, alone beside the figures); 0: jobs nothing long waits on. A rule
# feeding a rule of priority p needs p too, or it holds that one back.
PRIORITIES = {
    **dict.fromkeys(
        ("components", "extract_activations", "train_sae", "sae_features",
         "lora_features", "feature_ablation", "kl_ablation",
         "autointerp_explain", "steering_sweep"),
        2,
    ),
    **dict.fromkeys(
        ("adapters_ablate", "eval_generate", "eval_grade", "ground_truth",
         "sae_architectures", "feature_attribution", "behaviour_sets",
         "feature_accuracy"),
        1,
    ),
}  # fmt: skip


def rule_priority(rule: str) -> int:
    """The rule's `priority:` (PRIORITIES; 0 for the others)."""
    return PRIORITIES.get(rule, 0)


def rule_needs(rule: str, config: dict, hw: Hardware, repo=".") -> Needs:
    """What one job of `rule` needs under `config` on `hw`."""
    if rule not in GPU_RULES and rule not in CPU_RULES:
        raise ValueError(
            f"rule {rule!r} is not in the resource model: add it to GPU_RULES "
            "or CPU_RULES (lorascope.workflow.resources)"
        )
    s = Setting(config, hw, model_shape(config, repo))
    fn = formula(rule)
    needs = fn(s) if fn else Needs(rule)
    needs.rule = rule
    if needs.gpus and needs.runtime_min is None:
        needs.runtime_min = runtime_minutes(needs, hw)
    return needs


def formula(rule: str):
    """The rule's function in rulecosts or beyondcosts (GPU rules) or
    cpucosts (CPU rules that need more than the profile's defaults), or None."""
    from lorascope.workflow import beyondcosts, cpucosts, rulecosts

    for module in (rulecosts, beyondcosts, cpucosts):
        if (found := getattr(module, rule, None)) is not None:
            return found
    return None


def compute_seconds(needs: Needs, hw: Hardware, flops: float | None = None):
    """The larger of FLOPs at the stated MFU and decode steps' bytes at the
    stated share of bandwidth."""
    if not needs.gpus:
        return 0.0
    rate = needs.gpus * hw.gpu_tflops * 1e12 * needs.mfu
    stream = needs.stream_bytes / (hw.gpu_bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY)
    return max((needs.flops if flops is None else flops) / rate, stream)


def runtime_minutes(needs: Needs, hw: Hardware) -> int:
    """Modelled compute time (`compute_seconds`), x1.5 for what the model
    does not count (tokenising, Python, grading), plus 15 minutes to load
    weights; whole minutes."""
    return math.ceil(1.5 * compute_seconds(needs, hw) / 60 + 15)


def rule_resources(rule: str, config: dict, hw: Hardware | None, repo=".") -> dict:
    """The rule's Snakemake resources under `hw` (None: none at all, every
    job gets the profile's defaults). GPU rules: gpu, mem_mb, runtime
    (minutes, capped at the node's limit; `plan` warns when the model needs
    more), nodes 1 for multi-GPU jobs (FSDP and tensor parallelism stay on
    one node), cpus_per_gpu when the hardware names it. CPU rules with a
    formula: mem_mb, and runtime (capped at the CPU partition's limit) and
    cpus_per_task where it gives them;
    without one, nothing (the profile's defaults). slurm_partition when the
    hardware names partitions."""
    if hw is None:
        return {}
    needs = rule_needs(rule, config, hw, repo)
    out: dict = {}
    if needs.gpus or formula(rule):
        out["mem_mb"] = math.ceil(needs.host_bytes / 1e6 / 1000) * 1000
    if needs.gpus:
        out["gpu"] = needs.gpus
        out["runtime"] = min(needs.runtime_min, hw.max_runtime_min)
        if needs.gpus > 1:
            out["nodes"] = 1
        if hw.cpus_per_gpu:
            out["cpus_per_gpu"] = hw.cpus_per_gpu
    else:
        if needs.runtime_min:
            limit = hw.cpu_max_runtime_min or needs.runtime_min
            out["runtime"] = min(needs.runtime_min, limit)
        if needs.cpus:
            out["cpus_per_task"] = needs.cpus
    partition = hw.gpu_partition if needs.gpus else hw.cpu_partition
    if partition:
        out["slurm_partition"] = partition
    return out


def feature_accuracy_batch(config: dict, shape: ModelShape, card_bytes: float) -> int:
    """Prompts per generate call of rule feature_accuracy: causal.
    accuracy_batch_size, or (null) the most that fit `card_bytes` less
    HEADROOM with two KV caches (the edited and the clean pass), at most
    the problems it generates."""
    from lorascope.workflow.rulecosts import accuracy_memory

    causal = config["causal"]
    if causal.get("accuracy_batch_size"):
        return causal["accuracy_batch_size"]
    fixed, per_item = accuracy_memory(config, shape)
    cap = causal["accuracy_limit"] or config["eval"]["limit"] or 500
    return fit_batch(card_bytes * (1 - HEADROOM), fixed, per_item, cap)
