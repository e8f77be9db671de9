"""Benchmark: host RAM per training rank while the base model loads.

Every FSDP rank runs `lorascope.train.trainer.load_for_training`. With
transformers 5.x, `from_pretrained` maps the safetensors file and keeps the
weights as views of that mapping when the load dtype equals the file's
dtype: the ranks of one node then share a single copy in the page cache
(file-backed RSS), and each rank's private (anonymous) memory stays small.
When the dtypes differ, every rank converts into private memory: N copies.

This runs `--ranks` processes that load one small Qwen2 checkpoint (saved in
bfloat16, as Qwen2.5's are) with `load_for_training`, touch every weight (as
FSDP's sharding does), and print per-rank anonymous and file-backed peak RSS
for the matching dtype (the paper's setting: model.dtype bfloat16) and for a
mismatched one (float32), plus the ratio of private memory between them.

    .venv/bin/python bench/bench_train_memory.py [--hidden 1024 --layers 8]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def rss_mib() -> dict[str, int]:
    fields = ("RssAnon", "RssFile", "VmHWM")
    lines = Path("/proc/self/status").read_text().splitlines()
    return {
        line.split(":")[0]: int(line.split()[1]) // 1024
        for line in lines
        if line.startswith(fields)
    }


def rank_main(model_dir: str, dtype: str, queue) -> None:
    import torch

    from lorascope.train.trainer import load_for_training

    class Args:  # the Trainer's arguments, reduced to what loading touches
        device = torch.device("cpu")

    before = rss_mib()
    model = load_for_training(
        model_dir,
        {"dtype": dtype, "attn_implementation": "sdpa", "revision": None},
        Args(),
    )
    with torch.no_grad():
        total = sum(float(p.float().sum()) for p in model.parameters())
    after = rss_mib()
    queue.put((dtype, before, after, total))


def build(model_dir: Path, hidden: int, layers: int) -> float:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=int(2.75 * hidden),
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
    )
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters()) * 2 / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--ranks", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        size = build(Path(tmp), a.hidden, a.layers)
        print(f"checkpoint: {size:.0f} MiB of bfloat16 weights, {a.ranks} ranks")
        anon = {}
        ctx = mp.get_context("spawn")
        for dtype in ("bfloat16", "float32"):
            queue = ctx.Queue()
            procs = [
                ctx.Process(target=rank_main, args=(tmp, dtype, queue))
                for _ in range(a.ranks)
            ]
            for proc in procs:
                proc.start()
            results = [queue.get() for _ in procs]
            for proc in procs:
                proc.join()
            for rank, (_, before, after, _) in enumerate(results):
                print(
                    f"load dtype {dtype:8s} rank {rank}: private (anon) "
                    f"{after['RssAnon'] - before['RssAnon']:5d} MiB, shared "
                    f"(file) {after['RssFile'] - before['RssFile']:5d} MiB, "
                    f"peak RSS {after['VmHWM']} MiB"
                )
            anon[dtype] = sum(r[2]["RssAnon"] - r[1]["RssAnon"] for r in results)
        ratio = anon["float32"] / max(anon["bfloat16"], 1)
        print(
            f"private memory, all ranks: matching dtype {anon['bfloat16']} MiB, "
            f"converting dtype {anon['float32']} MiB (ratio {ratio:.1f}x)"
        )


if __name__ == "__main__":
    main()
