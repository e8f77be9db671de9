"""Target metrics of rule `feature_attribution` and the positions they read.

A target is a number computed from one training sequence's next-token
log-probs, whose change under removing a feature we estimate and measure:

- `backtrack`: mean log-prob of the backtracking tokens (`attribution.
  backtrack_tokens`, "Wait"-type words) at the positions where the sequence
  has one as its next, loss-labelled token;
- `answer`: mean log-prob of the answer tokens: the labelled tokens after
  the s1 answer marker and its `Answer:` prefix (special tokens left out);
- `loss`: the training loss, mean negative log-prob over the labelled tokens.

A sequence without a position for a target (no "Wait", an answer cut by
`ablation.max_tokens`) does not count for that target. KL to the unedited
model has no first-order term (its gradient is 0 there,
docs/design.md), so it is not a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from lorascope.ablation.setup import draw_rows, sequence_seed
from lorascope.core.chat import IGNORE_INDEX

__all__ = [
    "TARGETS",
    "TargetSequence",
    "backtrack_token_ids",
    "load_targets",
    "target_metrics",
    "target_sequence",
    "token_problems",
]

TARGETS = ("backtrack", "answer", "loss")
KEY = "attribution.backtrack_tokens"


def token_problems(tokenizer, words: list[str]) -> list[str]:
    """One message per word the tokenizer has no single token for (neither
    `word` nor ` word`): a backtracking word must be one next token."""
    bad = [w for w in words if not _word_ids(tokenizer, w)]
    if not bad:
        return []
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return [
        f"{KEY}: {w!r} is not a single token of the tokenizer {name!r} "
        f"(it encodes to {tokenizer.encode(w, add_special_tokens=False)})"
        for w in bad
    ]


def _word_ids(tokenizer, word: str) -> list[int]:
    out = []
    for text in (word, " " + word):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == 1:
            out.append(int(ids[0]))
    return out


def backtrack_token_ids(tokenizer, words: list[str]) -> list[int]:
    """Token ids of the backtracking words (with and without a leading
    space); fails naming the key and each word that is not one token."""
    problems = token_problems(tokenizer, words)
    if problems:
        raise ValueError("; ".join(problems))
    return sorted({i for w in words for i in _word_ids(tokenizer, w)})


@dataclass
class TargetSequence:
    """One sequence and, per target, the positions p whose next token
    (ids_T[p + 1]) the target reads (long, sorted)."""

    ids_T: torch.Tensor
    positions: dict[str, torch.Tensor]

    @property
    def union_P(self) -> torch.Tensor:
        """Every position some target reads (sorted): the logits computed."""
        parts = [p for p in self.positions.values() if len(p)]
        if not parts:
            return torch.zeros(0, dtype=torch.long)
        return torch.unique(torch.cat(parts))


def target_sequence(
    ids_T: torch.Tensor,
    labels_T: torch.Tensor,
    targets: list[str],
    backtrack_ids: list[int],
    *,
    marker_id: int | None,
    special_ids: list[int],
    decode,
) -> TargetSequence:
    """The positions of each target in one SFT row (`decode`: ids -> text)."""
    labelled_T = torch.zeros(len(ids_T), dtype=torch.bool)
    labelled_T[:-1] = labels_T[1:] != IGNORE_INDEX
    next_T = torch.cat([ids_T[1:], ids_T[-1:]])
    out = {}
    for target in targets:
        if target == "loss":
            mask_T = labelled_T
        elif target == "backtrack":
            mask_T = labelled_T & torch.isin(next_T, torch.tensor(backtrack_ids))
        elif target == "answer":
            mask_T = labelled_T & _after_answer_prefix(
                ids_T, labels_T, marker_id, decode
            )
            mask_T &= ~torch.isin(next_T, torch.tensor(special_ids, dtype=torch.long))
        else:
            raise ValueError(f"attribution.targets: unknown target {target!r}")
        out[target] = torch.nonzero(mask_T).flatten()
    return TargetSequence(ids_T, out)


def _after_answer_prefix(ids_T, labels_T, marker_id, decode) -> torch.Tensor:
    """Positions p whose next token comes after `<|im_start|>answer ... :`
    (the last labelled marker token, then the first token with a colon)."""
    mask_T = torch.zeros(len(ids_T), dtype=torch.bool)
    if marker_id is None:
        return mask_T
    marks = torch.nonzero((ids_T == marker_id) & (labels_T != IGNORE_INDEX)).flatten()
    if not len(marks):
        return mask_T
    for k in range(int(marks[-1]) + 1, len(ids_T)):
        if ":" in decode([int(ids_T[k])]):
            mask_T[k:] = True  # position k predicts ids[k + 1], after the colon
            return mask_T
    return mask_T


def target_metrics(
    logits_VPX: torch.Tensor, seq: TargetSequence, union_P: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per target with positions: its value per variant [V] (differentiable).

    `logits_VPX` are the logits at `union_P` (positions, in that order).
    """
    logp_VPX = torch.log_softmax(
        logits_VPX.to(torch.promote_types(logits_VPX.dtype, torch.float32)), -1
    )
    where = {int(p): i for i, p in enumerate(union_P)}
    out = {}
    for target, pos_P in seq.positions.items():
        if not len(pos_P):
            continue
        rows = torch.tensor([where[int(p)] for p in pos_P], device=logp_VPX.device)
        nxt = seq.ids_T[pos_P + 1].to(logp_VPX.device)
        logp_VP = logp_VPX[:, rows].gather(-1, nxt[None, :, None].expand(
            len(logp_VPX), -1, 1))[..., 0]  # fmt: skip
        mean_V = logp_VP.mean(-1)
        out[target] = -mean_V if target == "loss" else mean_V
    return out


def load_targets(
    config: dict, sft_path: str, tokenizer, n: int
) -> list[TargetSequence]:
    """The first `n` sequences of the ablation draw (`ablation.n_sequences`,
    seed, generator, `ablation.max_tokens` cut: the sequences the KL
    ablations read), with their target positions."""
    cfg, att = config["ablation"], config["attribution"]
    sft = pl.read_parquet(sft_path, columns=["input_ids", "labels"])
    rows = draw_rows(
        len(sft), cfg["n_sequences"], sequence_seed(config), cfg["draw_rng"]
    )
    ids = backtrack_token_ids(tokenizer, att["backtrack_tokens"])
    marker = tokenizer.convert_tokens_to_ids("<|im_start|>")
    marker = (
        marker if isinstance(marker, int) and marker != tokenizer.unk_token_id else None
    )
    out = []
    for row in rows[:n]:
        cut = cfg["max_tokens"]
        ids_T = torch.tensor(sft["input_ids"][int(row)].to_list()[:cut])
        labels_T = torch.tensor(sft["labels"][int(row)].to_list()[:cut])
        out.append(
            target_sequence(
                ids_T, labels_T, att["targets"], ids, marker_id=marker,
                special_ids=list(tokenizer.all_special_ids), decode=tokenizer.decode,
            )
        )  # fmt: skip
    return out


def count_positions(seqs: list[TargetSequence], targets: list[str]) -> np.ndarray:
    """Positions per target and sequence [targets, S]."""
    return np.array([[len(s.positions[t]) for s in seqs] for t in targets])
