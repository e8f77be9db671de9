"""The s1 chat format, shared by training, evaluation and extraction.

s1 puts the reasoning trace and the final answer in one assistant turn:
`<|im_start|>think\n` + trace + `\n<|im_start|>answer\n` + `Answer: ` + attempt,
inside the model's own chat template. As in s1's `data/tokenization.py`, the
trace is stripped and `Answer: ` is added only when the attempt does not
already contain `Answer:` (then the whole answer part is stripped).

Generation prompts end right after the think marker (`think=True`), so a
variant is asked in exactly the format the LoRA was trained on, or at the
assistant header (`think=False`, the plain chat template s1's harness gives
a model it did not train; `eval.think_prefill`).
"""

from __future__ import annotations

from typing import NamedTuple

THINK_MARKER = "<|im_start|>think\n"
ANSWER_MARKER = "\n<|im_start|>answer\n"
ANSWER_PREFIX = "Answer: "
IGNORE_INDEX = -100  # label value that the loss skips


class Example(NamedTuple):
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX outside the assistant turn


def _messages(question: str, system: str | None) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": question}]


def _require_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"tokenizer {name!r} has no chat template; the s1 format needs one "
            "(set tokenizer.chat_template or use an instruct model's tokenizer)"
        )


def assistant_turn(trace: str, attempt: str) -> str:
    """s1's assistant content (its data/tokenization.py, in our words)."""
    answer = attempt if "Answer:" in attempt else ANSWER_PREFIX + attempt
    # A stripped trace also keeps the eval prompt a token prefix: a leading
    # newline would merge with the marker's "\n" in Qwen's BPE ("\n\n").
    return THINK_MARKER + trace.strip() + ANSWER_MARKER + answer.strip()


def build_prompt(
    tokenizer, question: str, system: str | None = None, think: bool = True
) -> str:
    """Chat-templated user turn + assistant header (+ the think marker)."""
    _require_template(tokenizer)
    head = tokenizer.apply_chat_template(
        _messages(question, system), tokenize=False, add_generation_prompt=True
    )
    return head + THINK_MARKER if think else head


def build_example(
    tokenizer, question: str, trace: str, attempt: str, system: str | None = None
) -> Example:
    """Tokenise one SFT example; only assistant tokens carry labels."""
    _require_template(tokenizer)
    msgs = _messages(question, system)
    head = tokenizer.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(
        msgs + [{"role": "assistant", "content": assistant_turn(trace, attempt)}],
        tokenize=False,
    )
    if not full.startswith(head + THINK_MARKER):
        raise ValueError("chat template does not render the prompt as a prefix")
    head_ids, think_ids, full_ids = (
        tokenizer(text, add_special_tokens=False)["input_ids"]
        for text in (head, head + THINK_MARKER, full)
    )
    # Both eval prompts (with and without the think marker) must be token
    # prefixes of the training sequence, or generation starts off-format.
    for ids in (head_ids, think_ids):
        if full_ids[: len(ids)] != ids:
            raise ValueError(
                "tokenisation of the prompt is not a prefix of the example "
                f"(question {question[:40]!r})"
            )
    n = len(head_ids)
    return Example(full_ids, [IGNORE_INDEX] * n + full_ids[n:])


def split_completion(text: str) -> tuple[str, str | None]:
    """Split generated text (after the think marker) into (thinking, answer).

    `answer` is the text after the answer marker with the `Answer: ` prefix
    and any end-of-turn token removed, or None if the model never wrote the
    answer marker (graders decide what to do with that; see grading.py).
    """
    marker = ANSWER_MARKER.strip("\n")
    idx = text.find(marker)
    if idx < 0:
        return text.replace("<|im_end|>", "").strip(), None
    thinking = text[:idx].rstrip("\n")
    answer = text[idx + len(marker) :].split("<|im_end|>")[0].strip()
    if answer.startswith(ANSWER_PREFIX.strip()):
        answer = answer[len(ANSWER_PREFIX.strip()) :].strip()
    return thinking, answer
