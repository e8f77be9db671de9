"""The sweep as DAG axes (issue 30): shared stages run once, the members'
own stages once per member, the default member at today's paths."""

import re

import polars as pl
import pytest
from dryrun import snakemake
from wfrun import clone, job_stats, reference_run, results
from wfrun import snakemake as run_snakemake

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
    # The adapters' evaluation: the base and the full fine-tune are graded
    # once, every member's 3 LoRA variants on the 3 benchmarks.
    mixed = {"eval_generate", "eval_grade", "eval_summary"}
    assert sweep["eval_grade"] == plain["eval_grade"] + (members - 1) * 3 * 3
    assert sweep["eval_summary"] == plain["eval_summary"] + (members - 1) * 3
    for rule, n in plain.items():
        if rule in mixed:
            continue
        if rule in MEMBER_RULES:
            expected = n * (trained if rule == "train_rank1" else members)
        else:
            expected = n
        assert sweep.get(rule) == expected, (rule, n, sweep.get(rule))
    assert sweep["sweep_checkpoint"] == members - trained
    # vLLM on the embedded device (cpu): one job for the base, its LoRAs and
    # the full fine-tune (eval.vllm.one_job), once; every other member has
    # two (its LoRA, its ablated LoRAs): the base's and the full fine-tune's
    # generations are shared.
    assert plain["eval_generate"] == 1
    assert sweep["eval_generate"] == 1 + 2 * (members - 1)
    assert sweep["train_full"] == plain["train_full"] == 1
    assert sweep["bench_prepare"] == plain["bench_prepare"] == 3


# The suite's toy sweep: ranks 1, 2, 4 x seeds 0, 1 on the micro shape,
# grown from the session's reference run (its data, base and full
# evaluations and default member are reused, as a user's finished run is).
# LoRA directions only (sweep.kinds), so the members need no SAE: CI's time
# budget (SAE persistence: tests/unit/test_sweeps_persistence.py, and the
# embedded sweep in docs/sweeps.md).
TOY_SWEEP = {"sweep": {"ranks": [1, 2, 4], "seeds": [0, 1], "kinds": ["lora"]}}


@pytest.fixture(scope="module")
def toy_sweep(tmp_path_factory):
    ref = reference_run(tmp_path_factory.getbasetemp())
    keep = [p.name for p in results(ref).iterdir()]
    work = clone(ref, tmp_path_factory.mktemp("sweep"), keep, TOY_SWEEP)
    proc = run_snakemake(work, ["sweep"])
    return work, job_stats(proc.stderr)


def test_toy_sweep_reuses_the_shared_stages_and_compares_every_member(toy_sweep):
    work, jobs = toy_sweep
    # Nothing shared or of the default member reruns: five new members
    # trained, evaluated and extracted (no SAE: kinds [lora]), then compared.
    assert jobs["train_rank1"] == 5 and "train_sae" not in jobs, jobs
    for shared in ("train_full", "sft_dataset", "bench_prepare", "toy_base_model"):
        assert shared not in jobs, jobs
    assert jobs["eval_generate"] == 5, "one LoRA engine per new member"
    out = results(work) / "sweep"
    recovery = pl.read_parquet(out / "recovery.parquet")
    members = recovery.filter(pl.col("level") == "member")
    assert sorted(set(members["tag"])) == [
        f"r{r}-s{s}" for r in (1, 2, 4) for s in (0, 1)
    ]
    ranks = recovery.filter(pl.col("level") == "rank")
    assert sorted(ranks["rank"].to_list()) == [1, 2, 4]
    assert (ranks["n_seeds"] == 2).all()
    # Trainable parameters grow with the rank, exactly r times rank 1's.
    params = dict(zip(members["tag"], members["trainable_params"], strict=True))
    assert params["r4-s0"] == 4 * params["r1-s0"] == 2 * params["r2-s1"]
    persistence = pl.read_parquet(out / "persistence.parquet")
    assert set(persistence["member"]) == {
        f"r{r}-s{s}" for r in (1, 2, 4) for s in (0, 1)
    } - {"r1-s0"}
    assert set(persistence["kind"]) == {"lora"}
    # One row per reference LoRA feature and other member.
    n_ref = pl.read_parquet(results(work) / "features/lora/features.parquet").height
    assert persistence.height == 5 * n_ref
    assert (persistence["abs_corr"] <= 1 + 1e-6).all()
    assert (results(work) / "figures" / "fig_recovery_rank.png").stat().st_size > 0
    # The default member stays at today's paths, the others under sweep/.
    assert (out / "r4-s1" / "train" / "rank1" / "adapter").is_dir()
    assert not (out / "r1-s0").exists()
