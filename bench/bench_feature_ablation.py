"""Benchmark: feature-ablation KL for every SAE feature (rule `feature_ablation`).

Compares `lorascope.causal.feature_kl.feature_ablation_kl` (frozen scalar
replacement through hooks, variants batched, prefix reuse from each feature's
first decoder layer, no forward for a feature that does not fire in a
sequence) with the naive way (`naive_feature_kl`: one full forward per
feature and sequence with the edited scalars) on the same random model, SAE
and sequences; checks the KLs agree and prints the time ratio.

Then estimates the cost at the paper's shape (Qwen2.5-32B: 64 layers,
hidden 5120, MLP 27648, vocab 152064; 3584 latents x 16 sequences x 2048
tokens) from a *measured* forward of one paper-shape decoder layer and the
unembedding on this machine (CPU, float32, a few tokens: FLOP/s measured),
and prints the GPU time at an assumed sustained throughput (`--gpu-tflops`,
stated in the output; no GPU is measured here). Upper bound: every feature
fires in every sequence and its decoder touches layer 0 (dense decoder rows),
so prefix reuse saves nothing.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_feature_ablation.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_ablation import build
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2RotaryEmbedding,
)

from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.causal.feature_kl import SaeMap, feature_ablation_kl, naive_feature_kl
from lorascope.core.components import lora_modules, table_from_modules

PAPER = dict(layers=64, hidden=5120, inter=27648, heads=40, kv=8, vocab=152064)
PAPER_RUN = dict(latents=3584, sequences=16, tokens=2048)


def random_sae(d_in: int, d_sae: int, density: float, seed: int = 0) -> JumpReLUSAE:
    """A JumpReLU SAE whose latents fire on about `density` of the tokens."""
    torch.manual_seed(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.normal_(0, 1 / d_in**0.5)
        sae.W_dec.normal_(0, 0.3)
        sae.b_dec.zero_()
        # pre-activations are ~N(0, |x|^2/d_in); threshold at that quantile
        sae.threshold.fill_(float(torch.distributions.Normal(0, 1).icdf(
            torch.tensor(1 - density))))  # fmt: skip
    return sae


@torch.no_grad()
def paper_flops_per_second(tokens: int) -> tuple[float, float, float]:
    """Measured CPU FLOP/s of one paper-shape layer + unembedding, and the
    FLOPs per token of a layer and of the unembedding."""
    p = PAPER
    cfg = Qwen2Config(
        hidden_size=p["hidden"], intermediate_size=p["inter"],
        num_attention_heads=p["heads"], num_key_value_heads=p["kv"],
        num_hidden_layers=1, vocab_size=p["vocab"],
    )  # fmt: skip
    layer = Qwen2DecoderLayer(cfg, 0).eval()
    head = torch.nn.Linear(p["hidden"], p["vocab"], bias=False)
    n_layer = sum(x.numel() for x in layer.parameters())
    flops_layer, flops_head = 2 * n_layer, 2 * head.weight.numel()
    x = torch.randn(1, tokens, p["hidden"])
    pos = torch.arange(tokens)[None]
    emb = Qwen2RotaryEmbedding(cfg)(x, pos)
    layer(x, position_embeddings=emb)  # warm-up
    t0 = time.process_time()
    layer(x, position_embeddings=emb)
    torch.log_softmax(head(x), -1)
    dt = time.process_time() - t0
    return tokens * (flops_layer + flops_head) / dt, flops_layer, flops_head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="toy", choices=["toy", "larger"])
    parser.add_argument("--expansion", type=int, default=8, help="d_sae / components")
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--variants-per-forward", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--gpu-tflops", type=float, default=400.0)
    parser.add_argument("--paper-tokens", type=int, default=16)
    args = parser.parse_args()
    model, seqs = build(args.shape)
    model = model.double()
    table = table_from_modules([m for m, _ in lora_modules(model)])
    d_sae = args.expansion * table.height
    sae_map = SaeMap(
        random_sae(table.height, d_sae, args.density).double(), torch.float64
    )
    remove_GF = np.eye(d_sae, dtype=bool)
    t_fast = t_naive = float("inf")
    for _ in range(args.repeats):
        with ScalarControl(lora_layers(model)) as control:
            t0 = time.process_time()
            fast = feature_ablation_kl(
                model, control, sae_map, table, remove_GF, seqs,
                variants_per_forward=args.variants_per_forward,
            )  # fmt: skip
            t_fast = min(t_fast, time.process_time() - t0)
            t0 = time.process_time()
            naive_floor, naive_full = naive_feature_kl(
                model, control, sae_map, remove_GF, seqs
            )
            t_naive = min(t_naive, time.process_time() - t0)
    diff = max(
        abs(fast.kl_floor_GS - naive_floor).max(),
        abs(fast.kl_full_GS - naive_full).max(),
    )
    torch.testing.assert_close(fast.kl_full_GS, naive_full, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(fast.kl_floor_GS, naive_floor, rtol=1e-9, atol=1e-12)
    fired = (fast.kl_floor_GS > 0).mean()
    print(
        f"{args.shape} (cpu, float64): {d_sae} latents x {len(seqs)} sequences of "
        f"{len(seqs[0][0])} tokens, {fired:.0%} of (latent, sequence) pairs edit "
        f"something; best of {args.repeats}: batched {t_fast:.2f}s, naive "
        f"{t_naive:.2f}s, ratio batched/naive = {t_fast / t_naive:.3f}; "
        f"max |KL diff| = {diff:.2e}; floor KL(full || recon) = "
        f"{fast.floor_S.mean():.3g}"
    )
    flops_s, f_layer, f_head = paper_flops_per_second(args.paper_tokens)
    r = PAPER_RUN
    per_variant_token = PAPER["layers"] * f_layer + f_head
    total = r["latents"] * r["sequences"] * r["tokens"] * per_variant_token
    print(
        f"paper shape: {f_layer / 1e9:.2f} GFLOP/token per layer, unembedding "
        f"{f_head / 1e9:.2f} GFLOP/token; {r['latents']} latents x {r['sequences']} "
        f"x {r['tokens']} tokens, every feature rerun from layer 0 (upper bound) = "
        f"{total / 1e18:.1f} EFLOP (attention's T^2 term left out)"
    )
    print(
        f"  measured here (cpu float32, {args.paper_tokens} tokens): "
        f"{flops_s / 1e9:.1f} GFLOP/s -> {total / flops_s / 86400:.0f} CPU-days; "
        f"one GPU at an assumed {args.gpu_tflops:g} TFLOP/s sustained (bf16): "
        f"{total / (args.gpu_tflops * 1e12) / 3600:.1f} h"
    )


if __name__ == "__main__":
    main()
