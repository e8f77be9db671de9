"""Rebuild semantics, config edits: each must schedule exactly its jobs
(the matrix and its runner: tests/support/rebuild_matrix.py)."""

import pytest
import wfrun
from rebuild_matrix import CONFIG_ROWS, run_matrix

pytestmark = pytest.mark.timeout(1200)


def test_config_edits_rebuild_exactly_their_jobs(tmp_path_factory):
    reference = wfrun.reference_run(tmp_path_factory.getbasetemp())
    run_matrix(reference, tmp_path_factory, CONFIG_ROWS)
