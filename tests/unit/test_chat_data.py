"""s1 formatting, assistant-only labels at exact token positions, data errors."""

import datasets
import polars as pl
import pytest
from conftest import s1k_rows

from lorascope.core.chat import (
    ANSWER_MARKER,
    IGNORE_INDEX,
    THINK_MARKER,
    assistant_turn,
    build_example,
    build_prompt,
    split_completion,
)
from lorascope.core.config import validate
from lorascope.data.sft import DataError, load_rows, tokenise


def test_labels_cover_exactly_the_assistant_turn(toy_tokenizer):
    tok = toy_tokenizer
    ex = build_example(tok, "What is 1+2?", "1 plus 2 is 3.", "\\boxed{3}")
    head = tok.apply_chat_template(
        [{"role": "user", "content": "What is 1+2?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    n_head = len(tok(head, add_special_tokens=False)["input_ids"])
    assert ex.labels[:n_head] == [IGNORE_INDEX] * n_head
    assert ex.labels[n_head:] == ex.input_ids[n_head:]
    trained = tok.decode(ex.input_ids[n_head:])
    expected = THINK_MARKER + "1 plus 2 is 3." + ANSWER_MARKER + "Answer: \\boxed{3}"
    assert trained.startswith(expected)
    assert trained.rstrip("\n").endswith("<|im_end|>")


def test_prompt_is_the_example_prefix(toy_tokenizer):
    prompt = build_prompt(toy_tokenizer, "Q?")
    ex = build_example(toy_tokenizer, "Q?", "t", "a")
    ids = toy_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ex.input_ids[: len(ids)] == ids
    assert prompt.endswith(THINK_MARKER)
    plain = build_prompt(toy_tokenizer, "Q?", think=False)
    assert prompt == plain + THINK_MARKER


def test_s1_formatting_details():
    """s1's data/tokenization.py: trace and answer stripped, `Answer: ` added
    only when the attempt has no `Answer:` of its own."""
    assert assistant_turn("  t \n", " 5 ") == (
        THINK_MARKER + "t" + ANSWER_MARKER + "Answer:  5"
    )
    assert assistant_turn("t", "So Answer: 5\n") == (
        THINK_MARKER + "t" + ANSWER_MARKER + "So Answer: 5"
    )
    assert assistant_turn("t", "5").endswith(ANSWER_MARKER + "Answer: 5")


def merging_tokenizer():
    """A BPE tokenizer that merges "\n\n" into one token, as Qwen's does."""
    import string

    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from lorascope.toy.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS

    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *chars, "\n\n"])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[("\n", "\n")], unk_token="<unk>"))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    assert len(tok("a\n\nb", add_special_tokens=False)["input_ids"]) == 3
    return tok


def test_trace_starting_with_a_newline_keeps_the_prompt_a_token_prefix():
    """Unstripped, "think\n" + "\nStep" would tokenise "\n\n" as one token
    and the eval prompt's last token would not start the training sequence."""
    tok = merging_tokenizer()
    ex = build_example(tok, "Q?", "\nStep one.\n", "a")
    for think in (True, False):
        ids = tok(build_prompt(tok, "Q?", think=think), add_special_tokens=False)
        assert ex.input_ids[: len(ids["input_ids"])] == ids["input_ids"]


def test_split_completion():
    assert split_completion("work\n<|im_start|>answer\nAnswer: 42<|im_end|>") == (
        "work",
        "42",
    )
    assert split_completion("no answer marker") == ("no answer marker", None)


def test_no_chat_template_is_a_clear_error(toy_tokenizer):
    import copy

    tok = copy.deepcopy(toy_tokenizer)
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        build_prompt(tok, "Q?")


@pytest.fixture()
def s1k_parquet(tmp_path):
    path = tmp_path / "s1k.parquet"
    pl.DataFrame(s1k_rows(6)).write_parquet(path)
    return path


def _cfg(**data):
    return validate({"data": {"dataset": "parquet", **data}})["data"]


