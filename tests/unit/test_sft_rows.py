"""The toy SFT parquet is read with polars (FrameRows), not `datasets`: the
same rows, the same tokenised table and stats, `limit` and the missing-column
check as through `load_dataset`."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import s1k_rows

from lorascope.core.config import validate
from lorascope.data.sft import DataError, FrameRows, load_rows, tokenise


@pytest.fixture
def s1k_parquet(tmp_path):
    path = tmp_path / "s1k.parquet"
    pl.DataFrame(s1k_rows(6)).write_parquet(path)
    return path


def _cfg(**data):
    return validate({"data": data})["data"]


@pytest.mark.parametrize("limit", [None, 4])
def test_toy_rows_equal_datasets_rows(s1k_parquet, toy_tokenizer, limit):
    toy_cfg = _cfg(dataset="toy", limit=limit)
    files_cfg = _cfg(dataset="parquet", data_files=str(s1k_parquet), limit=limit)
    ours = load_rows(toy_cfg, toy_parquet=str(s1k_parquet))
    theirs = load_rows(files_cfg)
    assert isinstance(ours, FrameRows)
    assert ours.column_names == theirs.column_names
    assert len(ours) == len(theirs) == (limit or 6)
    assert list(ours) == list(theirs)
    assert ours[1] == theirs[1]
    df_ours, stats_ours = tokenise(ours, toy_tokenizer, toy_cfg)
    df_theirs, stats_theirs = tokenise(theirs, toy_tokenizer, files_cfg)
    assert df_ours.equals(df_theirs) and stats_ours == stats_theirs


def test_toy_rows_missing_column_and_no_rows_fail_naming_them(tmp_path):
    path = tmp_path / "s1k.parquet"
    pl.DataFrame(s1k_rows(2)).drop("deepseek_attempt").write_parquet(path)
    with pytest.raises(DataError, match=r"missing column\(s\) \[.deepseek_attempt.\]"):
        load_rows(_cfg(dataset="toy"), toy_parquet=str(path))
    empty = tmp_path / "empty.parquet"
    pl.DataFrame(s1k_rows(2)).head(0).write_parquet(empty)
    with pytest.raises(DataError, match="no rows"):
        load_rows(_cfg(dataset="toy"), toy_parquet=str(empty))
