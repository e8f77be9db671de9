"""Materialise the embedded toy world: base model, SFT set and benchmarks.

Used by the rules in ``workflow/rules/toy.smk`` (scripts ``toy_base_model.py``,
``toy_sft.py`` and ``toy_bench.py``). With ``toy.rebuild: false`` the base
model is the one shipped in ``resources/toy/base_model/``; with ``true`` it
is pretrained from scratch by ``lorascope.toy.pretrain`` (also
``python -m lorascope.toy.world OUT``), which is how the shipped weights
were made: their ``pretrain_summary.json`` records the recipe, the run and
the recipes tried before it.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from lorascope.core.io import atomic_path
from lorascope.toy import tasks

if TYPE_CHECKING:
    from lorascope.toy.pretrain import PretrainConfig

# torch, transformers and the pretraining recipe are imported inside the
# functions that use them: the benchmark and SFT-set jobs need neither, and
# the import costs each of them seconds.

__all__ = [
    "SHIPPED_DIR",
    "benchmark_frame_of",
    "benchmark_frames",
    "build_base_model",
    "check_base_model",
    "copy_base_model",
    "direct_accuracy",
    "materialise_base_model",
    "pretrain_config",
    "recipe_record",
    "sft_set",
    "toy_section",
]

# src/lorascope/toy/world.py -> repository root
SHIPPED_DIR = Path(__file__).resolve().parents[3] / "resources" / "toy" / "base_model"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def pretrain_config(toy_cfg: dict) -> PretrainConfig:
    """The ``toy.pretrain`` section (plus ``toy.seed``) as a PretrainConfig;
    keys missing from ``toy_cfg`` get the schema's defaults."""
    from lorascope.core.config import schema_defaults
    from lorascope.toy.pretrain import PretrainConfig

    toy_cfg = schema_defaults("toy", toy_cfg)
    p = dict(toy_cfg["pretrain"])
    for key in ("digits", "chat_digits"):
        p[key] = tuple(p[key])
    if p["chat_phase"] is not None:
        p["chat_phase"] = dict(p["chat_phase"])
    return PretrainConfig(seed=toy_cfg["seed"], **p)


def recipe_record(cfg: PretrainConfig) -> dict:
    """The recipe as ``pretrain_summary.json`` records it (plain JSON types):
    a test compares the shipped weights' record with what the embedded
    config asks for, so the two cannot drift apart unnoticed."""
    return json.loads(
        json.dumps(
            {
                **cfg.__dict__,
                "digits": list(cfg.digits),
                "chat_digits": list(cfg.chat_digits),
                "chat_phase": cfg.chat_phase and dict(cfg.chat_phase),
            }
        )
    )


