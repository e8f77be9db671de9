"""Adapters saved at chosen optimizer steps during training (sweep.checkpoints).

Used by `lorascope.train.trainer` (the callback) and, for the step count,
by `lorascope.workflow.preflight` before any job runs. Each saved adapter is
a complete PEFT dir at `<adapter>/steps/step-{N}`; rule sweep_checkpoint
copies it out as a sweep member of its own.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

__all__ = [
    "STEPS_DIR",
    "training_steps",
    "steps_problem",
    "keep_steps_callback",
    "export_step",
]

STEPS_DIR = "steps"  # inside the adapter dir (and the checkpoint dir while training)


def training_steps(n_examples: int, hp: dict, world_size: int = 1) -> int:
    """Optimizer steps of a training run, as transformers' Trainer counts them
    (set_initial_training_values): batches per epoch, accumulated steps per
    epoch rounded up, times the epochs rounded up; or `max_steps` when set."""
    if hp["max_steps"] > 0:
        return int(hp["max_steps"])
    batches = -(-n_examples // (hp["per_device_batch_size"] * world_size))
    per_epoch = max(-(-batches // hp["gradient_accumulation_steps"]), 1)
    return math.ceil(hp["epochs"] * per_epoch)


def steps_problem(keep: list[int], total: int, where: str) -> str | None:
    """The message for checkpoint steps beyond the training's last step."""
    late = sorted(s for s in keep if s > total)
    if not late:
        return None
    return (
        f"sweep.checkpoints: step(s) {late} are beyond the training's last step "
        f"{total} ({where}); a checkpoint must be at most that step"
    )


def keep_steps_callback(trainer, steps: list[int], checkpoint_dir: Path):
    """A TrainerCallback saving the adapter at each of `steps` into
    `<checkpoint_dir>/steps/step-{N}` (transformers imported here only: the
    preflight imports this module for the step count).

    Saved where the resumable checkpoints live, so a resumed run keeps the
    ones written before it was killed and a run of other settings discards
    them with the checkpoints (trainer.discard_stale_checkpoints)."""
    from transformers import TrainerCallback

    keep, where = set(steps), Path(checkpoint_dir) / STEPS_DIR

    class KeepSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step not in keep:
                return
            final = where / f"step-{state.global_step}"
            partial = where / f".step-{state.global_step}.partial"
            trainer.save_model(str(partial))  # every rank (FSDP gathers here)
            if trainer.is_world_process_zero():
                if final.exists():
                    shutil.rmtree(final)
                os.replace(partial, final)

    return KeepSteps()


# Beside the weights of the parent adapter, what a saved step lacks.
PROVENANCE = ("resolved_config.yaml", "versions.json")


def export_step(parent: str | Path, step: int, out: str | Path) -> Path:
    """The adapter `parent` saved at `step`, as a PEFT dir of its own at `out`
    (with the parent's provenance and STEP.json naming the step)."""
    parent, out = Path(parent), Path(out)
    source = parent / STEPS_DIR / f"step-{step}"
    if not (source / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{source}: no adapter saved at step {step} (the training of "
            f"{parent} saves the steps of sweep.checkpoints; rerun it)"
        )
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(source, partial)
    for name in PROVENANCE:
        if (parent / name).is_file():
            shutil.copy2(parent / name, partial / name)
    (partial / "STEP.json").write_text(f'{{"step": {int(step)}}}\n')
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return out
