"""Checks of the scheduled jobs before any starts (issue 33, item 7):
devices, target modules, SAE steps. Snakemake removes a job's old outputs
when it starts it, so these must fail before any job, naming the key.
tests/workflow/test_bad_input_finished_run.py runs them through snakemake."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import TARGETS

from lorascope.core.components import target_modules_problem
from lorascope.core.config import load_schema, validate
from lorascope.core.models import skeleton_module_names
from lorascope.workflow.preflight import job_devices, preflight_problems
from lorascope.workflow.wiring import declared


class Named(dict):
    """A stand-in for Snakemake's named lists (params, input, output)."""

    def __getattr__(self, name):
        return self[name]

    def __iter__(self):
        return iter(self.values())


def job(rule, params=None, inputs=None, outputs=(), gpu=0):
    return SimpleNamespace(
        rule=SimpleNamespace(name=rule),
        params=Named(params or {}),
        input=Named(inputs or {}),
        output=list(outputs),
        resources=Named({"gpu": gpu}),
    )


@pytest.fixture()
def config():
    return validate({"run": "t"})


def sae_job(config, manifest="m/manifest.json", **params):
    keys = ("seed", "device", "sae")
    return job(
        "train_sae",
        {"config": declared(config, keys, load_schema()), **params},
        {"manifest": str(manifest)},
        ["results/t/sae/model", "results/t/sae/metrics.json"],
    )


def problems(config, jobs, local=True, gpus=0, names=None):
    return preflight_problems(
        config, jobs, local, count=lambda: gpus, module_names=names or no_model
    )


def no_model(path, revision):
    raise OSError("not on disk")


# --- devices --------------------------------------------------------------------


def test_a_section_device_overrides_the_top_level_one(config):
    config["sae"]["device"] = "cuda:1"
    assert job_devices(sae_job(config).params) == [("sae.device", "cuda:1")]
    config["sae"]["device"] = None
    config["device"] = "cuda"
    assert job_devices(sae_job(config).params) == [("device", "cuda")]
    plain = job("activations_extract", {"device": "cpu"})
    assert job_devices(plain.params) == [("device", "cpu")]


def test_cuda_without_a_gpu_is_named_before_any_job(config):
    config["sae"]["device"] = "cuda"
    (problem,) = problems(config, [sae_job(config)], gpus=0)
    assert problem.startswith("sae.device: 'cuda', but this machine has no CUDA")
    assert "train_sae" in problem
    assert problems(config, [sae_job(config)], gpus=1) == []
    config["sae"]["device"] = "cuda:1"
    (problem,) = problems(config, [sae_job(config)], gpus=1)
    assert "has 1 CUDA" in problem


def test_auto_and_cpu_need_no_gpu(config):
    for device in ("auto", "cpu"):
        config["sae"]["device"] = device
        assert problems(config, [sae_job(config)], gpus=0) == []


def test_on_a_cluster_the_profile_must_give_the_job_a_gpu(config):
    """The submit node may have no GPU: there the check is that the job's
    resources ask for one (the job checks the card itself)."""
    config["sae"]["device"] = "cuda"
    no_gpu, gpu = sae_job(config), sae_job(config)
    gpu.resources = Named({"gpu": 1})
    (problem,) = problems(config, [no_gpu], local=False)
    assert problem.startswith("sae.device: 'cuda', but the profile gives rule")
    assert problems(config, [gpu], local=False) == []
    gpu.resources = Named({"gres": "gpu:a100:1"})
    assert problems(config, [gpu], local=False) == []


# --- SAE steps --------------------------------------------------------------------


def manifest(tmp_path, n_tokens):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"n_tokens": n_tokens}))
    return path


def test_warmup_longer_than_training_is_named(config, tmp_path):
    config["sae"].update(epochs=3, batch_size=512, lr_warmup_steps=48)
    path = manifest(tmp_path, 8350)  # 3 x 8350 / 512 = 48.9: 48 steps
    (problem,) = problems(config, [sae_job(config, path)])
    assert problem.startswith("sae.lr_warmup_steps=48 is not below the 48 training")
    assert str(path) in problem
    config["sae"]["lr_warmup_steps"] = 47
    assert problems(config, [sae_job(config, path)]) == []


def test_less_than_one_batch_is_named(config, tmp_path):
    config["sae"].update(epochs=1, batch_size=4096)
    (problem,) = problems(config, [sae_job(config, manifest(tmp_path, 100))])
    assert problem.startswith("sae.batch_size: 1 epochs of 100 tokens")


