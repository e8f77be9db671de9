"""Training: a valid rank-1 PEFT adapter, a full fine-tune, and resume."""

import json
import signal
import subprocess
import sys
import time

import datasets
import pytest
import torch
from conftest import REPO, s1k_rows
from transformers import Trainer

from lorascope.core.components import check_adapter
from lorascope.core.config import validate
from lorascope.core.io import write_parquet
from lorascope.data.sft import tokenise
from lorascope.train.trainer import last_complete_checkpoint, train


def _config(**train_over):
    train_cfg = {
        "rank1": {
            "max_steps": 4,
            "per_device_batch_size": 2,
            "gradient_accumulation_steps": 1,
        },
        "full": {
            "max_steps": 2,
            "per_device_batch_size": 2,
            "gradient_accumulation_steps": 1,
        },
        "save_steps": 2,
        **train_over,
    }
    cfg = validate({"run": "t", "device": "cpu", "train": train_cfg})
    return {k: cfg[k] for k in ("seed", "device", "model", "train")}, cfg["data"]


@pytest.fixture(scope="module")
def sft_parquet(tmp_path_factory, toy_tokenizer):
    _, data_cfg = _config()
    df, _ = tokenise(datasets.Dataset.from_dict(s1k_rows(8)), toy_tokenizer, data_cfg)
    path = tmp_path_factory.mktemp("sft") / "sft.parquet"
    write_parquet(df, path)
    return path


def test_rank1_adapter_is_valid_peft(tmp_path, tiny_model_dir, sft_parquet):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg, _ = _config()
    out = train("rank1", str(tiny_model_dir), str(sft_parquet), tmp_path, cfg)
    mods = check_adapter(out, rank=1)
    assert len(mods) == 2 * 7
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 1 and adapter_cfg["use_rslora"] is True
    assert (out / "resolved_config.yaml").exists() and (out / "versions.json").exists()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)
    )
    b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in b), "training left lora_B at zero"


def test_adapter_of_a_prefetched_base_names_its_hub_id_and_commit(
    tmp_path, tiny_model_dir, sft_parquet
):
    """Trained from hub/model/Org--Tiny@main (a hub.prefetch snapshot), the
    adapter names Org/Tiny at the commit `main` resolved to, not the local
    path, so importing it elsewhere passes the base check (issue 33, item 13)."""
    import shutil

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lorascope.core.components import check_existing_adapter
    from lorascope.hub.fetch import SNAPSHOT_FILE
    from lorascope.train.trainer import BASE_FILE, name_hub_base

    snapshot = tmp_path / "hub" / "model" / "Org--Tiny@main"
    shutil.copytree(tiny_model_dir, snapshot)
    record = {"repo_id": "Org/Tiny", "kind": "model", "revision": "main",
              "commit": "c0ffee" * 6 + "c0ff", "endpoint": "https://hf.example",
              "files": []}  # fmt: skip
    (snapshot / SNAPSHOT_FILE).write_text(json.dumps(record))
    cfg, _ = _config()
    out = train("rank1", str(snapshot), str(sft_parquet), tmp_path / "t", cfg)
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == "Org/Tiny"
    assert adapter_cfg["revision"] == record["commit"]
    base = json.loads((out / BASE_FILE).read_text())
    assert base == {k: record[k] for k in ("repo_id", "revision", "commit", "endpoint")}
    lora = {"r": 1, "target_modules": adapter_cfg["target_modules"]}
    check_existing_adapter(out, lora, "Org/Tiny")  # another machine's config
    # still loads on the local copy of the base
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(snapshot), out)
    # a base of the user's own (no snapshot record) stays named as loaded
    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    (plain / BASE_FILE).unlink()
    assert name_hub_base(plain, str(tiny_model_dir)) is None
    assert (plain / "adapter_config.json").read_bytes() == (
        out / "adapter_config.json"
    ).read_bytes()
    assert not (plain / BASE_FILE).exists()


def test_full_finetune_changes_weights(tmp_path, tiny_model_dir, sft_parquet):
    from transformers import AutoModelForCausalLM

    cfg, _ = _config()
    out = train("full", str(tiny_model_dir), str(sft_parquet), tmp_path, cfg)
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    key = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(before[key], after[key])


