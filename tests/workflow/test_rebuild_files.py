"""Rebuild semantics, edits of user files, code, mtimes and the checkout's
place: each must schedule exactly its jobs (tests/support/rebuild_matrix.py)."""

import pytest
import wfrun
from rebuild_matrix import FILE_ROWS, run_matrix

pytestmark = pytest.mark.timeout(1200)


def test_file_and_code_edits_rebuild_exactly_their_jobs(tmp_path_factory):
    reference = wfrun.reference_run(tmp_path_factory.getbasetemp())
    run_matrix(reference, tmp_path_factory, FILE_ROWS)
