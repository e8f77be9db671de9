"""Toy tokenizer: a small BPE over the toy language, wrapped as a transformers one.

Used by ``lorascope.toy.world`` (saved beside the base model) and by the
tests. Built with the `tokenizers` library and saved with `save_pretrained`,
so it loads back through ``lorascope.core.models.load_tokenizer`` exactly like
Qwen's. Like Qwen2's tokenizer it splits text with Qwen2's pre-tokenizer
pattern, so every digit is its own token and words keep their leading space;
BPE merges learnt on a fixed sample of toy text then make the frequent words
(" carry", "Wait", "Answer") single tokens. Interpretability stages thus see
word-level tokens where a character tokenizer gave them letters. Every
printable ASCII character is in the alphabet, so any such text round-trips.
The chat template mimics Qwen's ChatML turns (without Qwen's default system
prompt, to keep toy sequences short).
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lorascope.toy import tasks
from lorascope.toy.textbook import textbook_text

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_tokenizer", "training_text"]

PAD, UNK = "<pad>", "<unk>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, UNK, IM_START, IM_END]
# Printable ASCII minus the characters that make up nothing in the toy world.
CHARACTERS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
# Qwen2's pre-tokenizer split (its tokenizer.json): single digits, words with
# one leading non-letter, punctuation runs, newlines, spaces.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
VOCAB_SIZE = 320
# Text the merges are learnt from: a fixed sample, so the vocabulary is a
# constant of the code (and of the shipped model), not of any config.
_SAMPLE_SEED, _SAMPLE_PROBLEMS = 0, 2000

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def training_text() -> Iterator[str]:
    """The toy text the BPE merges are learnt from (special tokens left out)."""
    rng = random.Random(_SAMPLE_SEED)
    for _ in range(_SAMPLE_PROBLEMS):
        yield "system\nuser\nassistant\nthink\nanswer\n"  # chat-template words
        a, b = tasks.sample_pair(rng, rng.randint(1, 5))
        yield tasks.question_text(a, b, rng.randrange(len(tasks.QUESTIONS)))
        yield tasks.reasoning_trace(a, b, rng, slip_rate=0.2, carry_slip_rate=0.5)[0]
        yield "Answer: " + tasks.attempt_text(a, b)
        yield textbook_text(a, b, rng, slip_rate=0.2, carry_slip_rate=0.2)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The toy tokenizer (deterministic: same merges on every call)."""
    core = Tokenizer(models.BPE(unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated")
    core.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=CHARACTERS,
        show_progress=False,
    )
    core.train_from_iterator(training_text(), trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=IM_END,
        additional_special_tokens=[IM_START],
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "right"
    return tok
