"""Rebuild semantics, edits of user files, code, mtimes and the checkout's
place: each must schedule exactly its jobs (tests/support/rebuild_matrix.py)."""

import pytest
import wfrun
from rebuild_matrix import (
    FILE_ROWS,
    FULL_CHECKPOINT,
    FULL_CHECKPOINT_ROWS,
    run_matrix,
)

pytestmark = pytest.mark.timeout(1200)


def test_file_and_code_edits_rebuild_exactly_their_jobs(tmp_path_factory):
    reference = wfrun.reference_run(tmp_path_factory.getbasetemp())
    run_matrix(reference, tmp_path_factory, FILE_ROWS)


def test_a_local_full_finetune_reruns_exactly_what_reads_it(tmp_path_factory):
    """model.full_finetune naming a local dir (issue 33, item 2): retraining
    it into the same folder, or restoring an older copy, reruns its pointer,
    the full model's evaluation and Table 1."""
    reference = wfrun.reference_run(tmp_path_factory.getbasetemp())
    run_matrix(reference, tmp_path_factory, FULL_CHECKPOINT_ROWS, FULL_CHECKPOINT)
