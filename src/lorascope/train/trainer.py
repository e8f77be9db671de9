"""Rank-1 LoRA and full fine-tune training with TRL's SFTTrainer.

Used by rules `train_rank1` and `train_full` through the command line below,
so that the same entry point runs as one process on a CPU or under
`accelerate launch` with FSDP on a multi-GPU node. The SFT set arrives
pre-tokenised with `labels` (-100 outside the assistant turn), which TRL uses
as is: s1's assistant-only loss with any tokenizer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Literal

import polars as pl

from lorascope.core.components import target_modules_problem
from lorascope.core.config import write_provenance
from lorascope.core.io import sha256_file, write_json
from lorascope.core.models import (
    load_causal_lm,
    load_tokenizer,
    require_attention_kernel,
)
from lorascope.core.processes import run_alive, stop_when_snakemake_dies
from lorascope.core.runtime import resolve_device, seed_everything, start_gpu_job
from lorascope.hub.fetch import read_snapshot
from lorascope.train.chunks import LengthChunkedSteps
from lorascope.train.steps import (
    STEPS_DIR,
    keep_steps_callback,
    steps_problem,
    training_steps,
)

log = logging.getLogger(__name__)
Variant = Literal["rank1", "full"]
BASE_FILE = "BASE.json"  # the hub base a model was trained from


def name_hub_base(out: Path, base_path: str) -> dict | None:
    """Name a prefetched base by hub id and commit in the trained artifact.

    PEFT records the path the base was loaded from as the adapter's
    `base_model_name_or_path`; for a hub snapshot (`hub/model/Org--Name@main`)
    that path means nothing elsewhere and fails the base check of an import.
    The adapter names the hub id instead, with the commit `main` resolved to
    as its `revision` (PEFT's field for the base's version), and BASE.json
    beside the weights keeps the snapshot's record (endpoint included).
    A local base of the user's or the toy model is left as loaded."""
    record = read_snapshot(base_path)
    if record is None:
        return None
    from peft.utils import CONFIG_NAME  # adapter_config.json

    base = {k: record.get(k) for k in ("repo_id", "revision", "commit", "endpoint")}
    config = out / CONFIG_NAME
    if config.is_file():
        cfg = json.loads(config.read_text())
        cfg.update(base_model_name_or_path=base["repo_id"], revision=base["commit"])
        config.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    write_json(base, out / BASE_FILE)
    return base


def lora_config(lora: dict):
    from peft import LoraConfig

    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        use_rslora=lora["use_rslora"],
        lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )


def sft_config(out_dir: Path, train_cfg: dict, variant: Variant, seed: int, device):
    """Every SFTConfig field that matters is set from config explicitly: TRL's
    defaults differ from TrainingArguments' (bf16, gradient checkpointing,
    max_length 1024)."""
    from trl import SFTConfig

    hp = train_cfg[variant]
    return SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        learning_rate=hp["learning_rate"],
        num_train_epochs=hp["epochs"],
        max_steps=hp["max_steps"],
        per_device_train_batch_size=hp["per_device_batch_size"],
        gradient_accumulation_steps=hp["gradient_accumulation_steps"],
        warmup_steps=hp["warmup_ratio"],  # a float < 1 is a ratio in transformers 5
        weight_decay=hp["weight_decay"],
        adam_beta1=hp["adam_beta1"],
        adam_beta2=hp["adam_beta2"],
        lr_scheduler_type=hp["lr_scheduler"],
        max_grad_norm=hp["max_grad_norm"],
        bf16=train_cfg["bf16"],
        fp16=False,
        gradient_checkpointing=train_cfg["gradient_checkpointing"],
        max_length=None,  # sequences were truncated/skipped by the data stage
        packing=False,
        save_strategy="steps",
        save_steps=train_cfg["save_steps"],
        save_total_limit=2,
        logging_steps=train_cfg["logging_steps"],
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=device.type == "cpu",
        dataloader_num_workers=0,
        remove_unused_columns=True,
        disable_tqdm=False,
    )


def load_for_training(base_path: str, model_cfg: dict, args):
    """The base model, loaded so that FSDP ranks do not each hold a copy.

    Under `accelerate launch` with FSDP and `fsdp_cpu_ram_efficient_loading`,
    transformers keeps the weights on local rank 0 only (the other ranks
    receive their shards from it), but it can only tell the ranks apart once
    the process group exists. So the Trainer's own distributed setup
    (`args.device` creates it, with the backend the arguments choose) runs
    before the model is loaded. Outside a launcher it only picks the device.
    """
    args.device  # noqa: B018 (the property sets up the process group)
    return load_causal_lm(
        base_path,
        dtype=model_cfg["dtype"],
        attn_implementation=model_cfg["attn_implementation"],
        device=None,  # the Trainer (or FSDP) moves it to its device(s)
        revision=model_cfg["revision"],
    )


