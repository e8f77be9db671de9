"""Stage train (workflow/rules/train.smk, rules `train_rank1`, `train_full`).

Consumes: `data/sft.parquet`, the base model.
Produces: `train/rank1/adapter/` (PEFT dir), `train/full/model/` (HF dir),
each with `resolved_config.yaml`, `versions.json`, `train_log.jsonl`.
The `components` rule of the same file uses `lorascope.core.components`.

- `trainer`: TRL SFTTrainer + PEFT, resumable checkpoints; the command line
  `python -m lorascope.train` (one process, or under `accelerate launch`).
- `chunks`: each step's batch forwarded in length-sorted chunks
  (`train.length_chunks`: the same loss, fewer padded tokens).
"""

__all__ = ["chunks", "trainer"]
