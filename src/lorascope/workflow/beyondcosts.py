"""Resource formulas of the GPU rules beyond the paper's pipeline (ground
truth, attribution, behaviour sets, the full fine-tune diff), in the form
of `lorascope.workflow.rulecosts` (one function per rule, named after it,
taking a `Setting` and returning one job's `Needs`) and built from its
helpers; kept apart so each module stays readable."""

from __future__ import annotations

from lorascope.core.memory import fit_batch, generation_bytes, residual_bytes
from lorascope.workflow.resources import DECODE_MFU, HEADROOM, Needs, Setting
from lorascope.workflow.rulecosts import (
    ALIVE_FRACTION,
    CUDA_OVERHEAD,
    PROMPT_TOKENS,
    _docs,
    _hf_decode,
    _host,
    _kl_job,
    _model_job,
    problems,
)


def ground_truth(s: Setting) -> Needs:
    """One forward of the scored tokens (groundtruth.sft_docs SFT docs plus
    the rank-1 generations) capturing every feature's activation (LoRA, MLP,
    SAE codes) for the whole set, kept in fp32. Toy world only."""
    a, shape = s.config["activations"], s.shape
    t = a["batch_tokens"]
    _, mean = _docs(s)
    n_gen = len(s.config["eval"]["benchmarks"]) * (s.config["eval"]["limit"] or 500)
    n_seq = s.config["groundtruth"]["sft_docs"] + n_gen
    units = s.components * (1 + s.config["sae"]["expansion"])
    units += shape.layers * a["mlp_neurons_per_layer"]
    act = shape.layer_working_bytes(t, s.dtype_bytes) + t * units * 4
    needs = _model_job(s, "ground_truth", act, n_seq * shape.forward_flops(mean))
    needs.host_bytes += n_seq * mean * units * 4
    return needs


def feature_attribution(s: Setting) -> Needs:
    """Per attribution sequence: a forward and a backward per target at the
    full LoRA and at the SAE floor (x ig_steps), every layer's activations
    kept for the backward, or (when that does not fit the card, as the job
    decides: lorascope.attribution.gradients.needs_checkpoint) only layer
    inputs, each layer recomputed per backward; then exact removal of every
    component and alive SAE feature on attribution.validate_sequences (as
    feature_ablation)."""
    a, ab, shape = s.config["attribution"], s.config["ablation"], s.shape
    b, t, k = s.dtype_bytes, ab["max_tokens"], len(a["targets"])
    n = a["n_sequences"] or ab["n_sequences"]
    passes = 2 * a["ig_steps"] * (1 + k)  # forward + k backwards, two points
    fixed = s.weight_bytes + s.lora_bytes + CUDA_OVERHEAD
    kept = shape.layers * shape.layer_working_bytes(t, b)
    logits = 3 * t * shape.vocab * 4  # fp32 logits, log-softmax, its gradient
    notes = []
    if fixed + kept > 0.5 * s.hw.card_bytes:
        kept = shape.layers * t * shape.hidden * b + shape.layer_working_bytes(t, b)
        passes += 2 * a["ig_steps"] * k  # a layer recompute per backward
        notes.append("layer checkpointing")
    alive = int(s.components * s.config["sae"]["expansion"] * ALIVE_FRACTION)
    exact = _kl_job(s, "feature_attribution", s.components + alive + 2,
                    a["validate_sequences"])  # fmt: skip
    act = max(kept + logits, exact.gpu_bytes - fixed)
    flops = exact.flops + passes * n * shape.forward_flops(t)
    notes.append(f"{passes} forward-equivalents per sequence x {n}")
    return _model_job(s, "feature_attribution", act, flops, notes=notes)


def behaviour_sets(s: Setting) -> Needs:
    """3 references (full, floor, base) + 2 x (1 + random_sets) generations
    per set target; SAE edits (all but full and base) run the decoder twice,
    with two KV caches per prompt; the batch is attribution.sets_batch_size
    or (null) the most that fit the card, as the job computes it
    (lorascope.causal.feature_accuracy.fitting_batch)."""
    a, ev, shape = s.config["attribution"], s.config["eval"], s.shape
    n = problems(s.config, a["sets_benchmark"] or ev["benchmarks"][0], a["sets_limit"])
    new = a["sets_max_new_tokens"] or ev["max_new_tokens"]
    gens = 2 * (1 + a["random_sets"]) * len(a["set_targets"])
    passes = 2 + 2 * (1 + gens)
    per_item = generation_bytes(shape, PROMPT_TOKENS, new, s.dtype_bytes, 2)
    sae = s.components * s.components * s.config["sae"]["expansion"] * 4 * 2
    fixed = s.weight_bytes + s.lora_bytes + sae + CUDA_OVERHEAD
    batch = a["sets_batch_size"] or fit_batch(
        s.hw.card_bytes * (1 - HEADROOM), fixed, per_item, n
    )
    flops = passes * n * shape.generate_flops(PROMPT_TOKENS, new)
    notes = [f"batch {batch}", f"{passes} decoder passes per problem"]
    return Needs("behaviour_sets", 1, fixed + batch * per_item, _host(s), flops,
                 mfu=DECODE_MFU, notes=notes,
                 stream_bytes=_hf_decode(s, n, batch, new, passes))  # fmt: skip


def model_diff(s: Setting) -> Needs:
    """Two passes, one model on the card at a time (never both 32B models):
    pass 1 the full fine-tune's forward per sequence, its residual after
    every layer written to disk; pass 2 the base + adapter (two forwards:
    adapter on and off) with the full model's final norm and unembedding,
    then per layer the base restarted after it for two patched rows (about
    L forwards). States wait on the host, one layer's at a time on the card;
    the full model's log-probs of a sequence stay on it (fp32), the patched
    rows' are made logit_chunk tokens at a time."""
    d, shape, b = s.config["diffing"], s.shape, s.dtype_bytes
    t = d["max_tokens"]
    n_seq = d["n_sequences"] + d["bench_limit"] * len(s.config["eval"]["benchmarks"])
    head = shape.vocab * shape.hidden * b  # the full model's unembedding copy
    logits = t * shape.vocab * 4 + 3 * 2 * d["logit_chunk"] * shape.vocab * 4
    work = shape.layer_working_bytes(2 * t, b) + 8 * t * shape.hidden * 4
    act = head + logits + work
    states = residual_bytes(shape, t, b)
    flops = n_seq * shape.forward_flops(t) * (1 + 2 + shape.layers)
    notes = [f"{n_seq} sequences; pass 1 stores {n_seq * states / 1e9:.0f} GB "
             "of full-model states on disk until pass 2 reads them"]  # fmt: skip
    needs = _model_job(s, "model_diff", act, flops, notes=notes)
    pca = (
        shape.layers * d["pca_tokens"] * shape.hidden * 4
        if d["principal_directions"]
        else 0
    )
    needs.host_bytes = _host(s, 3 * states + pca)  # + the Δh_full sample (fp32)
    return needs
