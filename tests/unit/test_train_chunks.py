"""train.length_chunks: a step over length-sorted chunks is the same step."""

import datasets
import pytest
import torch
from test_train import _config

from lorascope.core.config import ConfigError, validate
from lorascope.train.chunks import LengthChunkedSteps, split_by_length
from lorascope.train.trainer import sft_config

LENGTHS = [31, 7, 19, 40, 12, 26, 9, 35]  # one batch, far from sorted


def _batch(right_padded: bool = True) -> dict[str, torch.Tensor]:
    width = max(LENGTHS)
    ids = torch.zeros(len(LENGTHS), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(LENGTHS):
        cols = slice(0, n) if right_padded else slice(width - n, width)
        ids[row, cols] = (torch.arange(n) * 7 + row) % 200 + 10  # in the toy vocabulary
        mask[row, cols] = 1
    labels = torch.where(mask.bool(), ids, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("right_padded", [True, False])
def test_chunks_hold_every_row_whole_and_little_padding(right_padded):
    batch = _batch(right_padded)
    parts = split_by_length(batch, 3)
    assert [len(p["input_ids"]) for p in parts] == [3, 3, 2]
    seen = []
    for part in parts:
        lengths = part["attention_mask"].sum(1).tolist()
        assert lengths == sorted(lengths)
        assert part["input_ids"].shape[1] == max(lengths)  # padded to its own longest
        for row in range(len(part["input_ids"])):
            kept = part["input_ids"][row][part["attention_mask"][row].bool()]
            original = [r for r, n in enumerate(LENGTHS) if n == lengths[row]][0]
            used = batch["attention_mask"][original].bool()
            want = batch["input_ids"][original][used]
            assert torch.equal(kept, want)
            assert torch.equal(
                part["labels"][row][part["attention_mask"][row].bool()], want
            )
            seen.append(original)
    assert sorted(seen) == list(range(len(LENGTHS)))
    assert [len(p["input_ids"]) for p in split_by_length(batch, 20)] == [1] * 8


def test_a_batch_that_cannot_be_split_is_named():
    batch = _batch()
    with pytest.raises(ValueError, match="needs padded batches with an attention_mask"):
        split_by_length({"input_ids": batch["input_ids"]}, 2)
    with pytest.raises(ValueError, match="cannot split the batch's 'position_ids'"):
        split_by_length({**batch, "position_ids": torch.arange(5)}, 2)


def _trainer(tmp_path, model, tokenizer, chunks):
    from trl import SFTTrainer

    class Trainer(LengthChunkedSteps, SFTTrainer):
        length_chunks = chunks

    cfg, _ = _config()
    batch = _batch()
    keep = [m.bool() for m in batch["attention_mask"]]
    rows = {
        key: [r[k].tolist() for r, k in zip(batch[key], keep, strict=True)]
        for key in ("input_ids", "labels")
    }
    args = sft_config(tmp_path, cfg["train"], "full", 0, torch.device("cpu"))
    return Trainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_dict(rows),
        processing_class=tokenizer,
    )


def test_a_chunked_step_has_the_gradient_of_the_whole_batch(
    tmp_path, tiny_model_dir, toy_tokenizer
):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    for p in model.parameters():
        p.requires_grad_(True)
    grads, losses = {}, {}
    for chunks in (1, 3):
        trainer = _trainer(tmp_path / str(chunks), model, toy_tokenizer, chunks)
        batch = _batch()
        n_items = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
        model.zero_grad()
        losses[chunks] = trainer.training_step(model, batch, n_items).item()
        grads[chunks] = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert losses[1] == pytest.approx(losses[3], rel=1e-5)
    for name, whole in grads[1].items():
        # float32 sums in another order: errors of ~1e-6 of the largest entry
        scale = float(whole.abs().max())
        assert torch.allclose(grads[3][name], whole, rtol=1e-4, atol=1e-5 * scale), name
    assert any(float(g.abs().max()) > 0 for g in grads[3].values())


def test_a_chunked_step_without_a_batch_token_count_fails(
    tmp_path, tiny_model, toy_tokenizer
):
    trainer = _trainer(tmp_path, tiny_model, toy_tokenizer, 2)
    with pytest.raises(ValueError, match="needs the loss normalised over the whole"):
        trainer.training_step(tiny_model, _batch(), None)


def test_chunked_steps_with_fsdp_are_a_config_error(tmp_path):
    fsdp = tmp_path / "fsdp.yaml"
    fsdp.write_text("distributed_type: FSDP\n")
    validate({"train": {"fsdp_config": str(fsdp)}})
    with pytest.raises(ConfigError, match="train.length_chunks: chunked steps are"):
        validate({"train": {"fsdp_config": str(fsdp), "length_chunks": 2}})
