"""Run the real training entry point (TRL SFTTrainer + PEFT rank-1) on a GPU.

Builds a randomly initialised model with a real Qwen2.5 shape (no download),
the toy SFT set, and trains for a few steps through `lorascope.train.trainer.train`,
then checks the adapter and prints seconds per step and tokens per second.
This is a smoke benchmark for a lent GPU; on CPU use `--shape tiny`.

    python bench/gpu_train_smoke.py --shape qwen0.5b --steps 20
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from lorascope.core.components import check_adapter  # noqa: E402
from lorascope.core.config import validate  # noqa: E402
from lorascope.core.io import write_parquet  # noqa: E402
from lorascope.data.sft import tokenise  # noqa: E402
from lorascope.toy.tasks import sft_frame  # noqa: E402
from lorascope.toy.tokenizer import build_tokenizer  # noqa: E402
from lorascope.train.trainer import train  # noqa: E402

SHAPES = {  # Qwen2.5 config values
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "qwen0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
    ),
    "qwen1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
    ),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="qwen0.5b", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rows", type=int, default=256)
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    tok = build_tokenizer()
    work = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        **SHAPES[a.shape],
    )
    Qwen2ForCausalLM(cfg).save_pretrained(work / "base")
    tok.save_pretrained(work / "base")
    config = validate(
        {
            "run": "smoke",
            "device": "cuda" if cuda else "cpu",
            "model": {"dtype": "bfloat16" if cuda else "float32"},
            "train": {
                "rank1": {
                    "max_steps": a.steps,
                    "per_device_batch_size": a.batch,
                    "gradient_accumulation_steps": 1,
                },
                "bf16": cuda,
                "save_steps": 10_000,
            },
        }
    )
    rows = datasets.Dataset.from_polars(
        sft_frame(a.rows, digits=[2, 3, 4], seed=0, slip_rate=0.3)
    )
    df, stats = tokenise(rows, tok, config["data"])
    write_parquet(df, work / "sft.parquet")
    t0 = time.perf_counter()
    out = train(
        "rank1",
        str(work / "base"),
        str(work / "sft.parquet"),
        work / "out",
        {k: config[k] for k in ("seed", "device", "model", "train")},
    )
    wall = time.perf_counter() - t0
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    final = next(r for r in log if "train_runtime" in r)
    mods = check_adapter(out, rank=1)
    tokens = a.steps * a.batch * stats["tokens"] / stats["kept"]
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if cuda else "cpu",
                "shape": a.shape,
                "params": sum(p.numel() for p in Qwen2ForCausalLM(cfg).parameters()),
                "lora_modules": len(mods),
                "steps": a.steps,
                "batch": a.batch,
                "train_runtime_s": final["train_runtime"],
                "s_per_step": final["train_runtime"] / a.steps,
                "tokens_per_s": tokens / final["train_runtime"],
                "wall_incl_load_s": wall,
                "loss_first_last": [log[0].get("loss"), log[-2].get("loss")],
                "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30
                if cuda
                else None,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
