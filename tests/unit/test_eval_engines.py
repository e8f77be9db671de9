"""Which variants each generation job serves (lorascope.evaluation.engines)."""

import pytest

from lorascope.evaluation.engines import (
    ONE_JOB,
    engine_groups,
    one_vllm_job,
    shared_generation_jobs,
)

VARIANTS = ["base", "rank1", "full", "rank1-attn-ablated", "rank1-mlp-ablated"]
ABLATED = ["rank1-attn-ablated", "rank1-mlp-ablated"]
LORAS = ["rank1", *ABLATED]


@pytest.mark.parametrize(
    ("one_job", "device", "expected"),
    [
        (None, "cpu", True),
        (None, "auto", False),  # resolved on the job's host: may have a GPU
        (None, "cuda", False),
        (None, "cuda:1", False),
        (True, "cuda", True),
        (False, "cpu", False),
    ],
)
def test_one_vllm_job_follows_the_key_else_the_configured_device(
    one_job, device, expected
):
    assert one_vllm_job({"one_job": one_job}, device) is expected


def test_vllm_on_cpu_serves_every_variant_in_one_job():
    jobs, member = engine_groups("vllm", {"one_job": None}, "cpu", VARIANTS, ABLATED)
    assert jobs == {ONE_JOB: ["base", *LORAS, "full"]}
    # A sweep member's own LoRAs never join the shared base/full job.
    assert member == {"rank1": ["rank1"], "ablated": ABLATED}


def test_vllm_on_a_gpu_gives_the_full_fine_tune_a_job_of_its_own():
    jobs, member = engine_groups("vllm", {"one_job": None}, "auto", VARIANTS, ABLATED)
    assert jobs == {"base-and-loras": ["base", *LORAS], "full": ["full"]}
    assert member == {"rank1": ["rank1"], "ablated": ABLATED}


def test_hf_gives_every_variant_a_job():
    jobs, member = engine_groups("hf", {"one_job": True}, "cpu", VARIANTS, ABLATED)
    assert jobs == {v: [v] for v in VARIANTS}
    assert member == {v: [v] for v in LORAS}


def test_every_variant_is_served_exactly_once():
    for backend in ("hf", "vllm"):
        for one_job in (None, True, False):
            for device in ("cpu", "auto"):
                jobs, member = engine_groups(
                    backend, {"one_job": one_job}, device, VARIANTS, ABLATED
                )
                served = [v for vs in jobs.values() for v in vs]
                assert sorted(served) == sorted(VARIANTS)
                assert sorted(v for vs in member.values() for v in vs) == sorted(LORAS)


def test_unknown_backend_fails_naming_it():
    with pytest.raises(ValueError, match="eval.backend: unknown backend 'tgi'"):
        engine_groups("tgi", {"one_job": None}, "cpu", VARIANTS, ABLATED)


@pytest.mark.parametrize(
    ("backend", "device", "jobs"),
    [("vllm", "cpu", 1), ("vllm", "auto", 2), ("hf", "cpu", 2)],
)
def test_shared_generation_jobs_counts_the_base_and_full_jobs(backend, device, jobs):
    eval_cfg = {"backend": backend, "vllm": {"one_job": None}}
    assert shared_generation_jobs(eval_cfg, device) == jobs