def load_sft(sft_parquet: str):
    from datasets import Dataset

    df = pl.read_parquet(sft_parquet, columns=["input_ids", "labels"])
    return Dataset.from_polars(df)


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest checkpoint that was written to the end, or None.

    The Trainer writes a checkpoint in place (weights, optimizer, scheduler,
    RNG, then trainer_state.json last), so a job killed mid-save leaves a
    partial `checkpoint-N`; resuming from it fails. Skip those.
    """
    if not checkpoint_dir.is_dir():
        return None
    found = [
        (int(p.name.split("-")[1]), p)
        for p in checkpoint_dir.glob("checkpoint-*")
        if p.name.split("-")[1].isdigit()
    ]
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            log.warning("ignoring incomplete checkpoint %s", path)
            continue
        return str(path)
    return None


def discard_stale_checkpoints(checkpoint_dir: Path, fingerprint: dict) -> None:
    """Checkpoints resume only the exact run that wrote them.

    A rerun after a config change (or new data) must start afresh, not resume
    a checkpoint of other hyperparameters; the fingerprint beside the
    checkpoints says which run they belong to.
    """
    stamp = checkpoint_dir / "fingerprint.json"
    if checkpoint_dir.is_dir():
        try:
            same = json.loads(stamp.read_text()) == fingerprint
        except (OSError, ValueError):
            same = False
        if not same:
            log.info("discarding checkpoints of a different run in %s", checkpoint_dir)
            shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(fingerprint, sort_keys=True))


def train(
    variant: Variant,
    base_path: str,
    sft_parquet: str,
    out_dir: str | Path,
    config: dict,
) -> Path:
    """Train and write `out_dir/adapter` (rank1) or `out_dir/model` (full).

    Resumes from the newest checkpoint in `out_dir/checkpoints` if one exists.
    Returns the final artifact's path.
    """
    from trl import SFTTrainer

    class Trainer(LengthChunkedSteps, SFTTrainer):
        length_chunks = config["train"]["length_chunks"]

    out_dir = Path(out_dir)
    train_cfg, model_cfg = config["train"], config["model"]
    require_attention_kernel(model_cfg["attn_implementation"])  # before any work
    device = resolve_device(config["device"])
    seed_everything(config["seed"])
    tokenizer = load_tokenizer(base_path, model_cfg["revision"])
    args = sft_config(out_dir, train_cfg, variant, config["seed"], device)
    model = load_for_training(base_path, model_cfg, args)
    model.config.use_cache = False
    if variant == "rank1":  # before anything is written (also checked before any job)
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = train_cfg["lora"]["target_modules"]
        problem = target_modules_problem(names, targets, base_path)
        if problem:
            raise ValueError(problem)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=load_sft(sft_parquet),
        processing_class=tokenizer,
        peft_config=lora_config(train_cfg["lora"]) if variant == "rank1" else None,
    )
    keep = (config.get("sweep") or {}).get("checkpoints") or []
    if keep:  # before any step (the preflight checks it where it can)
        total = training_steps(
            len(trainer.train_dataset), train_cfg[variant], args.world_size
        )
        problem = steps_problem(keep, total, f"{len(trainer.train_dataset)} examples")
        if problem:
            raise ValueError(problem)
        trainer.add_callback(keep_steps_callback(trainer, keep, Path(args.output_dir)))
    fingerprint = dict(
        variant=variant,
        base=base_path,
        sft_sha256=sha256_file(sft_parquet),
        config=config,
    )
    if trainer.is_world_process_zero():
        discard_stale_checkpoints(Path(args.output_dir), fingerprint)
    trainer.accelerator.wait_for_everyone()
    last = last_complete_checkpoint(Path(args.output_dir))
    if last:
        log.info("resuming from checkpoint %s", last)
    trainer.train(resume_from_checkpoint=last)

    final = out_dir / ("adapter" if variant == "rank1" else "model")
    partial = out_dir / f".{final.name}.partial"
    if trainer.is_fsdp_enabled:
        # Checkpoints are sharded (workflow/accelerate/fsdp.yaml): each rank
        # writes its shard of the trainable parameters, and no checkpoint
        # gathers the frozen base. The final artifact is a plain PEFT/HF dir,
        # so it is gathered once, here.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(partial))  # every rank: FSDP gathers the weights here
    if trainer.is_world_process_zero():
        write_provenance(partial, config)
        name_hub_base(partial, base_path)
        if keep:  # the adapters saved on the way (sweep.checkpoints)
            shutil.copytree(Path(args.output_dir) / STEPS_DIR, partial / STEPS_DIR)
            for step_dir in (partial / STEPS_DIR).iterdir():
                name_hub_base(step_dir, base_path)
        with open(partial / "train_log.jsonl", "w") as f:
            for row in trainer.state.log_history:
                f.write(json.dumps(row) + "\n")
        if not run_alive():  # nothing would record it (core/processes.py)
            raise RuntimeError(f"the snakemake run is gone: not writing {final}")
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)  # the finished artifact appears in one step
        log.info("wrote %s", final)
    return final


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="train the rank-1 LoRA or the full FT")
    p.add_argument("--variant", choices=["rank1", "full"], required=True)
    p.add_argument("--base", required=True, help="base model dir or hub id")
    p.add_argument("--sft", required=True, help="data/sft.parquet")
    p.add_argument("--out", required=True, help="train/{variant} dir")
    p.add_argument("--config", required=True, help="resolved config as JSON")
    p.add_argument("--gpus", type=int, default=0, help="GPUs the job was given")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stop_when_snakemake_dies()
    start_gpu_job(rule=f"train_{a.variant}", gpus=a.gpus)
    train(a.variant, a.base, a.sft, a.out, json.loads(a.config))


if __name__ == "__main__":
    main()
