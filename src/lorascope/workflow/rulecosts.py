"""Per-rule formulas of the resource model (`lorascope.workflow.resources`):
one function per GPU rule of the paper's pipeline (those beyond it are in
`lorascope.workflow.beyondcosts`), named after it, taking a `Setting` and returning
one job's `Needs`. CPU rules that need more than the profile's defaults
have theirs in `lorascope.workflow.cpucosts`.

Memory is modelled per GPU: weights (params x bytes, sharded over FSDP
ranks), LoRA / optimizer states, activations (one layer's working set under
SDPA, checkpoints, logits) and KV caches (2 x layers x kv_heads x head_dim x
tokens x bytes x batch); vLLM takes its gpu_memory_utilization fraction of
every card. FLOPs: 2 x linear params x tokens plus attention
(`ModelShape.forward_flops` / `generate_flops`). Assumptions the config
cannot tell are constants here, stated where they are used.
"""

from __future__ import annotations

from lorascope.core.memory import GIB, fit_batch, generation_bytes
from lorascope.workflow.resources import (
    DECODE_MFU,
    Needs,
    Setting,
    runtime_minutes,
)

__all__ = ["ALIVE_FRACTION", "accuracy_memory", "problems"]

# Not in the config: mean tokens of one s1K-1.1 example (DeepSeek-R1 traces;
# capped by data.max_length), rows of s1K-1.1, prompt tokens of a benchmark
# problem in the chat template, SAE latents alive after training (paper:
# about 2000 of 3584).
MEAN_DOC_TOKENS = 10_000
SFT_ROWS = 1000
PROMPT_TOKENS = 300
ALIVE_FRACTION = 0.56
BENCH_ROWS = {"aime24": 30, "math500": 500, "gpqa_diamond": 198}
# CUDA context, cuBLAS workspace and allocator slack of any GPU job.
CUDA_OVERHEAD = 1.5 * GIB


def problems(config: dict, name: str, limit: int | None = None) -> int:
    rows = BENCH_ROWS.get(name, 500)
    for cap in (limit, config["eval"]["limit"]):
        rows = min(rows, cap) if cap else rows
    return rows


def _docs(s: Setting) -> tuple[int, int]:
    """(sequences, mean tokens) of the SFT set."""
    data = s.config["data"]
    n = data["limit"] or SFT_ROWS
    n = min(n, s.config["activations"]["n_docs"] or n)
    return n, min(MEAN_DOC_TOKENS, data["max_length"])


def _host(s: Setting, extra: float = 0.0) -> float:
    """Host RAM of a job that loads the weights: one copy is read from the
    safetensors files before it moves to the card, plus 16 GiB of Python,
    tokenizer and data."""
    return s.weight_bytes + 16 * GIB + extra


def _model_job(s: Setting, rule: str, act: float, flops: float, **kw) -> Needs:
    gpu = s.weight_bytes + s.lora_bytes + act + CUDA_OVERHEAD
    return Needs(rule, 1, gpu, _host(s), flops, **kw)


def _train(s: Setting, variant: str) -> Needs:
    c, shape, b = s.config["train"], s.shape, s.dtype_bytes
    t = c[variant]
    n = 1 if not c["fsdp_config"] else s.hw.gpus_per_node
    tokens = s.config["data"]["max_length"] * t["per_device_batch_size"]
    layer = 2 * shape.layer_linear_params * b  # all-gathered: current + prefetch
    if variant == "rank1":
        states = s.weight_bytes / n + s.lora_bytes * 4  # param, grad, Adam m, v
        passes = 3  # forward, recompute, input gradients (frozen base)
    else:
        states = shape.params * 16 / n  # fp32 master, grad, Adam m, v
        passes = 4  # forward, recompute, input and weight gradients
    if c["gradient_checkpointing"]:
        acts = shape.layers * tokens * shape.hidden * b
        acts += 2 * shape.layer_working_bytes(tokens, b)
    else:
        acts = shape.layers * shape.layer_working_bytes(tokens, b)
    logits = tokens * shape.vocab * (b + 4 + 4)  # bf16, fp32 upcast, its grad
    gpu = states + layer + acts + logits + CUDA_OVERHEAD
    docs, mean = _docs(s)
    flops = passes * shape.forward_flops(mean) * docs * t["epochs"]
    batch = n * t["per_device_batch_size"] * t["gradient_accumulation_steps"]
    notes = [f"{n} process(es), global batch {batch}"]
    host = s.weight_bytes + n * 16 * GIB
    return Needs(f"train_{variant}", n, gpu, host, flops, notes=notes)


