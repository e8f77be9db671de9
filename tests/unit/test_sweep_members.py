"""Sweep members (rank x seed x checkpoint), their checks, and the adapters
a training saves at chosen steps (issue 30)."""

import json
import re

import datasets
import pytest
import torch
from conftest import s1k_rows
from safetensors.torch import load_file

from lorascope.core.config import ConfigError, validate
from lorascope.core.io import write_parquet
from lorascope.data.sft import tokenise
from lorascope.train.steps import export_step, training_steps
from lorascope.train.trainer import train
from lorascope.workflow.sweep import member_pattern, sweep_members, sweep_problems


def _cfg(sweep=None, **over):
    return validate({"run": "t", "sweep": sweep or {}, **over})


def test_no_sweep_is_the_default_member_alone():
    (member,) = sweep_members(_cfg())
    assert (member.tag, member.rank, member.seed, member.step, member.prefix) == (
        "r1-s0",
        1,
        0,
        None,
        "",
    )
    assert sweep_problems(_cfg()) == []


def test_grid_keeps_the_default_member_at_todays_paths():
    members = sweep_members(
        _cfg({"ranks": [1, 4], "seeds": [0, 1], "checkpoints": [5]})
    )
    tags = [m.tag for m in members]
    assert tags == [
        "r1-s0",
        "r1-s0-step5",
        "r1-s1",
        "r1-s1-step5",
        "r4-s0",
        "r4-s0-step5",
        "r4-s1",
        "r4-s1-step5",
    ]
    assert members[0].prefix == "" and members[0].trained
    assert all(m.prefix == f"sweep/{m.tag}/" for m in members[1:])
    step = members[1]
    assert (step.step, step.parent, step.trained) == (5, "r1-s0", False)
    # An axis left null is the default member's value.
    only_ranks = sweep_members(_cfg({"ranks": [2]}, seed=3))
    assert [m.tag for m in only_ranks] == ["r1-s3", "r2-s3"]


def test_member_pattern_matches_exactly_the_chosen_prefixes():
    members = sweep_members(_cfg({"ranks": [1, 2], "checkpoints": [3]}))
    trained = re.compile(member_pattern(members, lambda m: m.trained))
    assert trained.fullmatch("") and trained.fullmatch("sweep/r2-s0/")
    assert not trained.fullmatch("sweep/r2-s0-step3/")
    assert not trained.fullmatch("sweep/r8-s0/")
    # Never an empty string (Snakemake would read it as no constraint).
    assert member_pattern(members[:1]) == "(?:)"
    assert member_pattern(members, lambda m: False) == "(?!)"


@pytest.mark.parametrize("axis", ["ranks", "seeds", "checkpoints"])
def test_an_empty_axis_fails_naming_its_key(axis):
    with pytest.raises(ConfigError, match=rf"sweep\.{axis}"):
        _cfg({axis: []})


def test_a_rank_above_the_engines_max_lora_rank_is_named():
    # A config error, checked beside train.lora.r's (core.checks).
    with pytest.raises(ConfigError) as err:
        _cfg({"ranks": [1, 16]}, eval={"backend": "vllm", "vllm": {"max_lora_rank": 8}})
    (problem,) = [p for p in str(err.value).split("\n  ") if p.startswith("sweep.")]
    assert (
        problem.startswith("sweep.ranks: [16]") and "eval.vllm.max_lora_rank" in problem
    )
    hf = _cfg({"ranks": [16]}, eval={"backend": "hf"})
    assert sweep_problems(hf) == []


def test_a_sweep_with_an_existing_adapter_is_refused():
    cfg = _cfg({"seeds": [0, 1]}, model={"adapter": "some/adapter"})
    (problem,) = sweep_problems(cfg)
    assert problem.startswith("sweep:") and "model.adapter" in problem


def test_checkpoint_steps_beyond_the_training_are_named():
    cfg = _cfg({"checkpoints": [10, 60]}, train={"rank1": {"max_steps": 50}})
    (problem,) = sweep_problems(cfg)
    assert problem.startswith("sweep.checkpoints: step(s) [60]")
    assert "train.rank1.max_steps" in problem
    # Epochs: the toy's rows give the steps (1000 rows / 16 per batch = 63).
    toy = _cfg(
        {"checkpoints": [63, 64]},
        data={"dataset": "toy"},
        train={
            "rank1": {
                "max_steps": -1,
                "epochs": 1,
                "per_device_batch_size": 16,
                "gradient_accumulation_steps": 1,
            }
        },
    )
    (problem,) = sweep_problems(toy)
    assert "[64]" in problem and "63" in problem
    # An existing SFT set's rows win over the toy's count.
    assert "[64]" not in "".join(sweep_problems(toy, sft_rows=2000))


