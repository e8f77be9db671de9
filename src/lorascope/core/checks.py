"""Config checks a JSON schema cannot express, run before any job.

Used by `lorascope.core.config.validate` (numbers written as strings,
benchmark names, local paths, SAE k against its width). The environment
(API keys) is checked by `lorascope.workflow.environment`. Every message
starts with the key path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

from lorascope.core.names import is_toy, is_toy_benchmark
from lorascope.core.roles import categorizer_problem

__all__ = [
    "TOPK_ARCHITECTURES",
    "ConfigHint",
    "attention_hint",
    "coerce_numbers",
    "semantic_problems",
]

REPO = Path(__file__).resolve().parents[3]
SHIPPED_TOY_MODEL = REPO / "resources" / "toy" / "base_model"
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _types(schema: dict) -> set[str]:
    t = schema.get("type", ())
    return {t} if isinstance(t, str) else set(t)


def _coerce(schema: dict, value: Any) -> Any:
    types = _types(schema)
    if not types:  # digits: an integer or a list of them
        for alt in (*schema.get("oneOf", ()), *schema.get("anyOf", ())):
            coerced = _coerce(alt, value)
            if coerced != value or type(coerced) is not type(value):
                return coerced
        return value
    if isinstance(value, str) and types & {"number", "integer"}:
        # PyYAML reads `1e-3` (no dot) as a string; config/README.md writes
        # numbers that way, so accept them as what they mean. Snakemake's
        # --config reads every scalar as a string: `4` becomes the int 4, as
        # YAML reads it from a file, so a restated value is the same value.
        text = value.strip()
        if _INTEGER.match(text):
            return int(text)
        if _NUMBER.match(text):
            number = float(text)
            if "number" in types:
                return number
            return int(number) if number.is_integer() else value
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(schema["items"], v) for v in value]
    if isinstance(value, dict):
        coerce_numbers(schema, value)
    return value


def coerce_numbers(schema: dict, node: dict) -> None:
    """Numbers written as strings ('1e-3') become numbers, in place."""
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, value in list(node.items()):
        sub = props.get(key, extra if isinstance(extra, dict) else None)
        if sub:
            node[key] = _coerce(sub, value)


# --- semantics ---------------------------------------------------------------


def _looks_local(name: str) -> bool:
    """A path rather than a hub id: starts like a path, has more than one
    slash, or its first component is a local folder (a typo'd local path)."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        return True
    head = name.split("/", 1)[0]
    return "/" in name and Path(head).is_dir()


def _model_problem(key: str, name: str) -> str | None:
    if Path(name).expanduser().exists():
        return None
    if _looks_local(name):
        return (
            f"{key}: local path {name!r} does not exist (relative to the working "
            f"directory {os.getcwd()})"
        )
    if not _HUB_ID.match(name):
        return f"{key}: {name!r} is neither an existing path nor a hub id (org/name)"
    return None


def _model_config(config: dict) -> dict | None:
    """The base model's config.json when it can be read without a download."""
    base = config["model"]["base"]
    if is_toy(base):
        if config["toy"]["rebuild"]:
            return {"num_hidden_layers": config["toy"]["pretrain"]["num_layers"]}
        path = SHIPPED_TOY_MODEL / "config.json"
    elif Path(base).is_dir():
        path = Path(base) / "config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(
                base, "config.json", revision=config["model"]["revision"]
            )
        except Exception:  # no cache, a malformed id: the width is unknown
            return None
        path = Path(hit) if isinstance(hit, str) else None
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text())


# The sae.architecture values whose sparsity is sae.k (top-k kinds), for which
# k cannot exceed the width; lorascope.sae.architectures.uses_k says the same
# (tests/unit/test_sae_architectures.py holds them equal).
TOPK_ARCHITECTURES = frozenset({"batchtopk", "topk", "matryoshka_batchtopk"})


def _sae_problem(config: dict) -> str | None:
    lora, sae = config["train"]["lora"], config["sae"]
    if sae["architecture"] not in TOPK_ARCHITECTURES:
        return None
    model = _model_config(config)
    layers = (model or {}).get("num_hidden_layers")
    if not layers:
        return None
    n_components = layers * len(lora["target_modules"]) * lora["r"]
    width = sae["expansion"] * n_components
    if sae["k"] > width:
        return (
            f"sae.k: {sae['k']} is larger than the SAE width {width} (sae.expansion "
            f"{sae['expansion']} x {n_components} components = {layers} layers x "
            f"{len(lora['target_modules'])} modules x rank {lora['r']})"
        )
    return None


def _vllm_rank_problems(config: dict) -> list[str]:
    """vLLM's engine refuses an adapter above eval.vllm.max_lora_rank, but
    only when the generation job loads it, after training has run: say so
    before any job, for train.lora.r and every rank of a sweep (the hf
    backend has no such bound)."""
    rank, most = config["train"]["lora"]["r"], config["eval"]["vllm"]["max_lora_rank"]
    if config["eval"]["backend"] != "vllm" or most is None:  # null: sized to fit
        return []
    out = []
    if rank > most:
        out.append(
            f"eval.vllm.max_lora_rank: {most} is below train.lora.r = {rank}; the "
            f"vLLM engine would refuse the rank-{rank} adapter. Set "
            f"eval.vllm.max_lora_rank to at least {rank}, or eval.backend: hf"
        )
    high = sorted(r for r in (config["sweep"]["ranks"] or []) if r > most)
    if high:
        out.append(
            f"sweep.ranks: {high} above eval.vllm.max_lora_rank {most} (the "
            "evaluation engine would refuse them): raise eval.vllm.max_lora_rank"
        )
    return out


