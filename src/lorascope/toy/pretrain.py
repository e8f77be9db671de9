"""Pretraining recipe for the toy base "instruct" model.

Used by rule ``toy_base_model`` (through ``lorascope.toy.world``) when
``toy.rebuild`` is true; the weights shipped in ``resources/toy/base_model/``
are this loop's output for the embedded config (its ``pretrain_summary.json``
records the recipe and the first losses, which a test checks a rebuild
against).

The model is a randomly initialised ``Qwen2ForCausalLM`` (the paper's model
class, so every hook path downstream is the real one). It learns from an
endless, seeded stream of two kinds of documents, packed into fixed-length
rows:

- textbook worked solutions of column addition in varied wordings (the skill
  that the reasoning fine-tune later has to elicit);
- chat turns in the s1 format whose think section is empty and whose answer
  restates the problem with the boxed sum (the "instruct" behaviour: answer
  directly, which is right for short sums and mostly wrong for long ones).

An optional second stage (``chat_phase``) continues on mostly chat turns
about short sums: the "instruct" finish. (In the embedded world it is what
lets an ablated adapter beat the base in Table 2; longer, it makes the base
answer most short sums directly.)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from lorascope.toy import tasks
from lorascope.toy.textbook import textbook_text

__all__ = [
    "PretrainConfig",
    "build_model",
    "document_stream",
    "packed_rows",
    "pretrain",
]

# (input_ids, labels) with labels -100 where no loss is taken.
Doc = tuple[list[int], list[int]]


@dataclass(frozen=True)
class PretrainConfig:
    """Model size and schedule of the toy pretraining: config ``toy.pretrain``
    plus ``toy.seed``, built by ``world.pretrain_config`` from the
    schema-filled section (defaults, bounds and meanings live in the schema)."""

    seed: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    steps: int
    """Optimiser steps; each sees ``batch_size`` rows of ``seq_len`` tokens."""
    batch_size: int
    seq_len: int
    lr: float
    warmup_frac: float
    weight_decay: float
    chat_frac: float
    """Fraction of documents that are chat turns (the rest are textbook text)."""
    reason_frac: float
    """Fraction of chat turns whose think section holds a worked solution in
    textbook wording (the rest answer directly, with an empty think section)."""
    slip_rate: float
    """Textbook solutions with a mis-added column and a correction."""
    carry_slip_rate: float
    """Textbook solutions whose first incoming carry is forgotten, then corrected."""
    digits: tuple[int, ...]
    """Operand digit counts of textbook documents (drawn uniformly)."""
    chat_digits: tuple[int, ...]
    """Operand digit counts of chat documents (drawn uniformly)."""
    chat_phase: dict | None
    """A second stage on the first stage's weights (fresh optimiser, schedule
    and document seed ``seed + 1``) that overrides some of the first stage's
    keys (those the schema lists under ``toy.pretrain.chat_phase``): mostly
    chat turns on short sums, so the "instruct" model answers small problems
    directly and partly right."""

    def __post_init__(self):
        # The one constraint between keys that the schema cannot state.
        if self.hidden_size % self.num_heads:
            raise ValueError("toy.pretrain.hidden_size must divide by num_heads")


def stages(cfg: PretrainConfig) -> list[PretrainConfig]:
    """The configs of the pretraining stages, run one after the other."""
    first = replace(cfg, chat_phase=None)
    if not cfg.chat_phase:
        return [first]
    phase = dict(cfg.chat_phase)
    if "chat_digits" in phase:
        phase["chat_digits"] = tuple(phase["chat_digits"])
    return [first, replace(first, seed=cfg.seed + 1, **phase)]


def build_model(tokenizer: PreTrainedTokenizerBase, cfg: PretrainConfig):
    """A freshly initialised Qwen2 causal LM sized for the toy world."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(cfg.seed)
    return Qwen2ForCausalLM(config)


def _chat_example() -> Callable[..., tuple[list[int], list[int]]]:
    from lorascope.core.chat import build_example  # the s1 format, shared with data

    return build_example


