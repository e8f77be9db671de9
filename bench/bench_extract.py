"""Benchmark: cost of LoRA-scalar extraction relative to a plain LoRA forward.

For each model shape (the toy shape, and the Qwen2.5-0.5B config with random
weights) and the same batches, times (best of --reps, interleaved):

  fwd_full      plain LoRA forward of the CausalLM (logits included)
  fwd_backbone  plain LoRA forward of the decoder only (what extraction runs)
  extract       the shard pass for LoRA scalars: hooks into one device buffer,
                gather, host copy, streamed top-k + stats
                (lorascope.activations.extraction)
  extract+mlp   the same plus the MLP baseline (act_gate_up: a base-model pass)
  naive         per-module hook copying each lora_A output to the CPU and
                concatenating afterwards (the obvious implementation)

and prints ratios; the targets (issue 27): extract / fwd_backbone <= 1.05 at
the toy shape, <= 1.02 at the Qwen2.5-0.5B shape. On CPU each run is timed in
CPU seconds of this process (time.process_time: a neighbour's load on a
shared machine inflates wall time, much less CPU time), on CUDA in wall
seconds after a synchronize; the best of --reps, runs interleaved, and the
median of the per-rep ratios too. --only picks runs (the 0.5B shape takes
~15 s a forward on one CPU core). With --rss it also
runs the whole shard pass in subprocesses on 1x and 4x the data and prints
their peak RSS (should stay flat: one shard in memory at a time).

    OMP_NUM_THREADS=1 python bench/bench_extract.py --shapes toy qwen0.5b
    OMP_NUM_THREADS=1 python bench/bench_extract.py --only fwd_backbone extract
    python bench/bench_extract.py --device cuda --shapes qwen0.5b qwen7b --len 2048
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lorascope.activations.extraction import (
    ExtractSettings,
    extract_shard,
    extract_to_shards,
)
from lorascope.activations.hooks import LoraCapture, MlpCapture, make_batches, pad_batch
from lorascope.core.config import schema_defaults


def settings(**keys) -> ExtractSettings:
    """Extraction settings: the schema's `activations` defaults, then `keys`."""
    return ExtractSettings.from_config({**schema_defaults("activations"), **keys})