def test_training_steps_counts_like_the_trainer():
    hp = {"max_steps": -1, "epochs": 2, "per_device_batch_size": 2}
    assert training_steps(8, {**hp, "gradient_accumulation_steps": 3}) == 4
    assert training_steps(9, {**hp, "gradient_accumulation_steps": 1}) == 10
    assert (
        training_steps(9, {**hp, "max_steps": 7, "gradient_accumulation_steps": 1}) == 7
    )


@pytest.fixture(scope="module")
def sft8(tmp_path_factory, toy_tokenizer):
    data_cfg = validate({"run": "t"})["data"]
    df, _ = tokenise(datasets.Dataset.from_dict(s1k_rows(8)), toy_tokenizer, data_cfg)
    path = tmp_path_factory.mktemp("sft") / "sft.parquet"
    write_parquet(df, path)
    return path


def _train_cfg(checkpoints, **rank1):
    hp = {"max_steps": -1, "epochs": 1, "per_device_batch_size": 2}
    hp |= {"gradient_accumulation_steps": 1, **rank1}
    cfg = validate(
        {"run": "t", "device": "cpu", "train": {"rank1": hp, "save_steps": 100}}
    )
    out = {k: cfg[k] for k in ("seed", "device", "model", "train")}
    return out | {"sweep": {"checkpoints": checkpoints}}


def _weights(adapter_dir):
    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def test_training_saves_the_adapter_at_each_checkpoint_step(
    tmp_path, tiny_model_dir, sft8
):
    cfg = _train_cfg([1, 4])  # 8 rows / 2 per batch = 4 steps: the last one too
    out = train("rank1", str(tiny_model_dir), str(sft8), tmp_path, cfg)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in log) == training_steps(
        8, cfg["train"]["rank1"]
    )
    steps = out / "steps"
    assert sorted(p.name for p in steps.iterdir()) == ["step-1", "step-4"]
    final, last, first = (
        _weights(out),
        _weights(steps / "step-4"),
        _weights(steps / "step-1"),
    )
    assert final.keys() == last.keys() == first.keys()
    assert all(torch.equal(final[k], last[k]) for k in final), "step 4 is the end"
    assert any(not torch.equal(final[k], first[k]) for k in final), "step 1 is earlier"
    member = export_step(out, 1, tmp_path / "member" / "adapter")
    assert json.loads((member / "STEP.json").read_text()) == {"step": 1}
    assert (member / "resolved_config.yaml").is_file()
    assert all(torch.equal(first[k], _weights(member)[k]) for k in first)
    with pytest.raises(FileNotFoundError, match="no adapter saved at step 2"):
        export_step(out, 2, tmp_path / "other" / "adapter")


def test_a_checkpoint_beyond_the_training_fails_before_it_trains(
    tmp_path, tiny_model_dir, sft8
):
    cfg = _train_cfg([5])
    with pytest.raises(
        ValueError, match=r"sweep.checkpoints: step\(s\) \[5\].*last step 4"
    ):
        train("rank1", str(tiny_model_dir), str(sft8), tmp_path, cfg)
    assert not (tmp_path / "adapter").exists()
    assert not (tmp_path / "checkpoints" / "checkpoint-1").exists()


def test_plan_split_puts_each_rule_on_its_side():
    from lorascope.workflow.sweep import plan_split

    assert plan_split(_cfg(), []) == []  # no sweep, no sweep lines
    cfg = _cfg({"ranks": [1, 4], "checkpoints": [5]})  # 4 members, 2 trained
    rows = [
        {"rule": "train_full", "jobs": 1, "gpu_h": 10.0},
        {"rule": "train_rank1", "jobs": 2, "gpu_h": 4.0},
        {"rule": "train_sae", "jobs": 4, "gpu_h": 2.0},
        # 2 shared engines (base with the default LoRAs, full) + 2 per other member
        {"rule": "eval_generate", "jobs": 8, "gpu_h": 16.0},
    ]
    members, hours = plan_split(cfg, rows)
    assert members.startswith("sweep: 4 members (2 trained, 2 checkpoints)")
    assert "r4-s0-step5" in members
    # shared: train_full 10 + 2 of 8 engine jobs (4); own: 4 + 2 + 12 = 18.
    assert "shared stages" in hours and " 14;" in hours
    assert "own stages 18 (4.5 per member" in hours


def test_plan_split_counts_one_shared_engine_job_where_vllm_merges_them():
    from lorascope.workflow.sweep import plan_split

    # vLLM on device cpu (eval.vllm.one_job null): the base, its LoRAs and
    # the full fine-tune share one job, so 1 of the 8 engine jobs is shared.
    cfg = _cfg({"ranks": [1, 4], "checkpoints": [5]}, device="cpu")
    cfg["eval"]["backend"] = "vllm"
    rows = [{"rule": "eval_generate", "jobs": 8, "gpu_h": 16.0}]
    _, hours = plan_split(cfg, rows)
    assert "shared stages" in hours and " 2;" in hours
    assert "own stages 14 (3.5 per member" in hours
