"""Benchmark: packed and length-chunked training batches against padded ones, on CPU.

Issue 27 lists less padding as a lever for the embedded DAG: the toy's
training batches are padded to their longest sequence. TRL's padding-free
mode concatenates a batch into one row with `position_ids` restarting per
sequence; transformers then separates the sequences in sdpa's mask (only
without an attention mask and without a KV cache, as the SFT trainer runs).

Prints, on the toy base model and one batch of random sequences with the
toy's length spread:
- the largest |logit| difference between the padded and the packed forward
  (the two are the same computation when the packed mask is right), and the
  same with a KV cache, where the packed sequences attend across each other;
- the CPU seconds of one forward + backward each way (best of --reps,
  interleaved) and their ratio (packed / padded). Without a varlen attention
  kernel (flash-attn is GPU only) sdpa attends over the whole packed row, so
  packing pays on CPU only if that costs less than the padding it saves;
- the same for the batch forwarded in 2, 3 and 4 length-sorted chunks
  (`train.length_chunks`, lorascope.train.chunks: the same loss, each chunk
  padded to its own longest row), with each one's padding share.

    OMP_NUM_THREADS=1 python bench/bench_packing.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from lorascope.train.chunks import split_by_length

TOY = Path(__file__).resolve().parents[1] / "resources" / "toy" / "base_model"


def batch(vocab: int, n: int, lo: int, hi: int, seed: int):
    """n random sequences, lengths uniform in [lo, hi): padded and packed forms."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(lo, hi, (n,), generator=g).tolist()
    seqs = [torch.randint(5, vocab, (k,), generator=g) for k in lens]
    ids = torch.zeros(n, max(lens), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    packed = torch.cat(seqs)[None]
    pos = torch.cat([torch.arange(k) for k in lens])[None]
    return lens, (ids, mask), (packed, pos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)  # train.*.per_device_batch_size
    ap.add_argument("--min-len", type=int, default=60)
    ap.add_argument("--max-len", type=int, default=170)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        TOY, attn_implementation="sdpa", dtype=torch.float32
    )
    lens, (ids, mask), (packed, pos) = batch(
        model.config.vocab_size, args.batch, args.min_len, args.max_len, 0
    )

    model.eval()
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits
        flat = model(input_ids=packed, position_ids=pos, use_cache=False).logits
        cached = model(input_ids=packed, position_ids=pos, use_cache=True).logits
    starts = [0, *torch.tensor(lens).cumsum(0).tolist()]

    def worst(logits) -> float:
        return max(
            (padded[i, :n] - logits[0, starts[i] : starts[i] + n]).abs().max().item()
            for i, n in enumerate(lens)
        )

    print(f"padding share of the padded batch: {1 - sum(lens) / ids.numel():.3f}")
    print(f"max |logit diff| packed vs padded, no cache:  {worst(flat):.3g}")
    print(f"max |logit diff| packed vs padded, KV cache:  {worst(cached):.3g}")

    model.train()
    labels = ids.masked_fill(mask == 0, -100)

    def step_padded():
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()

    def step_packed():
        model(
            input_ids=packed, position_ids=pos, labels=packed, use_cache=False
        ).loss.backward()

    steps = {"padded": step_padded, "packed": step_packed}
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    n_items = int((labels[:, 1:] != -100).sum())  # as the Trainer counts them
    for chunks in (2, 3, 4):
        parts = split_by_length(inputs, chunks)
        pad = 1 - sum(lens) / sum(p["input_ids"].numel() for p in parts)
        name = f"{chunks} chunks (padding {pad:.3f})"

        def step_chunked(parts=parts):
            for part in parts:
                model(**part, num_items_in_batch=n_items).loss.backward()

        steps[name] = step_chunked
    best = dict.fromkeys(steps, float("inf"))
    for rep in range(args.reps + 1):
        for name, step in steps.items():
            model.zero_grad(set_to_none=True)
            t = time.process_time()
            step()
            if rep:  # round 0 warms up, uncounted
                best[name] = min(best[name], time.process_time() - t)
    print(f"fwd+bwd CPU s (best of {args.reps}), and / padded:")
    for name, seconds in best.items():
        print(f"  {name:28s} {seconds:.3f}  {seconds / best['padded']:.2f}")


if __name__ == "__main__":
    main()