def train_rank1(s: Setting) -> Needs:
    return _train(s, "rank1")


def train_full(s: Setting) -> Needs:
    return _train(s, "full")


def _hf_decode(s: Setting, n: int, batch: int, new: int, passes: int) -> float:
    """Bytes one card streams generating `n` prompts `passes` times with HF
    generate: per step the weights and the batch's KV cache (half full on
    average)."""
    kv = s.shape.kv_bytes(PROMPT_TOKENS + new // 2, s.dtype_bytes, batch)
    steps = -(-n // batch) * new * passes
    return steps * (s.weight_bytes + s.lora_bytes + kv)


def _vllm(s: Setting, tp: int, seqs: int, new: int) -> tuple[float, float, int]:
    """(stream bytes per card, KV bytes of vLLM per card, concurrent
    sequences) of one engine over `tp` cards: the KV space is vLLM's fraction
    less the weight shard; concurrency as many half-finished sequences as it
    holds (at most 256, vLLM's max_num_seqs)."""
    frac = s.config["eval"]["vllm"]["gpu_memory_utilization"]
    kv_space = frac * s.hw.card_bytes - s.weight_bytes / tp - 2 * GIB
    per_seq = s.shape.kv_bytes(PROMPT_TOKENS + new // 2, s.dtype_bytes)
    conc = int(max(1, min(256, seqs, tp * max(kv_space, 0) // per_seq)))
    steps = -(-seqs // conc) * new
    return steps * (s.weight_bytes + conc * per_seq) / tp, kv_space, conc


def eval_generate(s: Setting) -> Needs:
    """vLLM: the smallest tensor-parallel size (a divisor of the KV heads, at
    most a node) whose engine finishes within the time limit; it takes its
    gpu_memory_utilization fraction of every card. hf: one card, batch
    eval.batch_size, one job per variant. The job modelled is the
    base-and-LoRAs engine (4 variants); the full model's engine has 1."""
    ev, shape = s.config["eval"], s.shape
    new = min(
        ev["max_new_tokens"],
        (ev["context_length"] or shape.max_positions) - PROMPT_TOKENS,
    )
    n_prob = sum(problems(s.config, b) for b in ev["benchmarks"])
    per_variant = n_prob * shape.generate_flops(PROMPT_TOKENS, new)
    notes = [f"upper bound: every generation runs to its {new}-token budget"]
    if ev["backend"] != "vllm":
        b = ev["batch_size"]
        needs = _model_job(s, "eval_generate", shape.kv_bytes(PROMPT_TOKENS + new,
                           s.dtype_bytes, b), per_variant, mfu=DECODE_MFU)  # fmt: skip
        needs.stream_bytes = _hf_decode(s, n_prob, b, new, 1)
        return needs
    frac = ev["vllm"]["gpu_memory_utilization"]
    seqs = 4 * n_prob
    sizes = [t for t in (1, 2, 4, 8, 16) if t <= s.hw.gpus_per_node
             and shape.kv_heads % t == 0]  # fmt: skip
    if ev["vllm"]["tensor_parallel_size"]:
        sizes = [ev["vllm"]["tensor_parallel_size"]]
    for tp in sizes:
        stream, kv_space, conc = _vllm(s, tp, seqs, new)
        needs = Needs("eval_generate", tp, frac * s.hw.card_bytes,
                      _host(s, 16 * GIB * tp), 4 * per_variant, mfu=DECODE_MFU,
                      stream_bytes=stream, work_share=5 / 8)  # fmt: skip
        if kv_space > 0 and runtime_minutes(needs, s.hw) <= s.hw.max_runtime_min:
            break
    if kv_space < shape.kv_bytes(PROMPT_TOKENS + new, s.dtype_bytes) / tp:
        needs.gpu_bytes = s.hw.card_bytes * 2  # no room for one sequence
        notes.append(f"tp {tp}: no KV room for one sequence")
    needs.notes = notes + [f"{seqs} sequences, ~{conc} at once"]
    return needs


def extract_activations(s: Setting) -> Needs:
    """A forward of activations.batch_tokens without the unembedding; the
    captured scalars and MLP neurons are kept in fp32."""
    a, shape = s.config["activations"], s.shape
    t = a["batch_tokens"]
    captured = t * (s.components + shape.layers * a["mlp_neurons_per_layer"]) * 4
    act = shape.layer_working_bytes(t, s.dtype_bytes) + 2 * captured
    docs, mean = _docs(s)
    return _model_job(s, "extract_activations", act,
                      docs * shape.forward_flops(mean))  # fmt: skip


def mlp_features(s: Setting) -> Needs:
    """Recomputes the top-k context windows of every MLP neuron baseline."""
    a, shape = s.config["activations"], s.shape
    t = a["batch_tokens"]
    neurons = shape.layers * a["mlp_neurons_per_layer"]
    windows = neurons * a["top_k"] * (2 if a["polarity"] == "both" else 1)
    width = 2 * a["context_width"] + 1
    flops = windows * shape.forward_flops(width)
    act = shape.layer_working_bytes(t, s.dtype_bytes) + t * neurons * 4
    return _model_job(s, "mlp_features", act, flops)


def _kl_job(s: Setting, rule: str, forwards: float, n_seq: int) -> Needs:
    """Prefix-reusing KL runs (lorascope.ablation.kl.PrefixRunner): each
    layer's input of the reference kept, variants_per_forward copies of one
    sequence at once, reference log-probs over the whole sequence (two for
    feature ablation: full and floor), logits in chunks (fp32)."""
    ab, shape, b = s.config["ablation"], s.shape, s.dtype_bytes
    t, v = ab["max_tokens"], ab["variants_per_forward"]
    kept = shape.layers * t * shape.hidden * b
    refs = (2 if rule == "feature_ablation" else 1) * t * shape.vocab * 4
    chunk = 3 * v * ab["logit_chunk"] * shape.vocab * 4
    act = kept + shape.layer_working_bytes(v * t, b) + v * t * shape.hidden * b
    flops = forwards * n_seq * shape.forward_flops(t)
    return _model_job(s, rule, act + refs + chunk, flops)


def kl_ablation(s: Setting) -> Needs:
    """Per sequence: the reference, then per layer each of its m modules' r
    directions, at rank > 1 each whole module too, and the whole layer,
    restarted there ((m r + 1 (+ m)) x (L - l) / L forwards, about half that
    times L+1), plus the attention / MLP groups. Rank 1, 7 modules: 4(L+1)."""
    n = s.config["ablation"]["n_sequences"]
    lora = s.config["train"]["lora"]
    m, r = len(lora["target_modules"]), lora["r"]
    per_layer = m * r + 1 + (m if r > 1 else 0)
    return _kl_job(s, "kl_ablation", 1 + per_layer * (s.shape.layers + 1) / 2 + 2, n)


def feature_ablation(s: Setting) -> Needs:
    """One full forward per alive SAE feature per sequence (dense decoder rows
    restart at layer 0), plus the reference and the floor."""
    latents = s.components * s.config["sae"]["expansion"]
    alive = int(latents * ALIVE_FRACTION)
    c, ab = s.config["causal"], s.config["ablation"]
    n = c["kl_sequences"] or ab["n_sequences"]
    needs = _kl_job(s, "feature_ablation", alive + 2, n)
    needs.notes.append(f"{alive} alive SAE features assumed (paper: ~2000 of 3584)")
    return needs


def accuracy_memory(config: dict, shape) -> tuple[float, float]:
    """(fixed, per prompt) GPU bytes of rule feature_accuracy: weights, LoRA,
    SAE; per prompt two KV caches of prompt + budget (the edited pass and the
    clean pass that feeds it), one layer's working set, fp32 logits."""
    from lorascope.workflow.resources import Setting

    s = Setting(config, None, shape)
    c, b = config["causal"], s.dtype_bytes
    tokens = PROMPT_TOKENS + (
        c["accuracy_max_new_tokens"] or config["eval"]["max_new_tokens"]
    )
    per_item = generation_bytes(shape, PROMPT_TOKENS, tokens - PROMPT_TOKENS, b, 2)
    sae = s.components * s.components * config["sae"]["expansion"] * 4 * 2
    return s.weight_bytes + s.lora_bytes + sae + CUDA_OVERHEAD, per_item


def feature_accuracy(s: Setting) -> Needs:
    """2 + 2 x accuracy_top_n greedy generations of the benchmark; SAE
    variants (floor and each feature) run the decoder twice per step."""
    from lorascope.workflow.resources import feature_accuracy_batch

    c, ev, shape = s.config["causal"], s.config["eval"], s.shape
    fixed, per_item = accuracy_memory(s.config, shape)
    batch = feature_accuracy_batch(s.config, shape, s.hw.card_bytes)
    bench = c["accuracy_benchmark"] or ev["benchmarks"][0]
    n = problems(s.config, bench, c["accuracy_limit"])
    new = c["accuracy_max_new_tokens"] or ev["max_new_tokens"]
    passes = 2 + c["accuracy_top_n"] + 2 * (1 + c["accuracy_top_n"])
    flops = passes * n * shape.generate_flops(PROMPT_TOKENS, new)
    notes = [f"batch {batch}" + ("" if c.get("accuracy_batch_size") else " (derived)")]
    notes.append(f"{passes} decoder passes per problem")
    return Needs("feature_accuracy", 1, fixed + batch * per_item, _host(s), flops,
                 mfu=DECODE_MFU, notes=notes,
                 stream_bytes=_hf_decode(s, n, batch, new, passes))  # fmt: skip


def steering_sweep(s: Setting) -> Needs:
    """Hook-steered HF generations: targets x nonzero alphas (+ the unsteered
    one) over steering.limit problems, batch steering.batch_size (null =
    eval.batch_size); one KV cache per prompt."""
    st, ev, shape = s.config["steering"], s.config["eval"], s.shape
    batch = st["batch_size"] or ev["batch_size"]
    new = st["max_new_tokens"] or ev["max_new_tokens"]
    kv = shape.kv_bytes(PROMPT_TOKENS + new, s.dtype_bytes, batch)
    act = kv + batch * shape.vocab * 4 * 2
    explicit = len(st["components"]) + len(st["sae_latents"])
    targets = explicit or st["top_kl"] + st["max_sae_features"]
    # One sweep per model of steering.models (rank-1, base, full fine-tune).
    gens = (targets * sum(1 for a in st["alphas"] if a) + 1) * len(st["models"])
    n = problems(s.config, st["benchmark"] or ev["benchmarks"][0], st["limit"])
    flops = gens * n * shape.generate_flops(PROMPT_TOKENS, new)
    fits = fit_batch(s.budget, s.weight_bytes + s.lora_bytes + CUDA_OVERHEAD,
                     kv / batch + shape.vocab * 8, n)  # fmt: skip
    notes = [f"batch {batch} ({fits} would fit)"]
    needs = _model_job(s, "steering_sweep", act, flops, mfu=DECODE_MFU, notes=notes)
    needs.stream_bytes = _hf_decode(s, n, batch, new, gens)
    return needs


def train_sae(s: Setting) -> Needs:
    """BatchTopK SAE in fp32: encoder and decoder, their grads and Adam
    states; a batch of latents; the shuffle buffer in host RAM."""
    sae, d = s.config["sae"], s.components
    f = d * sae["expansion"]
    params = 2 * d * f * 4
    gpu = 4 * params + 4 * sae["batch_size"] * f * 4 + CUDA_OVERHEAD
    docs, mean = _docs(s)
    samples = docs * mean * sae["epochs"]
    host = sae["shuffle_buffer_tokens"] * d * 4 * 2 + 8 * GIB
    return Needs("train_sae", 1, gpu, host, 6 * 2 * d * f * samples)


def sae_features(s: Setting) -> Needs:
    """Encodes every stored token once (top-k state on the host)."""
    sae, d = s.config["sae"], s.components
    f = d * sae["expansion"]
    batch = s.config["activations"]["shard_tokens"]
    gpu = 2 * d * f * 4 + batch * (d + f) * 4 * 2 + CUDA_OVERHEAD
    docs, mean = _docs(s)
    return Needs("sae_features", 1, gpu, 2 * batch * d * 4 + 16 * GIB,
                 2 * 2 * d * f * docs * mean)  # fmt: skip
