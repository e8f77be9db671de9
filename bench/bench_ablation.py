"""Benchmark: the KL ablation sweep (layers + components + groups) on CPU.

Compares `lorascope.ablation.kl.ablation_kl` (mask hooks, variants batched, prefix
reuse) with the naive way (zero lora_B, one full forward per ablation) on the
same random model and sequences, checks both give the same KL, and prints the
time ratio (target <= 0.5). Shapes: `toy` (the embedded toy model's size) and
`larger` (a randomly initialised deeper, wider Qwen2).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ablation.py [--shape toy]

On CPU, batching variants gains little, so the ratio approaches the prefix-reuse
bound: recomputed layers / all layers = (N + 1) / (2N) for N layers when
ablations are spread evenly over layers, plus the two group ablations that
start at layer 0 (toy N = 4: 0.65; N = 12: 0.56; the paper's N = 64: 0.51),
a little less since MLP-only ablations skip their layer's attention. On a GPU
the batched variants add the real gain (`--device cuda`).
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM

from lorascope.ablation.kl import ablation_kl, build_ablations, naive_ablation_kl
from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.core.components import lora_modules, table_from_modules

SHAPES = {
    # hidden, layers, heads, kv heads, intermediate, vocab, seq len, sequences
    "toy": (128, 4, 4, 4, 512, 104, 256, 4),
    "larger": (384, 12, 6, 2, 1024, 4096, 128, 2),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(shape: str, device: str = "cpu"):
    hidden, n_layers, heads, kv, inter, vocab, seq_len, n_seq = SHAPES[shape]
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        max_position_embeddings=4096,
    )
    lora = LoraConfig(
        r=1,
        lora_alpha=16,
        use_rslora=True,
        target_modules=TARGETS,
        init_lora_weights=False,
    )
    model = get_peft_model(Qwen2ForCausalLM(cfg).eval(), lora).eval().to(device)
    seqs = []
    for _ in range(n_seq):
        ids_T = torch.randint(0, vocab, (seq_len,))
        scope_T = torch.arange(seq_len) < seq_len - 1
        seqs.append((ids_T, scope_T))
    return model, seqs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    parser.add_argument("--variants-per-forward", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu (the target) or cuda")
    args = parser.parse_args()
    for shape in SHAPES if args.shape == "all" else [args.shape]:
        model, seqs = build(shape, args.device)
        # Warm-up (allocator, kernels) so neither side pays first-call costs.
        naive_ablation_kl(model, lora_layers(model), [], seqs[:1])
        table = table_from_modules([m for m, _ in lora_modules(model)])
        ablations = build_ablations(table)
        layers = lora_layers(model)
        # CPU time of this process (one thread), best of `repeats`, the two
        # alternating: wall time on a shared machine measures the neighbours.
        t_fast = t_naive = float("inf")
        for _ in range(args.repeats):
            with ScalarControl(layers) as control:
                t0 = time.process_time()
                fast_AS, _, _ = ablation_kl(
                    model,
                    control,
                    ablations,
                    seqs,
                    variants_per_forward=args.variants_per_forward,
                )
                t_fast = min(t_fast, time.process_time() - t0)
            t0 = time.process_time()
            naive_AS = naive_ablation_kl(model, layers, ablations, seqs)
            t_naive = min(t_naive, time.process_time() - t0)
        torch.testing.assert_close(fast_AS, naive_AS, rtol=1e-3, atol=1e-6)
        print(
            f"{shape} ({args.device}): {len(ablations)} ablations x {len(seqs)} "
            f"sequences of {len(seqs[0][0])} tokens; best of {args.repeats}: "
            f"fast {t_fast:.2f}s, naive {t_naive:.2f}s, "
            f"ratio fast/naive = {t_fast / t_naive:.3f} (target <= 0.5); "
            f"max |diff| = {abs(fast_AS - naive_AS).max():.2e}"
        )


if __name__ == "__main__":
    main()
