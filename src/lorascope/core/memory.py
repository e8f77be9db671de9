"""A decoder-only transformer's shape and the memory and FLOPs that follow from it.

Pure arithmetic, no torch: read at Snakefile parse time by the resource model
(`lorascope.workflow.resources`, which turns it into each rule's GPUs, memory
and time) and in jobs that derive a batch size from the card they run on
(rule `feature_accuracy`). The formulas are checked against transformers'
own Qwen2 in tests/unit/test_resources.py: parameter count on the meta
device at Qwen2.5-32B's shape, KV-cache bytes and forward FLOPs (torch's
FlopCounterMode) at tiny shapes, all exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DTYPE_BYTES",
    "GIB",
    "ModelShape",
    "fit_batch",
    "generation_bytes",
    "residual_bytes",
]

GIB = 1024**3
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a Qwen2-style decoder (grouped-query attention, biased
    q/k/v, gated MLP) that memory and FLOPs depend on."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool = False
    head_dim: int | None = None  # None = hidden // heads
    max_positions: int = 32768

    @classmethod
    def from_config(cls, cfg: dict) -> ModelShape:
        """From a transformers config.json (a dict)."""
        return cls(
            hidden=cfg["hidden_size"],
            layers=cfg["num_hidden_layers"],
            heads=cfg["num_attention_heads"],
            kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            intermediate=cfg["intermediate_size"],
            vocab=cfg["vocab_size"],
            tied=bool(cfg.get("tie_word_embeddings", False)),
            head_dim=cfg.get("head_dim"),
            max_positions=cfg.get("max_position_embeddings", 32768),
        )

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def layer_linear_params(self) -> int:
        """Weights of one layer's matrices (q, k, v, o, gate, up, down)."""
        h, q, kv = self.hidden, self.heads * self.hd, self.kv_heads * self.hd
        return h * q + 2 * h * kv + q * h + 3 * h * self.intermediate

    @property
    def linear_params(self) -> int:
        """Every weight a token is multiplied by: the layers' matrices and the
        unembedding (the embedding is a lookup)."""
        return self.layers * self.layer_linear_params + self.vocab * self.hidden

    @property
    def params(self) -> int:
        """All parameters, as transformers counts them (biases, norms, embedding;
        the unembedding once more unless tied)."""
        h = self.hidden
        bias = (self.heads + 2 * self.kv_heads) * self.hd
        per_layer = self.layer_linear_params + bias + 2 * h
        lm_head = 0 if self.tied else self.vocab * h
        return self.vocab * h + self.layers * per_layer + h + lm_head

    def lora_params(self, r: int, modules: int = 7) -> int:
        """Parameters of a rank-r LoRA on the 7 matrices of every layer
        (fewer `modules` are counted as the largest ones: an upper bound)."""
        h, q, kv, i = (
            self.hidden,
            self.heads * self.hd,
            self.kv_heads * self.hd,
            (self.intermediate),
        )
        dims = sorted(
            [h + q, h + kv, h + kv, q + h, h + i, h + i, i + h], reverse=True
        )[:modules]
        return self.layers * r * sum(dims)

    def kv_bytes(self, tokens: int, dtype_bytes: int = 2, batch: int = 1) -> int:
        """KV cache: 2 (K and V) x layers x kv_heads x head_dim x tokens x bytes
        x batch."""
        per_token = 2 * self.layers * self.kv_heads * self.hd * dtype_bytes
        return per_token * tokens * batch

    def forward_flops(self, tokens: int, context: int | None = None) -> int:
        """Multiply-add FLOPs of one forward over `tokens` new tokens attending
        to `context` positions each (default: all `tokens`, as a full forward
        counts QK^T and AV without skipping the causal half): 2 x linear
        params x tokens + 4 x layers x tokens x context x heads x head_dim."""
        context = tokens if context is None else context
        attn = 4 * self.layers * tokens * context * self.heads * self.hd
        return 2 * self.linear_params * tokens + attn

    def generate_flops(self, prompt: int, new: int) -> int:
        """FLOPs of one greedy generation: the prompt's forward, then one token
        at a time attending to everything before it (causal half counted)."""
        decode = 2 * self.linear_params * new
        ctx_sum = new * prompt + new * (new + 1) // 2
        attn = 4 * self.layers * ctx_sum * self.heads * self.hd
        return self.forward_flops(prompt) + decode + attn

    def layer_working_bytes(self, tokens: int, dtype_bytes: int = 2) -> int:
        """Transient activations of one decoder layer over `tokens` (no T^2
        attention matrix: SDPA's fused kernels): residual, normed input, q/k/v,
        attention output, gate/up/act products."""
        h, q, kv = self.hidden, self.heads * self.hd, self.kv_heads * self.hd
        per_token = 4 * h + 2 * q + 2 * kv + 3 * self.intermediate
        return per_token * tokens * dtype_bytes


def fit_batch(budget: float, fixed: float, per_item: float, cap: int | None = None):
    """The largest batch with fixed + batch x per_item <= budget (bytes), at
    least 1 (a batch of 1 that does not fit is for the caller to report),
    at most `cap`."""
    n = int((budget - fixed) // per_item) if per_item > 0 else cap or 1
    n = max(1, n)
    return min(n, cap) if cap else n


def generation_bytes(
    shape: ModelShape, prompt: int, new: int, dtype_bytes: int = 2, caches: int = 1
) -> int:
    """GPU bytes one prompt adds to a batched HF generation: `caches` KV caches
    of prompt + new tokens (2 when a clean pass runs beside the edited one),
    the prompt's forward through one layer, two fp32 rows of logits."""
    kv = caches * shape.kv_bytes(prompt + new, dtype_bytes)
    return kv + shape.layer_working_bytes(prompt, dtype_bytes) + 2 * shape.vocab * 4


def residual_bytes(shape: ModelShape, tokens: int, dtype_bytes: int = 2) -> int:
    """The residual stream after every layer for `tokens` tokens: layers x
    tokens x hidden x bytes (what rule model_diff's pass 1 stores per
    sequence for pass 2)."""
    return shape.layers * tokens * shape.hidden * dtype_bytes