def test_killed_training_resumes_from_checkpoint(
    tmp_path, tiny_model_dir, sft_parquet, monkeypatch
):
    cfg, _ = _config(
        rank1={
            "max_steps": 30,
            "per_device_batch_size": 2,
            "gradient_accumulation_steps": 1,
        }
    )
    cmd = [
        sys.executable,
        "-m",
        "lorascope.train",
        "--variant",
        "rank1",
        "--base",
        str(tiny_model_dir),
        "--sft",
        str(sft_parquet),
        "--out",
        str(tmp_path),
        "--config",
        json.dumps(cfg),
    ]
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "checkpoints" / "checkpoint-4"
    deadline = time.time() + 120
    while not (ckpt / "trainer_state.json").exists() and time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail("training exited before it could be killed")
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "adapter").exists(), "a killed run left a final adapter"
    last = last_complete_checkpoint(tmp_path / "checkpoints")
    k = int(last.rsplit("-", 1)[1])  # the step the rerun must continue from

    # What each optimiser step of the rerun starts from: a restarted run
    # (same seed, same data) gives the same curve and weights, so only this
    # tells the two apart (issue 33, item 15).
    seen = []
    training_step = Trainer.training_step

    def spy(self, *args, **kwargs):
        moments = sum(len(s) for s in self.optimizer.state.values())
        seen.append((self.state.global_step, moments, self.lr_scheduler.last_epoch))
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", spy)
    out = train("rank1", str(tiny_model_dir), str(sft_parquet), tmp_path, cfg)
    assert len(seen) == 30 - k, f"{len(seen)} steps rerun after checkpoint-{k}"
    step, moments, scheduler_step = seen[0]
    assert step == k and scheduler_step == k, "did not start from the checkpoint"
    assert moments > 0, "the optimizer's moments were not restored"
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == list(range(1, 31)), "the loss curve must continue without gaps"
    check_adapter(out, rank=1)


def test_llama_family_model_trains(tmp_path, toy_tokenizer, sft_parquet):
    """Nothing assumes Qwen: a tiny LlamaForCausalLM goes through the same code."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = tmp_path / "llama"
    cfg = LlamaConfig(
        vocab_size=len(toy_tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(base)
    toy_tokenizer.save_pretrained(base)
    train_cfg, _ = _config()
    out = train("rank1", str(base), str(sft_parquet), tmp_path / "out", train_cfg)
    assert len(check_adapter(out, rank=1, n_layers=3)) == 21


def test_changed_config_does_not_resume_stale_checkpoint(
    tmp_path, tiny_model_dir, sft_parquet
):
    cfg, _ = _config()
    first = train("rank1", str(tiny_model_dir), str(sft_parquet), tmp_path, cfg)
    w1 = (first / "adapter_model.safetensors").read_bytes()
    cfg["train"]["rank1"]["learning_rate"] = 5e-2
    second = train("rank1", str(tiny_model_dir), str(sft_parquet), tmp_path, cfg)
    assert (second / "adapter_model.safetensors").read_bytes() != w1


def test_target_module_the_model_lacks_fails_before_training(
    tmp_path, toy_tokenizer, sft_parquet
):
    """Phi-3 packs its projections (qkv_proj, gate_up_proj): PEFT would adapt
    o_proj and down_proj and skip the other five names without a word. The
    job fails naming the key before it trains or writes anything."""
    from transformers import Phi3Config, Phi3ForCausalLM

    base = tmp_path / "phi3"
    ids = dict(pad_token_id=0, bos_token_id=0, eos_token_id=0)
    Phi3ForCausalLM(
        Phi3Config(
            vocab_size=len(toy_tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **ids,
        )
    ).save_pretrained(base)
    toy_tokenizer.save_pretrained(base)
    cfg, _ = _config()
    with pytest.raises(ValueError, match=r"train\.lora\.target_modules: .*'q_proj'"):
        train("rank1", str(base), str(sft_parquet), tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists(), "the job wrote before the check"