SHAPES = {
    "toy": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=4, vocab_size=512),
    "qwen0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                     num_attention_heads=14, num_key_value_heads=2,
                     vocab_size=151936),
    "qwen7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                   num_attention_heads=28, num_key_value_heads=4,
                   vocab_size=152064),
}  # fmt: skip
# (numerator, denominator, denominator multiple); the first is issue 27's.
RATIOS = [
    ("extract", "fwd_backbone", 1),
    ("extract", "fwd_full", 1),
    ("extract+mlp", "fwd_full", 2),
    ("naive", "extract", 1),
]
TARGETS_RATIO = {"toy": 1.05, "qwen0.5b": 1.02}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(shape: str, device: str, dtype: torch.dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(**SHAPES[shape], tie_word_embeddings=shape != "qwen7b")
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    lcfg = LoraConfig(r=1, lora_alpha=16, use_rslora=True, target_modules=TARGETS)
    peft_model = get_peft_model(model, lcfg).eval()
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    return peft_model


def sequences(n: int, length: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(length // 2, length + 1, (n,), generator=g).tolist()
    return [torch.randint(0, vocab, (k,), generator=g).tolist() for k in lens]


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def timings(model, seqs, cfg: ExtractSettings, device, reps: int, only=None) -> dict:
    batches = [
        pad_batch([seqs[i] for i in b], device)
        for b in make_batches([len(s) for s in seqs], cfg.batch_tokens)
    ]
    backbone = model.get_base_model().get_decoder()
    docs = list(range(len(seqs)))
    lora = LoraCapture(model)
    mlp = MlpCapture(model, cfg.mlp_neurons_per_layer, cfg.mlp_tensor)
    lora.remove()
    mlp.remove()

    def fwd(m):
        def run():
            for ids, mask in batches:
                m(input_ids=ids, attention_mask=mask.long(), use_cache=False)

        return run

    def extract(with_mlp):
        # The captures are made once per job (extract_to_shards), not per
        # shard: made outside the timed pass, as the job's cost per shard.
        holder = {}

        def setup():
            holder["cap"] = LoraCapture(model)
            holder["mcap"] = (
                MlpCapture(model, cfg.mlp_neurons_per_layer) if with_mlp else None
            )

        def teardown():
            holder.pop("cap").remove()
            if (mcap := holder.pop("mcap")) is not None:
                mcap.remove()

        def run():
            cap, mcap = holder["cap"], holder["mcap"]
            extract_shard(model, cap, mcap, seqs, docs, cfg, device, lambda n: 0)

        run.setup, run.teardown = setup, teardown
        return run

    def naive():
        store, handles = [], []
        for mod in lora.modules:
            handles.append(
                mod.register_forward_hook(
                    lambda m, i, o: store.append(o.detach().float().cpu())
                )
            )
        try:
            for ids, mask in batches:
                backbone(input_ids=ids, attention_mask=mask.long(), use_cache=False)
                n = len(store) // len(lora.modules)
                per_batch = store[-len(lora.modules) :] if n else []
                torch.cat(per_batch, dim=-1)[mask.cpu()]
        finally:
            for h in handles:
                h.remove()

    runs = {
        "fwd_full": fwd(model),
        "fwd_backbone": fwd(backbone),
        "extract": extract(False),
        "extract+mlp": extract(True),
        "naive": naive,
    }
    runs = {k: v for k, v in runs.items() if not only or k in only}
    clock = (
        time.process_time if torch.device(device).type == "cpu" else time.perf_counter
    )
    each = {k: [] for k in runs}
    nothing = lambda: None  # noqa: E731

    def timed(run) -> float:
        getattr(run, "setup", nothing)()
        try:
            sync(device)
            t0 = clock()
            run()
            sync(device)
            return clock() - t0
        finally:
            getattr(run, "teardown", nothing)()

    for run in runs.values():  # warm-up
        timed(run)
    for _ in range(reps):
        for name, run in runs.items():
            each[name].append(timed(run))
    return each


def long_sequence(model, shape: str, args) -> None:
    """Extraction (+ MLP baseline) of one --long-token sequence: time, memory."""
    seq = sequences(1, args.long, SHAPES[shape]["vocab_size"], seed=1)[0][: args.long]
    seq = seq + seq[: args.long - len(seq)]  # exactly --long tokens
    cfg = settings(batch_tokens=args.long, dtype="bfloat16")
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    cap, mcap = LoraCapture(model), MlpCapture(model, 60)
    try:
        sync(args.device)
        t0 = time.perf_counter()
        extract_shard(model, cap, mcap, [seq], [0], cfg, args.device, lambda n: 0)
        sync(args.device)
        dt = time.perf_counter() - t0
    finally:
        cap.remove()
        mcap.remove()
    mem = (
        f", peak GPU {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
        if cuda
        else ""
    )
    print(f"  one {len(seq)}-token sequence, extract+mlp: {dt:.2f} s{mem}")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_child(args) -> None:
    """Subprocess body: the whole shard pass over n docs; print peak RSS."""
    model = build(args.shape, args.device, getattr(torch, args.dtype))
    seqs = sequences(args.rss_child, args.len, SHAPES[args.shape]["vocab_size"])
    cfg = settings(
        batch_tokens=args.batch_tokens,
        shard_tokens=args.shard_tokens,
        dtype="bfloat16",
        mlp_neurons_per_layer=60,
    )
    # Reset the high-water mark after the model is built (Linux clear_refs),
    # so the peak below is the extraction's own, not the model init's.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    with tempfile.TemporaryDirectory() as d:
        extract_to_shards(model, seqs, list(range(len(seqs))), d, cfg, "b", args.device)
    peak = _status_kb("VmHWM")
    print(json.dumps({"before_mb": before / 1024, "peak_mb": peak / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["toy", "qwen0.5b"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--len", type=int, default=256)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    ap.add_argument("--shard-tokens", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument(
        "--only", nargs="+", help="these runs only (e.g. fwd_backbone extract)"
    )
    ap.add_argument("--rss", action="store_true", help="also peak RSS at 1x / 4x")
    ap.add_argument("--rss-docs", type=int, default=16)
    ap.add_argument("--rss-only", action="store_true", help="skip the timings")
    ap.add_argument("--long", type=int, default=0, help="one N-token sequence too")
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="toy", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        return rss_child(args)
    torch.set_grad_enabled(False)
    for shape in [] if args.rss_only else args.shapes:
        model = build(shape, args.device, getattr(torch, args.dtype))
        seqs = sequences(args.seqs, args.len, SHAPES[shape]["vocab_size"])
        cfg = settings(batch_tokens=args.batch_tokens, dtype="bfloat16",
                       mlp_neurons_per_layer=60)  # fmt: skip
        each = timings(model, seqs, cfg, args.device, args.reps, args.only)
        t = {k: min(v) for k, v in each.items()}
        n_tok = sum(map(len, seqs))
        unit = "CPU s" if args.device == "cpu" else "s"
        print(f"\n== {shape} on {args.device} ({args.dtype}): {len(seqs)} seqs, "
              f"{n_tok} tokens, best of {args.reps} ({unit})")  # fmt: skip
        for k, v in t.items():
            print(f"  {k:13s} {v:8.3f} {unit}  {n_tok / v:10.0f} tok/s")
        target = TARGETS_RATIO.get(shape)
        for a, b, mult in RATIOS:
            if a in t and b in t:
                med = statistics.median(
                    x / (mult * y) for x, y in zip(each[a], each[b], strict=True)
                )
                goal = (
                    f"  (target <= {target})"
                    if (a, b) == RATIOS[0][:2] and target
                    else ""
                )
                label = f"{a} / {'2 x ' if mult == 2 else ''}{b}"
                print(f"  {label:28s}  = {t[a] / (mult * t[b]):.3f} best, "
                      f"{med:.3f} median of reps{goal}")  # fmt: skip
        if args.long:
            long_sequence(model, shape, args)
        if args.device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"  peak GPU memory {peak:.1f} GiB")
            torch.cuda.reset_peak_memory_stats()
        del model
    if args.rss or args.rss_only:
        for mult in (1, 4):
            cmd = [sys.executable, __file__, "--rss-child", str(args.rss_docs * mult),
                   "--shape", args.shapes[0], "--device", args.device,
                   "--dtype", args.dtype, "--len", str(args.len),
                   "--batch-tokens", str(args.batch_tokens),
                   "--shard-tokens", str(args.shard_tokens)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  peak RSS during extraction, {args.shapes[0]} {mult}x data "
                  f"({args.rss_docs * mult} docs): {r['peak_mb']:.0f} MB "
                  f"(RSS before: {r['before_mb']:.0f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