def test_a_manifest_being_rebuilt_is_not_read(config, tmp_path):
    """Its token count after the rebuild is not known: the job checks."""
    config["sae"].update(epochs=1, lr_warmup_steps=10**6)
    path = manifest(tmp_path, 100)
    extract = job("activations_extract", outputs=[str(path)])
    assert problems(config, [extract, sae_job(config, path)]) == []
    assert problems(config, [sae_job(config, tmp_path / "missing.json")]) == []


# --- target modules -------------------------------------------------------------


def train_job(base_dir, adapter=None):
    """A train_rank1 job; `adapter`: its finished output (None: none yet)."""
    params, inputs = {"base": str(base_dir), "config": {}}, {"base": str(base_dir)}
    if adapter is not None:
        adapter.mkdir(exist_ok=True)
    out = [str(adapter if adapter is not None else base_dir / "no-adapter")]
    return job("train_rank1", params, inputs, out)


def test_target_modules_the_base_model_lacks_are_named(config, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    phi3 = {"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "layers"}
    finished = train_job(base, tmp_path / "adapter")
    (problem,) = problems(config, [finished], names=lambda p, r: phi3)
    assert problem.startswith("train.lora.target_modules: the base model")
    assert "'q_proj', 'k_proj', 'v_proj', 'gate_proj', 'up_proj'" in problem
    config["train"]["lora"]["target_modules"] = ["o_proj", "down_proj"]
    assert problems(config, [finished], names=lambda p, r: phi3) == []


def test_left_to_the_job_without_a_finished_adapter_or_a_base_on_disk(config, tmp_path):
    phi3 = lambda p, r: {"qkv_proj", "o_proj"}  # noqa: E731
    assert problems(config, [train_job(tmp_path)], names=phi3) == []
    adapter = tmp_path / "adapter"
    assert problems(config, [train_job(tmp_path / "not-yet", adapter)]) == []
    assert problems(config, [train_job(tmp_path, adapter)], names=no_model) == []


def test_skeleton_names_come_from_the_config_alone(tiny_model_dir, tmp_path):
    """Built on the meta device from config.json: no weights are read."""
    names = skeleton_module_names(str(tiny_model_dir))
    assert target_modules_problem(names, TARGETS, "tiny") is None
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text(
        (tiny_model_dir / "config.json").read_text()
    )
    assert skeleton_module_names(str(config_only)) == names
    with pytest.raises(OSError):
        skeleton_module_names(str(tmp_path / "nothing"))


def test_held_out_documents_are_left_out_of_the_step_count(config, tmp_path):
    """sae.heldout_every = 10 over 20 documents holds out docs 0 and 10: the
    check counts 18/20 of the tokens (the job counts them exactly)."""
    config["sae"].update(epochs=1, batch_size=100, heldout_every=10)
    path = tmp_path / "manifest.json"
    shards = [{"doc_range": [0, 9]}, {"doc_range": [10, 19]}]
    path.write_text(json.dumps({"n_tokens": 1000, "shards": shards}))
    config["sae"]["lr_warmup_steps"] = 9  # 900 tokens / 100 = 9 steps
    (problem,) = problems(config, [sae_job(config, path)])
    assert problem.startswith("sae.lr_warmup_steps=9 is not below the 9 training")
    config["sae"]["lr_warmup_steps"] = 8
    assert problems(config, [sae_job(config, path)]) == []
    config["sae"].update(heldout_every=0, lr_warmup_steps=9)  # all 10 steps
    assert problems(config, [sae_job(config, path)]) == []


def test_target_modules_without_an_attention_or_mlp_module_are_named(config, tmp_path):
    """The KL ablation's groups and the attention-/MLP-ablated adapters need
    both groups: an attention-only adapter failed only after training."""
    base = tmp_path / "base"
    base.mkdir()
    for targets, missing in (
        (["q_proj", "v_proj"], "no mlp module (gate/up/down_proj)"),
        (["down_proj"], "no attn module (q/k/v/o_proj)"),
    ):
        config["train"]["lora"]["target_modules"] = targets
        for job_ in (train_job(base), train_job(base, tmp_path / "adapter")):
            (problem,) = problems(config, [job_], names=no_model)
            assert problem.startswith(f"train.lora.target_modules: {targets}")
            assert missing in problem
    config["train"]["lora"]["target_modules"] = ["o_proj", "down_proj"]
    assert problems(config, [train_job(base)], names=no_model) == []
