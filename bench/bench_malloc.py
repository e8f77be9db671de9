"""Benchmark: glibc malloc's defaults vs the warm interpreter's settings
(lorascope.workflow.warm.server.tune_malloc) on two toy workloads.

Each workload runs in a fresh interpreter, as a job does: a greedy
generation (`--rows` prompts x `--new-tokens` tokens in one generate call,
a KV cache that grows every step) and training steps of the toy model's
shape at varying lengths (activations of a new size each step). Modes
alternate over `--repeats`; prints each mode's best user and system CPU
seconds, page faults, and the ratio of total CPU to the defaults'.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_malloc.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORKLOAD = r"""
import json, random, resource, sys
tune, kind = sys.argv[1] == "1", sys.argv[2]
rows, new = int(sys.argv[3]), int(sys.argv[4])
if tune:
    from lorascope.workflow.warm.server import tune_malloc
    assert tune_malloc()
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
torch.manual_seed(0)
torch.set_num_threads(1)
cfg = Qwen2Config(vocab_size=291, hidden_size=128, intermediate_size=512,
                  num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                  max_position_embeddings=1024, tie_word_embeddings=True)
model = Qwen2ForCausalLM(cfg)
before = resource.getrusage(resource.RUSAGE_SELF)
if kind == "generate":
    model.eval()
    ids = torch.randint(4, 291, (rows, 30))
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                       max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
else:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = random.Random(0)
    for _ in range(new):
        ids = torch.randint(4, 291, (rows, rng.randint(60, 200)))
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"user": after.ru_utime - before.ru_utime,
                  "sys": after.ru_stime - before.ru_stime,
                  "faults": after.ru_minflt - before.ru_minflt}))
"""


def run(tune: bool, kind: str, rows: int, new: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", WORKLOAD, str(int(tune)), kind, str(rows), str(new)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=160, help="generation batch")
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--train-rows", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    workloads = {
        "generate": (args.rows, args.new_tokens),
        "train": (args.train_rows, args.train_steps),
    }
    for kind, (rows, n) in workloads.items():
        best = {}
        for _ in range(args.repeats):
            for mode, tune in (("glibc defaults", False), ("tune_malloc", True)):
                r = run(tune, kind, rows, n)
                total = r["user"] + r["sys"]
                if mode not in best or total < best[mode]["user"] + best[mode]["sys"]:
                    best[mode] = r
        base = best["glibc defaults"]
        unit = "tokens" if kind == "generate" else "steps"
        print(f"{kind} ({rows} rows, {n} {unit})")
        for mode, r in best.items():
            ratio = (r["user"] + r["sys"]) / (base["user"] + base["sys"])
            print(f"  {mode:15s} user {r['user']:6.2f} s  sys {r['sys']:5.2f} s  "
                  f"faults {r['faults']:8d}  CPU {ratio:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