def _benchmark_problems(config: dict, benchmarks) -> list[str]:
    toy = set(config["toy"]["benchmarks"])
    names = [("eval.benchmarks", b) for b in config["eval"]["benchmarks"]]
    for key in ("steering.benchmark", "causal.accuracy_benchmark"):
        section, name = key.split(".")
        if config[section][name]:
            names.append((key, config[section][name]))
    local = set(config["eval"]["benchmark_files"])
    hub = [n for _, n in names if not is_toy_benchmark(n) and n not in local]
    # The registry is only loaded (it imports polars) when a hub name is used.
    known = None
    if benchmarks is not None and hub:
        known = sorted(benchmarks())
    out = []
    for key, name in names:
        if is_toy_benchmark(name):
            if name not in toy:
                out.append(
                    f"{key}: {name!r} is not defined in toy.benchmarks "
                    f"(defined: {sorted(toy)})"
                )
        elif known is not None and name not in known and name not in local:
            out.append(
                f"{key}: unknown benchmark {name!r}; known: {known + ['toy_*']}, "
                "or a local file in the normalised schema under "
                "eval.benchmark_files"
            )
    for name, path in config["eval"]["benchmark_files"].items():
        if not Path(path).is_file():
            out.append(f"eval.benchmark_files.{name}: no file at {path!r}")
    return out


def _prompt_dir_problems(prompts: dict) -> list[str]:
    """autointerp.prompts.dir holds every template not given a file of its
    own (each step reads only its own, so this is the one check of all)."""
    folder = prompts["dir"]
    if not folder:
        return []
    if not Path(folder).is_dir():
        return [f"autointerp.prompts.dir: no directory at {folder!r}"]
    missing = [
        f"{name}.txt"
        for name, path in prompts.items()
        if name != "dir" and not path and not (Path(folder) / f"{name}.txt").is_file()
    ]
    if missing:
        return [f"autointerp.prompts.dir: {folder!r} lacks {', '.join(missing)}"]
    return []


def _file_problems(config: dict) -> list[str]:
    out = []
    files = config["data"]["data_files"]
    for path in [files] if isinstance(files, str) else files or []:
        if not Path(path).is_file():
            out.append(f"data.data_files: no file at {path!r}")
    for name, path in config["autointerp"]["prompts"].items():
        if name == "dir":
            out += _prompt_dir_problems(config["autointerp"]["prompts"])
        elif path and not Path(path).is_file():
            out.append(f"autointerp.prompts.{name}: no file at {path!r}")
    fsdp = config["train"]["fsdp_config"]
    if fsdp and not (Path(fsdp).is_file() or (REPO / fsdp).is_file()):
        out.append(f"train.fsdp_config: no file at {fsdp!r}")
    if fsdp and config["train"]["length_chunks"] > 1:  # lorascope.train.chunks
        out.append(
            "train.length_chunks: chunked steps are for one-process runs; "
            "with train.fsdp_config set use 1"
        )
    return out


def _adapter_problem(config: dict) -> str | None:
    """A local model.adapter is checked now (a hub one by rule adapter_import)."""
    from lorascope.core.components import AdapterError, check_existing_adapter

    model = config["model"]
    adapter = model["adapter"]
    if adapter is None or not Path(adapter).exists():
        if adapter and _looks_local(adapter):
            return f"model.adapter: local path {adapter!r} does not exist"
        return None
    base = model["base"]
    if is_toy(base):
        base = f"results/{config['run']}/toy/base_model"
    base_cfg = _model_config(config) or {}
    n_layers = base_cfg.get("num_hidden_layers") or (
        base_cfg.get("text_config") or {}
    ).get("num_hidden_layers")
    try:
        check_existing_adapter(
            adapter,
            config["train"]["lora"],
            base,
            None,
            model["adapter_check_base"],
            n_layers=n_layers,
        )
    except (AdapterError, OSError, ValueError) as err:
        return f"model.adapter: {err}"
    return None


class ConfigHint(UserWarning):
    """Something the config asks for that may fail later, in a job whose
    environment this process cannot see (`validate` warns, does not stop)."""


def attention_hint(kernel: str) -> str | None:
    """flash_attention_2 is opt-in and needs the flash-attn package where the
    jobs run (`lorascope.core.models.require_attention_kernel` fails the job
    at start without it). Snakemake's interpreter need not be the jobs'
    (--sdm conda, a cluster image), so its lack here is only a hint."""
    if kernel == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        return (
            "model.attn_implementation: flash_attention_2 needs the flash-attn "
            "package, which the Python running snakemake cannot import; every "
            "job that loads the model fails at start unless its environment has "
            "it. Use sdpa (the default), or install flash-attn where the jobs "
            "run (config/README.md, 'Attention kernels': pip install flash-attn "
            "--no-build-isolation, after torch)"
        )
    return None


def semantic_problems(config: dict, benchmarks=None) -> list[str]:
    """Every problem found, each starting with its key path.

    `benchmarks`: a function returning the hub benchmark names the evaluation
    stage knows (core does not import stages, so the caller passes it); None
    skips that check.
    """
    out = []
    for key in ("base", "full_finetune"):
        name = config["model"][key]
        if not is_toy(name) and name != "train":
            out.append(_model_problem(f"model.{key}", name))
    out.append(_sae_problem(config))
    out += _vllm_rank_problems(config)
    out.append(_adapter_problem(config))
    out.append(categorizer_problem(config["autointerp"]))
    out += _benchmark_problems(config, benchmarks)
    out += _file_problems(config)
    return [p for p in out if p]
