"""The sweep as DAG axes (issue 30): shared stages run once, the members'
own stages once per member, the default member at today's paths."""

import re

import pytest
from dryrun import snakemake

from lorascope.workflow.sweep import MEMBER_RULES

EMBEDDED = "config/config.yaml"


def job_counts(*configs: str, extra=()) -> dict[str, int]:
    """rule -> jobs of a from-scratch dry run (`--forceall`) of `all`."""
    proc = snakemake(
        "-n", "--forceall", "--quiet", "rules", "all", "--configfile", *configs, *extra
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M))
    return {rule: int(n) for rule, n in counts.items() if rule not in ("total", "all")}


@pytest.fixture(scope="module")
def plain():
    return job_counts(EMBEDDED)


@pytest.fixture(scope="module")
def sweep():
    return job_counts(EMBEDDED, "config/sweep.yaml")


def test_shared_stages_run_once_and_member_stages_once_per_member(plain, sweep):
    # config/sweep.yaml: ranks 1, 2, 4 x seeds 0, 1 = 6 trained members,
    # each saved at 2 checkpoints = 12 more: 18 members, the default one of
    # them at today's paths.
    members, trained = 18, 6
    for rule, n in plain.items():
        if rule == "eval_generate":
            continue
        if rule in MEMBER_RULES:
            expected = n * (trained if rule == "train_rank1" else members)
        else:
            expected = n
        assert sweep.get(rule) == expected, (rule, n, sweep.get(rule))
    assert sweep["sweep_checkpoint"] == members - trained
    # vLLM: the base-and-loras and full engines once, one LoRA engine per
    # other member (the base's and the full fine-tune's generations shared).
    assert plain["eval_generate"] == 2
    assert sweep["eval_generate"] == 2 + members - 1
    assert sweep["train_full"] == plain["train_full"] == 1
    assert sweep["bench_prepare"] == plain["bench_prepare"] == 3
