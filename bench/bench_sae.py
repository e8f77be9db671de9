"""SAE training throughput: SAELens BatchTopK trainer vs a plain torch loop.

Usage: python bench/bench_sae.py [--device cpu|cuda] [--steps N] [--shapes ...]

For each shape (embedded 28 -> 224 at batch 512, paper 448 -> 3584 at batch
4096) it times `lorascope.sae.training.train_sae` (SAELens SAETrainer +
BatchTopKTrainingSAE, with its aux loss and bookkeeping) and, in the same run,
a minimal BatchTopK step written here (encode, batch top-k, decode, MSE,
backward, Adam): the baseline the ratio is against. Best of interleaved
rounds, since the machine may be shared. Prints samples/s.
"""

from __future__ import annotations

import argparse
import time

import torch

from lorascope.sae.config import SaeConfig
from lorascope.sae.training import train_sae

SHAPES = {"embedded": (28, 8, 4, 512), "paper": (448, 8, 16, 4096)}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def raw_batchtopk(x_BD: torch.Tensor, d_sae: int, k: int):
    """A `run(n_steps) -> seconds` for a plain BatchTopK SAE (no aux, no stats)."""
    d, dev = x_BD.shape[1], x_BD.device
    W_dec = torch.nn.Parameter(torch.randn(d_sae, d, device=dev) * 0.1 / d**0.5)
    W_enc = torch.nn.Parameter(W_dec.detach().T.contiguous())
    b_enc = torch.nn.Parameter(torch.zeros(d_sae, device=dev))
    b_dec = torch.nn.Parameter(torch.zeros(d, device=dev))
    opt = torch.optim.Adam([W_dec, W_enc, b_enc, b_dec], lr=3e-4)
    n_keep = k * x_BD.shape[0]

    def step() -> None:
        pre_BF = ((x_BD - b_dec) @ W_enc + b_enc).relu()
        top = pre_BF.flatten().topk(n_keep)
        acts_BF = torch.zeros_like(pre_BF).flatten()
        acts_BF = acts_BF.scatter(0, top.indices, top.values).view_as(pre_BF)
        loss = (acts_BF @ W_dec + b_dec - x_BD).pow(2).sum(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    def run(n_steps: int) -> float:
        sync(str(dev))
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step()
        sync(str(dev))
        return time.perf_counter() - t0

    return run


def saelens(x_BD: torch.Tensor, expansion: int, k: int, device: str):
    """A `run(n_steps) -> seconds` for `lorascope.sae.training.train_sae` (a fresh
    SAE and SAETrainer each call; their setup is small next to the steps)."""
    batch, d = x_BD.shape

    def batches():
        while True:
            yield x_BD

    def run(n_steps: int) -> float:
        cfg = SaeConfig(
            k=k, expansion=expansion, lr=3e-4, batch_size=batch, epochs=n_steps,
            device=device, log_every=10**9,
        )  # fmt: skip
        sync(device)
        t0 = time.perf_counter()
        train_sae(cfg, batches(), d, batch)
        sync(device)
        return time.perf_counter() - t0

    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3, help="best of, interleaved")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    args = ap.parse_args()
    print(f"device={args.device} torch threads={torch.get_num_threads()}")
    for name in args.shapes:
        d, expansion, k, batch = SHAPES[name]
        x_BD = torch.randn(batch, d, device=args.device)
        runs = {
            "plain": raw_batchtopk(x_BD, d * expansion, k),
            "saelens": saelens(x_BD, expansion, k, args.device),
        }
        best = dict.fromkeys(runs, float("inf"))
        for run in runs.values():
            run(1)  # warm-up: allocations, kernels
        for _ in range(args.rounds):  # interleaved: both see the same machine load
            for key, run in runs.items():
                best[key] = min(best[key], run(args.steps) / args.steps)
        print(
            f"{name:9s} {d}->{d * expansion} batch {batch} k {k}: "
            f"SAELens {batch / best['saelens']:12,.0f} samples/s | plain torch "
            f"{batch / best['plain']:12,.0f} samples/s | SAELens/plain = "
            f"{best['plain'] / best['saelens']:.2f}x"
        )


if __name__ == "__main__":
    main()
