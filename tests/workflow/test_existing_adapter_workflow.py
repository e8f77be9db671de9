"""An existing adapter instead of training, through the real workflow.

From a copy of the shared micro run's toy world and data, model.adapter names
a rank-1 adapter dir a test wrote on the toy base: no training is scheduled,
the adapter lands at train/rank1/adapter with its provenance, and the stages
after it (components, surgery) run from it. A rank-2 adapter is refused when
the config is validated, naming the key, before any job.
"""

from __future__ import annotations

import json

import pytest
import wfrun
from conftest import TARGETS

from lorascope.core.models import load_causal_lm

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return wfrun.reference_run(tmp_path_factory.getbasetemp())


def write_adapter(base_dir, out, r):
    """A random rank-r LoRA on the toy base, saved the way PEFT saves one."""
    from peft import LoraConfig, get_peft_model

    model = load_causal_lm(str(base_dir), device="cpu")
    cfg = LoraConfig(r=r, target_modules=TARGETS, init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(out)
    return out


def test_existing_adapter_replaces_training(reference, tmp_path):
    base = wfrun.results(reference) / "toy" / "base_model"
    adapter = write_adapter(base, tmp_path / "published", r=1)
    work = wfrun.clone(
        reference, tmp_path / "w", ["toy", "data"], {"model": {"adapter": str(adapter)}}
    )
    plan = wfrun.snakemake(work, ["all"], ["-n", "--quiet", "rules"]).stdout
    assert "adapter_import" in plan and "train_rank1" not in plan, plan
    targets = ["components.parquet", "adapters/rank1-attn-ablated"]
    wfrun.snakemake(work, [wfrun.target(t, work) for t in targets])
    out = wfrun.results(work) / "train" / "rank1" / "adapter"
    source = json.loads((out / "SOURCE.json").read_text())
    assert source == {"path": str(adapter)}
    assert (out / "adapter_model.safetensors").read_bytes() == (
        adapter / "adapter_model.safetensors"
    ).read_bytes()


def test_wrong_rank_is_refused_before_any_job(reference, tmp_path):
    base = wfrun.results(reference) / "toy" / "base_model"
    adapter = write_adapter(base, tmp_path / "rank2", r=2)
    work = wfrun.clone(
        reference, tmp_path / "w", ["toy", "data"], {"model": {"adapter": str(adapter)}}
    )
    proc = wfrun.snakemake(work, ["all"], check=False)
    assert proc.returncode != 0
    assert "model.adapter" in proc.stderr and "train.lora.r" in proc.stderr
    assert not (wfrun.results(work) / "train").exists()  # nothing started
