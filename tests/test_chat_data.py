"""s1 formatting, assistant-only labels at exact token positions, data errors."""

import datasets
import polars as pl
import pytest
from conftest import s1k_rows

from lorascope.core.chat import (
    ANSWER_MARKER,
    IGNORE_INDEX,
    THINK_MARKER,
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