def document_stream(
    tokenizer: PreTrainedTokenizerBase, cfg: PretrainConfig
) -> Iterator[Doc]:
    """Endless seeded stream of pretraining documents as (input_ids, labels).

    Textbook documents take loss on every token; chat documents only on the
    assistant turn (the prompt is given at evaluation, never generated).
    """
    rng = random.Random(cfg.seed)
    build_example = _chat_example()
    eos = tokenizer.eos_token_id
    while True:
        if rng.random() < cfg.chat_frac:
            a, b = tasks.sample_pair(rng, rng.choice(cfg.chat_digits))
            question = tasks.question_text(a, b, rng.randrange(len(tasks.QUESTIONS)))
            think = ""
            if rng.random() < cfg.reason_frac:
                think = textbook_text(a, b, rng, cfg.slip_rate, cfg.carry_slip_rate)
            ids, labels = build_example(
                tokenizer, question, think, tasks.direct_answer(a, b)
            )
            yield list(ids), list(labels)
        else:
            a, b = tasks.sample_pair(rng, rng.choice(cfg.digits))
            text = textbook_text(a, b, rng, cfg.slip_rate, cfg.carry_slip_rate)
            ids = tokenizer.encode(text, add_special_tokens=False)
            ids = [*ids, eos]
            yield ids, list(ids)


def packed_rows(
    docs: Iterator[Doc], batch_size: int, seq_len: int, pad_id: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Greedily pack whole documents into rows of ``seq_len``; pad the rest.

    Documents never straddle rows, so every row starts at a document start
    (as an evaluation prompt does) and later documents sit at varied offsets.
    """
    pending: Doc | None = None
    while True:
        ids_BT = torch.full((batch_size, seq_len), pad_id, dtype=torch.long)
        labels_BT = torch.full((batch_size, seq_len), -100, dtype=torch.long)
        for row in range(batch_size):
            fill = 0
            while True:
                doc = pending if pending is not None else next(docs)
                pending = None
                n = len(doc[0])
                if n > seq_len:
                    raise ValueError(
                        f"toy.pretrain.seq_len {seq_len} < document length {n}"
                    )
                if fill + n > seq_len:
                    pending = doc
                    break
                ids_BT[row, fill : fill + n] = torch.tensor(doc[0])
                labels_BT[row, fill : fill + n] = torch.tensor(doc[1])
                fill += n
        yield ids_BT, labels_BT


def _lr_factor(step: int, cfg: PretrainConfig) -> float:
    warmup = max(1, int(cfg.warmup_frac * cfg.steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def pretrain(
    tokenizer: PreTrainedTokenizerBase,
    cfg: PretrainConfig,
    device: str = "cpu",
    stop_after: int | None = None,
) -> tuple[Qwen2ForCausalLM, list[dict]]:
    """Train the toy base model from scratch (every stage of ``stages``);
    returns it and the loss log. ``stop_after`` ends the run after that many
    optimiser steps in all (the schedules stay the full run's): the first
    losses of a recipe, which ``pretrain_summary.json`` records so that a
    rebuild can be checked against the shipped run in seconds."""
    model = build_model(tokenizer, cfg).to(device)
    model.train()
    log = []
    for i, stage in enumerate(stages(cfg)):
        left = None if stop_after is None else stop_after - len(log)
        if left is not None and left <= 0:
            break
        log += _train_stage(model, tokenizer, stage, device, i, left)
    model.eval()
    return model, log


def _train_stage(
    model, tokenizer, cfg: PretrainConfig, device: str, stage: int, left=None
):
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    rows = packed_rows(
        document_stream(tokenizer, cfg),
        cfg.batch_size,
        cfg.seq_len,
        tokenizer.pad_token_id,
    )
    log = []
    steps = cfg.steps if left is None else min(cfg.steps, left)
    bar = tqdm(range(steps), desc=f"toy pretrain stage {stage}", mininterval=5)
    for step in bar:
        ids_BT, labels_BT = next(rows)
        loss = model(input_ids=ids_BT.to(device), labels=labels_BT.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        lr = sched.get_last_lr()[0]
        log.append({"stage": stage, "step": step, "loss": loss.item(), "lr": lr})
        bar.set_postfix(loss=f"{log[-1]['loss']:.3f}")
    return log