def test_loader_reads_real_schema_and_tokenises(s1k_parquet, toy_tokenizer):
    cfg = _cfg(data_files=str(s1k_parquet))
    rows = load_rows(cfg)
    df, stats = tokenise(rows, toy_tokenizer, cfg)
    assert df.height == 6 and stats["kept"] == 6
    assert (df["n_loss_tokens"] < df["n_tokens"]).all()


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "bad.parquet"
    pl.DataFrame(s1k_rows(3)).drop("deepseek_attempt").write_parquet(path)
    with pytest.raises(DataError, match="deepseek_attempt"):
        load_rows(_cfg(data_files=str(path)))


def test_empty_rows_error_or_counted_skip(toy_tokenizer):
    rows = s1k_rows(4)
    rows["deepseek_thinking_trajectory"][2] = "  "
    ds = datasets.Dataset.from_dict(rows)
    with pytest.raises(DataError, match="row 2"):
        tokenise(ds, toy_tokenizer, _cfg())
    df, stats = tokenise(ds, toy_tokenizer, _cfg(empty_rows="skip"))
    assert stats["empty"] == 1 and df.height == 3 and 2 not in df["doc"].to_list()


def test_overlong_rows(toy_tokenizer):
    ds = datasets.Dataset.from_dict(s1k_rows(3))
    # a limit just below the shortest row (lengths depend on the tokenizer)
    full, _ = tokenise(ds, toy_tokenizer, _cfg(max_length=10_000))
    limit = int(full["n_tokens"].min()) - 1
    with pytest.raises(DataError, match="max_length"):
        tokenise(ds, toy_tokenizer, _cfg(max_length=limit, overlong="error"))
    df, stats = tokenise(ds, toy_tokenizer, _cfg(max_length=limit, overlong="truncate"))
    assert stats["truncated"] == 3 and df["n_tokens"].max() == limit
    with pytest.raises(DataError, match="no usable rows"):
        tokenise(ds, toy_tokenizer, _cfg(max_length=limit, overlong="skip"))


def _json_cfg(path):
    return validate({"data": {"dataset": "json", "data_files": str(path)}})["data"]


def test_empty_and_undecodable_files_are_named(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(DataError, match=f"data.data_files: {empty} is empty"):
        load_rows(_json_cfg(empty))
    bad = tmp_path / "latin1.jsonl"
    good = '{"question": "q", "deepseek_thinking_trajectory": "t", '
    bad.write_bytes(
        (good + '"deepseek_attempt": "a"}\n').encode()
        + (good + '"deepseek_attempt": "caf').encode()
        + 'é"}\n'.encode("latin-1")
    )
    offset = bad.read_bytes().index(b"\xe9")
    with pytest.raises(DataError, match=rf"byte offset {offset} \(line 2\)"):
        load_rows(_json_cfg(bad))


def test_duplicate_rows_error_or_counted_skip(toy_tokenizer):
    rows = s1k_rows(5)
    for col in rows:
        rows[col][3] = rows[col][1]  # row 3 repeats row 1
    ds = datasets.Dataset.from_dict(rows)
    with pytest.raises(DataError, match=r"1 duplicate row\(s\): row 3 repeats row 1"):
        tokenise(ds, toy_tokenizer, _cfg())
    df, stats = tokenise(ds, toy_tokenizer, _cfg(duplicate_rows="skip"))
    assert stats["duplicates"] == 1 and stats["skipped"] == 1
    assert df["doc"].to_list() == [0, 1, 2, 4]


# Tests added from mutation testing (`make mutation SESSIONS=chat`).


def test_system_prompt_is_the_first_turn_of_prompt_and_example(toy_tokenizer):
    tok, system = toy_tokenizer, "Be brief."
    prompt = build_prompt(tok, "Q?", system=system)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n"
        "<|im_start|>assistant\n" + THINK_MARKER
    )
    ex = build_example(tok, "Q?", "t", "a", system=system)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ex.input_ids[: len(ids)] == ids
    head = tok(build_prompt(tok, "Q?", system, think=False), add_special_tokens=False)
    n = len(head["input_ids"])
    assert ex.labels[:n] == [IGNORE_INDEX] * n and ex.labels[n] != IGNORE_INDEX
    assert build_prompt(tok, "Q?", system="") == build_prompt(tok, "Q?")


