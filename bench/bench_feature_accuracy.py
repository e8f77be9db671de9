"""Benchmark: what removing an SAE feature during generation costs (rule
`feature_accuracy`).

An SAE variant runs the unedited decoder first on every step (its own KV
cache) to read the scalars it encodes, then the edited decoder: two decoder
passes per token, plus the SAE's encode/decode. This times greedy generation
of the same prompts three ways on one random model in the same run and
prints the ratios against plain generation (the LoRA, no hook):

- `component`: a component's scalar zeroed through the mask (one pass);
- `sae`: one SAE latent removed through `CleanScalars` (two passes).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_feature_accuracy.py
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_ablation import SHAPES, build
from bench_feature_ablation import random_sae

from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.causal.feature_accuracy import CleanScalars, sae_edit
from lorascope.causal.feature_kl import SaeMap


@torch.no_grad()
def generate(model, ids_BT, new_tokens: int) -> torch.Tensor:
    return model.generate(
        input_ids=ids_BT,
        attention_mask=torch.ones_like(ids_BT),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="toy")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, _ = build(args.shape)
    vocab = model.config.vocab_size
    ids_BT = torch.randint(1, vocab, (args.batch, args.prompt_tokens))
    with ScalarControl(lora_layers(model)) as control:
        n_comp = control.n_components
        sae_map = SaeMap(random_sae(n_comp, 8 * n_comp, density=0.05))
        plain = timed(lambda: generate(model, ids_BT, args.new_tokens), args.repeats)

        def component():
            control.mult_VC = torch.ones(1, n_comp)
            control.mult_VC[0, 0] = 0.0
            try:
                generate(model, ids_BT, args.new_tokens)
            finally:
                control.clear()

        def sae():
            with CleanScalars(model, control, sae_edit(sae_map, 0)):
                generate(model, ids_BT, args.new_tokens)

        comp_t, sae_t = timed(component, args.repeats), timed(sae, args.repeats)
    tokens = args.batch * args.new_tokens
    print(
        f"shape {args.shape}, batch {args.batch}, {args.prompt_tokens} prompt + "
        f"{args.new_tokens} new tokens, best of {args.repeats}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    for name, t in (("plain", plain), ("component", comp_t), ("sae", sae_t)):
        print(
            f"  {name:10s} {t:7.3f} s  {tokens / t:8.1f} tokens/s  "
            f"ratio to plain {t / plain:.2f}"
        )


if __name__ == "__main__":
    main()
