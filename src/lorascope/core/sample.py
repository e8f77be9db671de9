"""Streamed uniform random sample of each feature's activating tokens.

Used beside `lorascope.core.topk.StreamingTopK` wherever features are
streamed (rule `extract_activations` for LoRA components and MLP neurons,
rule `sae_features` for SAE latents). The top-k holds only the strongest
end of a feature's activations; the explain/score split of autointerp
(`lorascope.autointerp.split`) needs the whole distribution, to cut it into
activation quantiles (delphi's protocol). This sample is that view: for each
feature, `k` of its activating tokens (sign-adjusted value > 0) drawn
uniformly at random, with their values.

Bottom-k sampling. Every token gets a pseudo-random priority, a hash of its
(doc, pos) (`token_priority`); a feature's sample is its `k` activating
tokens of smallest priority. Since the priority depends on the token alone,
the state is mergeable and resumable exactly like the top-k (`merge` of the
states of disjoint shards equals one pass; `state_dict` has the same
`values`/`doc`/`pos` keys plus `priority`) and independent of batch order,
sharding and device. One priority per token, not per (token, feature):
hashing is O(T) rather than O(T x F), and the features' samples share
tokens (coordinated sampling), so the documents whose windows must be
recomputed (MLP neurons) stay few. Each feature's sample is still a uniform
sample of its own activating tokens; samples of different features are
correlated, which no reader relies on either way.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from lorascope.core.topk import FeatureSlots

__all__ = ["StreamingSample", "token_priority", "EMPTY_PRIORITY"]

_M31 = (1 << 31) - 1
# Larger than every priority (priorities are < 2**62): marks an empty slot.
EMPTY_PRIORITY = torch.iinfo(torch.int64).max
# Fixed salt: the sample is a function of the data alone (a rerun, another
# sharding or batch size draws the same tokens).
_SALT = 0x2545F491


def _mix31(x: torch.Tensor) -> torch.Tensor:
    # xorshift-multiply rounds on 31-bit values: every product stays < 2**62,
    # so int64 never overflows (no reliance on wrap-around) on any device.
    for c in (0x45D9F3B, 0x2C1B3C6D, 0x297A2D39):
        x = ((x ^ (x >> 16)) * c) & _M31
    return x ^ (x >> 15)


def token_priority(doc_T: torch.Tensor, pos_T: torch.Tensor) -> torch.Tensor:
    """Pseudo-random priority in [0, 2**62) of each token (doc, pos), int64.

    Two 31-bit hashes side by side, so two tokens tie with negligible
    probability (a tie would make the sample depend on batch order)."""
    doc, pos = doc_T.to(torch.int64) & _M31, pos_T.to(torch.int64) & _M31
    h1 = _mix31((doc * 0x3C6EF35F + pos * 0x1B873593 + _SALT) & _M31)
    h2 = _mix31((h1 ^ (doc * 0x27D4EB2F) ^ (pos * 0x165667B1)) & _M31)
    return (h1 << 31) | h2


def _first_active(values_TF, rows_R, cols_C, k, before_C=None):
    """Among tokens `rows_R` (in priority order) and features `cols_C` (None =
    all), each feature's first activating tokens while its count (starting
    at `before_C`) is <= k: (token index, feature, slot = count - 1, final
    count per feature)."""
    if cols_C is None:
        v_RC = values_TF[rows_R]
    else:  # gather [R, C] directly, never the [R, F] rows
        v_RC = values_TF[rows_R[:, None], cols_C[None, :]]
    active_RC = v_RC > 0
    count_RC = active_RC.cumsum(0, dtype=torch.int32)
    if before_C is not None:
        count_RC += before_C.to(torch.int32)
    r, c = (active_RC & (count_RC <= k)).nonzero(as_tuple=True)
    f = c if cols_C is None else cols_C[c]
    return rows_R[r], f, (count_RC[r, c] - 1).long(), count_RC[-1]  # rows_R: >= 1


class StreamingSample(FeatureSlots):
    """Per feature, the `k` activating tokens (value > 0) of smallest
    `token_priority`, with their (doc, pos, value): a uniform random sample
    of its activating tokens. Equal to the brute-force bottom-k over
    everything streamed; the state is `[F, k]` on `device`."""

    SLOTS = {
        "priority": torch.int64,
        "values": torch.float32,
        "doc": torch.int64,
        "pos": torch.int64,
    }

    def __init__(self, n_features: int, k: int, device: torch.device | str = "cpu"):
        if k < 1 or n_features < 0:
            raise ValueError(f"need k >= 1 and n_features >= 0 (k={k})")
        self.n_features, self.k, self.device = n_features, k, torch.device(device)
        shape = (n_features, k)
        self.priority_FK = torch.full(shape, EMPTY_PRIORITY, device=self.device)
        self.values_FK = torch.zeros(shape, device=self.device)
        self.doc_FK = torch.full(shape, -1, device=self.device)
        self.pos_FK = torch.full(shape, -1, device=self.device)

    def _merge(self, p_FK2, v_FK2, doc_FK2, pos_FK2) -> None:
        self.priority_FK, idx_FK = p_FK2.topk(self.k, dim=1, largest=False)
        self.values_FK = v_FK2.gather(1, idx_FK)
        self.doc_FK = doc_FK2.gather(1, idx_FK)
        self.pos_FK = pos_FK2.gather(1, idx_FK)

    def update(
        self, values_TF: torch.Tensor, doc_T: torch.Tensor, pos_T: torch.Tensor
    ) -> None:
        T, F = values_TF.shape
        if F != self.n_features:
            raise ValueError(f"update: {F} features, expected {self.n_features}")
        if T == 0:
            return
        values_TF = values_TF.to(self.device, torch.float32)
        doc_T = doc_T.to(self.device, torch.int64)
        pos_T = pos_T.to(self.device, torch.int64)
        # The batch's bottom-k per feature without a [T, F] top-k: tokens in
        # priority order (one sort of T), then each feature's first k
        # activating ones. A dense feature finds them among the first few
        # times k tokens (`head`); only features still short of k after the
        # head are searched in the rest of the batch (`tail`), so a dense
        # population costs ~[4k, F], not [T, F].
        prio_T = token_priority(doc_T, pos_T)
        order_T = prio_T.argsort()
        head = min(T, 4 * self.k)
        t, f, slot, count_F = _first_active(values_TF, order_T[:head], None, self.k)
        short = torch.nonzero(count_F < self.k).flatten()
        if head < T and len(short):
            t2, f2, slot2, _ = _first_active(
                values_TF, order_T[head:], short, self.k, count_F[short]
            )
            t, f, slot = (
                torch.cat([t, t2]),
                torch.cat([f, f2]),
                torch.cat([slot, slot2]),
            )
        new = StreamingSample(F, self.k, self.device)._slots()  # empty slots
        for dest, src in zip(
            new,
            (prio_T[t], values_TF[t, f], doc_T[t], pos_T[t]),
            strict=True,
        ):
            dest[f, slot] = src
        self._merge(
            *(torch.cat([a, b], 1) for a, b in zip(self._slots(), new, strict=True))
        )

    def to_frame(self, min_value: float = 0.0) -> pl.DataFrame:
        """feature, doc, pos, value of every sampled token with value >
        `min_value` (sign-adjusted), per feature in priority order. A
        threshold above 0 keeps a uniform sample of the tokens above it."""
        p = self.priority_FK.cpu().numpy()
        v = self.values_FK.cpu().numpy()
        keep = (p != EMPTY_PRIORITY) & (v > min_value)
        feat, _ = np.nonzero(keep)
        return pl.DataFrame(
            {
                "feature": feat.astype(np.int64),
                "doc": self.doc_FK.cpu().numpy()[keep],
                "pos": self.pos_FK.cpu().numpy()[keep],
                "value": v[keep].astype(np.float32),
            }
        )
