"""Benchmark: batched vs one-at-a-time HF generation on the toy model's shape.

Times `lorascope.core.decoding.generate_hf` with `--batch-size` prompts per call
(left padding) against one prompt per call, on the same randomly initialised
toy-sized Qwen2 and the same toy benchmark prompts, checks that both give the
same completions, and prints tokens/s and the throughput ratio.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_generate.py [--device cuda]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from lorascope.core.decoding import build_prompts, generate_hf
from lorascope.toy.tasks import question_text, sample_pair
from lorascope.toy.tokenizer import build_tokenizer


def timed(model, tok, prompts, max_new, batch_size):
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = generate_hf(
        model,
        tok,
        prompts,
        max_new_tokens=max_new,
        batch_size=batch_size,
        progress=False,
    )
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return out, sum(c.n_generated_tokens for c in out) / seconds, seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32, help="prompts")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(  # the embedded toy model's shape (issue 2)
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(cfg).to(args.device).eval()
    rng = random.Random(0)
    problems = [question_text(*sample_pair(rng, 4), i % 3) for i in range(args.n)]
    prompts = build_prompts(tok, problems)

    timed(model, tok, prompts[:2], 4, 2)  # warm-up
    single, tps_single, s_single = timed(model, tok, prompts, args.max_new_tokens, 1)
    batched, tps_batched, s_batched = timed(
        model, tok, prompts, args.max_new_tokens, args.batch_size
    )
    same = sum(a == b for a, b in zip(single, batched, strict=True))
    print(f"device={args.device} prompts={args.n} max_new_tokens={args.max_new_tokens}")
    print(f"one at a time : {s_single:7.2f} s  {tps_single:9.1f} tokens/s")
    print(
        f"batch {args.batch_size:<7d} : {s_batched:7.2f} s  {tps_batched:9.1f} tokens/s"
    )
    print(f"identical completions: {same}/{args.n}")
    print(f"throughput ratio batched/single: {tps_batched / tps_single:.2f}x")


if __name__ == "__main__":
    main()