def check_base_model(path: Path | str) -> None:
    """Load the model dir as the pipeline does and generate a few tokens.

    Raises naming the missing file, or when the tokenizer that loads from the
    folder does not reproduce the toy text (whitespace is part of the task).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from lorascope.core.chat import build_prompt
    from lorascope.core.models import load_tokenizer

    path = Path(path)
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"toy base model {path}: missing {', '.join(missing)}")
    tok = load_tokenizer(str(path))
    sample = tasks.reasoning_trace(12, 34, random.Random(0), slip_rate=0.0)[0]
    if tok.decode(tok(sample, add_special_tokens=False)["input_ids"]) != sample:
        raise ValueError(
            f"toy base model {path}: the tokenizer loaded from it "
            f"({type(tok).__name__}) does not round-trip the toy text"
        )
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tok(build_prompt(tok, tasks.question_text(12, 34)), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    if out.shape[1] <= ids["input_ids"].shape[1]:
        raise ValueError(f"toy base model {path}: generated no tokens")


def direct_accuracy(
    model, tokenizer, digits=(1, 2, 3, 4), n: int = 40, seed: int = 0
) -> dict[str, float]:
    """Greedy accuracy of the base model's direct answers, per operand digit
    count, on ``n`` held-out problems each (fewer where the held-out pool is
    smaller: ten one-digit sums): what Table 1's base column will show,
    measured in seconds (recorded in ``pretrain_summary.json``)."""
    from lorascope.core.decoding import build_prompts, generate_hf
    from lorascope.core.grading import grade

    out = {}
    for d in digits:
        count = min(n, tasks.held_out_capacity(d))
        rows = tasks.benchmark_frame(f"toy_add{d}", d, count, seed).to_dicts()
        prompts = build_prompts(tokenizer, [r["problem"] for r in rows])
        completions = generate_hf(
            model.eval(), tokenizer, prompts, max_new_tokens=40, batch_size=count,
            progress=False,
        )  # fmt: skip
        correct = [
            grade(r, c.text, c.truncated).correct
            for r, c in zip(rows, completions, strict=True)
        ]
        out[str(d)] = sum(correct) / count
    return out


def build_base_model(out_dir: Path | str, toy_cfg: dict, device: str = "cpu") -> dict:
    """Pretrain the toy base model from scratch and save it as an HF dir.

    Returns a summary (config, wall time, final loss, direct-answer accuracy
    per digit count) that is also written beside the weights as
    ``pretrain_summary.json``.
    """
    import torch

    from lorascope.toy.pretrain import pretrain
    from lorascope.toy.tokenizer import build_tokenizer

    cfg = pretrain_config(toy_cfg)
    tokenizer = build_tokenizer()
    start = time.time()
    model, log = pretrain(tokenizer, cfg, device=device)
    model = model.to("cpu")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    tail = log[-min(20, len(log)) :]
    summary = {
        "config": recipe_record(cfg),
        "wall_s": round(time.time() - start, 1),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "final_loss": sum(r["loss"] for r in tail) / len(tail),
        # What a later rebuild's first steps must give (tests/unit/test_toy.py).
        "first_losses": [r["loss"] for r in log[:10]],
        "parameters": sum(p.numel() for p in model.parameters()),
        "direct_accuracy": {
            "note": "greedy direct answers to 40 held-out problems per digit "
            "count (the ten one-digit sums of the pool)",
            **direct_accuracy(model, tokenizer),
        },
    }
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "pretrain_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        with open(tmp / "pretrain_log.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in log)
    return summary


def copy_base_model(out_dir: Path | str, shipped_dir: Path | str = SHIPPED_DIR) -> None:
    """Copy the shipped toy base model to ``out_dir`` (``toy.rebuild: false``;
    the rule that runs only this never versions the pretraining code)."""
    shipped_dir = Path(shipped_dir)
    check_base_model(shipped_dir)  # names the missing file before copying
    with atomic_path(out_dir, is_dir=True) as tmp:
        for f in shipped_dir.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
    check_base_model(out_dir)


def materialise_base_model(
    out_dir: Path | str, toy_cfg: dict, shipped_dir: Path | str = SHIPPED_DIR
) -> None:
    """Put the toy base model in ``out_dir``: copy the shipped one or rebuild it."""
    if toy_cfg["rebuild"]:
        build_base_model(out_dir, toy_cfg)
        check_base_model(out_dir)
    else:
        copy_base_model(out_dir, shipped_dir)


def benchmark_frame_of(toy_cfg: dict, name: str) -> pl.DataFrame:
    """The ``toy.benchmarks`` entry ``name`` as a frame in the normalised schema."""
    benchmarks = toy_cfg["benchmarks"]
    if name not in benchmarks:
        raise KeyError(
            f"toy benchmark {name!r} is not in toy.benchmarks "
            f"(configured: {', '.join(benchmarks) or 'none'})"
        )
    spec = benchmarks[name]
    return tasks.benchmark_frame(name, spec["digits"], spec["n"], toy_cfg["seed"])


def benchmark_frames(toy_cfg: dict) -> dict[str, pl.DataFrame]:
    """Every ``toy.benchmarks`` entry as a frame in the normalised schema."""
    return {name: benchmark_frame_of(toy_cfg, name) for name in toy_cfg["benchmarks"]}


def sft_set(toy_cfg: dict) -> pl.DataFrame:
    """The toy SFT set (s1K-1.1 columns), outside the held-out pool that every
    benchmark draws from (``tasks.held_out``): it does not depend on
    ``toy.benchmarks``, so adding a benchmark retrains nothing."""
    return tasks.sft_frame(
        toy_cfg["n_sft"],
        list(toy_cfg["sft_digits"]),
        toy_cfg["seed"],
        toy_cfg["slip_rate"],
        toy_cfg["carry_slip_rate"],
    )


def toy_section(config_path: Path | str) -> dict:
    """The ``toy`` section of a config file with the schema's defaults filled
    in and validated, as the workflow's rule gets it (the second pretraining
    stage, for one, is a schema default)."""
    import yaml

    from lorascope.core.config import validate

    with open(config_path) as f:
        config = yaml.safe_load(f) or {}
    return validate(config)["toy"]


def main(argv: list[str] | None = None) -> None:
    """Rebuild the shipped weights: ``python -m lorascope.toy.world OUT_DIR``."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    toy_cfg = toy_section(args.config)
    print(json.dumps(build_base_model(args.out_dir, toy_cfg, args.device), indent=2))


if __name__ == "__main__":
    main()