class _CharTokenizer:
    """One token per character; with `merge`, "\\n<" is one token (a BPE
    merge across the prompt's end). Adds a BOS id when asked for specials."""

    chat_template = "toy"
    name_or_path = "org/char-tok"

    def __init__(self, render=None, merge=False):
        self.merge = merge
        self.render = render or (
            lambda m: "".join(f"<{x['role']}>\n{x['content']}\n" for x in m)
        )

    def apply_chat_template(self, msgs, tokenize, add_generation_prompt=False):
        assert not tokenize
        return self.render(msgs) + ("<assistant>\n" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=True):
        ids = [ord(c) for c in (text.replace("\n<", "\x00") if self.merge else text)]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}


def test_example_tokens_are_the_rendered_text_without_added_specials():
    """A tokenizer that would add a BOS: the chat template already renders
    every special token, so the example is the text's own tokens."""
    tok = _CharTokenizer()
    ex = build_example(tok, "Q?", "t", "a")
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Q?"}], tokenize=False, add_generation_prompt=True
    )
    assert ex.input_ids[: len(text)] == tok(text, False)["input_ids"]
    assert ex.labels[: len(text)] == [IGNORE_INDEX] * len(text)


def test_template_that_breaks_the_prefix_fails_clearly():
    # Renders the assistant's history turn differently from its header.
    def render(msgs):
        return "".join(
            f"[{m['role']}]: {m['content']}\n"
            if m["role"] == "assistant"
            else f"<{m['role']}>\n{m['content']}\n"
            for m in msgs
        )

    with pytest.raises(ValueError) as err:
        build_example(_CharTokenizer(render), "Q?", "t", "a")
    assert str(err.value) == "chat template does not render the prompt as a prefix"
    # Text prefix, token mismatch: "\n" + "<|im_start|>think" merge into "\n<".
    question = "Which integer is the answer to this forty-plus character question?"
    with pytest.raises(ValueError) as err:
        build_example(_CharTokenizer(merge=True), question, "t", "a")
    assert str(err.value) == (
        "tokenisation of the prompt is not a prefix of the example "
        f"(question {question[:40]!r})"
    )


def test_missing_template_error_names_the_tokenizer_and_the_fix():
    from types import SimpleNamespace

    named = SimpleNamespace(chat_template=None, name_or_path="org/base-tok")
    with pytest.raises(ValueError) as err:
        build_prompt(named, "Q?")
    assert str(err.value) == (
        "tokenizer 'org/base-tok' has no chat template; the s1 format needs one "
        "(set tokenizer.chat_template or use an instruct model's tokenizer)"
    )

    class Bare:  # no chat_template attribute, no name
        pass

    with pytest.raises(ValueError, match="tokenizer 'Bare' has no chat template"):
        build_example(Bare(), "Q?", "t", "a")


def test_split_completion_edge_cases():
    # No marker: the end-of-turn token is not part of the text.
    assert split_completion("just text<|im_end|>") == ("just text", None)
    # Answer at once (empty thinking).
    assert split_completion("<|im_start|>answer\nAnswer: 5<|im_end|>") == ("", "5")
    # A longer thinking: the answer is what follows the marker.
    got = split_completion("Let me think.\n<|im_start|>answer\nAnswer: \\boxed{7}")
    assert got == ("Let me think.", "\\boxed{7}")
    # Thinking ends at the first marker; a second one belongs to the answer.
    thinking, answer = split_completion(
        "t\n<|im_start|>answer\nAnswer: 1\n<|im_start|>answer\nAnswer: 2"
    )
    assert thinking == "t" and answer.startswith("1")
