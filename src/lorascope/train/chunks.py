"""One optimizer step's batch forwarded in length-sorted chunks (`train.length_chunks`).

A batch of randomly drawn rows is padded to its longest row; on the toy SFT
set a quarter of the tokens a step computes are padding. Sorting the batch's
rows by length and forwarding them in a few chunks, each padded only to its
own longest row, computes fewer of them. The step itself does not change:
each chunk's loss is its summed token loss over the token count of the whole
batch (`num_items_in_batch`, which the Trainer passes to every step), so the
chunks' gradients add up to the batch's. The batches, their order, the loss
and the optimizer are untouched; only the float summation order differs.

TRL logs entropy and token accuracy once per forward, so with chunks the
logged values are means over chunks instead of over the batch's tokens.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["LengthChunkedSteps", "split_by_length"]


def split_by_length(inputs: dict[str, Any], chunks: int) -> list[dict[str, Any]]:
    """The batch's rows sorted by length, cut into `chunks` groups of (nearly)
    equal size, each trimmed to the columns its own rows use.

    Every tensor of `inputs` must be [batch, time] like `attention_mask`
    (input_ids, labels): anything else could not be split consistently.
    """
    if "attention_mask" not in inputs:
        raise ValueError(
            "train.length_chunks > 1 needs padded batches with an attention_mask "
            f"(this batch has {sorted(inputs)})"
        )
    mask_BT = inputs["attention_mask"]
    for key, value in inputs.items():
        if not torch.is_tensor(value) or value.shape != mask_BT.shape:
            raise ValueError(
                f"train.length_chunks > 1 cannot split the batch's {key!r}: "
                f"it is not a [batch, time] tensor like attention_mask "
                f"{tuple(mask_BT.shape)}"
            )
    order_B = torch.argsort(mask_BT.sum(dim=1), stable=True)
    parts = []
    for rows in torch.tensor_split(order_B, min(chunks, len(order_B))):
        used_T = mask_BT[rows].any(dim=0).nonzero().flatten()
        cols = slice(int(used_T.min()), int(used_T.max()) + 1)  # either padding side
        parts.append({key: value[rows][:, cols] for key, value in inputs.items()})
    return parts


class LengthChunkedSteps:
    """Trainer mixin: each training step runs `length_chunks` forward/backward
    passes over the batch's length-sorted chunks (one pass when 1)."""

    length_chunks: int = 1

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.length_chunks == 1:
            return super().training_step(model, inputs, num_items_in_batch)
        if num_items_in_batch is None:
            # Without it each chunk's loss would be its own mean: the chunks
            # would weigh their tokens differently from the whole batch.
            raise ValueError(
                "train.length_chunks > 1 needs the loss normalised over the whole "
                "batch (the Trainer's num_items_in_batch), which this model and "
                "trainer do not provide; set train.length_chunks: 1"
            )
        if self.args.world_size > 1:
            raise ValueError(
                f"train.length_chunks: {self.length_chunks} is for one-process "
                "runs: with several processes every chunk's backward would "
                "synchronise gradients; set train.length_chunks: 1"
            )
        step = super().training_step  # (zero-argument super fails in a comprehension)
        parts = split_by_length(inputs, self.length_chunks)
        return torch.stack([step(model, p, num_items_in_batch) for p in parts]).sum()
