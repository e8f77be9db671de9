"""The resource model: its formulas against transformers' own Qwen2 (exactly,
at tiny shapes and on the meta device at Qwen2.5-32B's shape), and the
paper, one-GPU and published-adapter configs against the profiles'
hardware: every weight-loading rule gets a GPU, fits its card with 10%
headroom, multi-GPU jobs stay on one node."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import REPO, make_tiny_qwen

from lorascope.core.memory import ModelShape
from lorascope.workflow.plan import derived_counts, load_configs, plan_rows, warnings
from lorascope.workflow.resources import (
    CPU_RULES,
    GPU_RULES,
    HEADROOM,
    KNOWN_SHAPES,
    Hardware,
    feature_accuracy_batch,
    load_hardware,
    rule_needs,
    rule_resources,
)

QWEN32B = dict(
    hidden_size=5120,
    num_hidden_layers=64,
    num_attention_heads=40,
    num_key_value_heads=8,
    intermediate_size=27648,
    vocab_size=152064,
    tie_word_embeddings=False,
    max_position_embeddings=32768,
)
CONFIGS = {
    "paper": ["config/paper.yaml"],
    "one_gpu": ["config/paper.yaml", "config/one_gpu.yaml"],
    "published": ["config/paper.yaml", "config/presets/published_adapter.yaml"],
}
SLURM = Hardware.from_profile(REPO / "profiles" / "slurm")


def tiny_shape(model) -> ModelShape:
    return ModelShape.from_config(model.config.to_dict())


def test_parameter_count_at_32b_shape_on_meta_device():
    from transformers import AutoModelForCausalLM, Qwen2Config

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(Qwen2Config(**QWEN32B))
    n = sum(p.numel() for p in model.parameters())
    shape = ModelShape.from_config(QWEN32B)
    assert shape.params == n
    assert shape == KNOWN_SHAPES["Qwen/Qwen2.5-32B-Instruct"]
    # 61 GiB of bf16 weights: the number every 32B memory estimate starts from.
    assert 60.9 < n * 2 / 2**30 < 61.1


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_count_tiny(tied):
    model = make_tiny_qwen(97, layers=3, tie_word_embeddings=tied)
    assert tiny_shape(model).params == sum(p.numel() for p in model.parameters())


def test_kv_cache_bytes_match_a_real_cache():
    model = make_tiny_qwen(97, layers=3, hidden=64)  # 4 heads, 2 kv heads
    batch, prompt, new = 3, 7, 5
    ids = torch.randint(0, 97, (batch, prompt))
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
            return_dict_in_generate=True, pad_token_id=0,
        )  # fmt: skip
    cache = out.past_key_values
    nbytes = sum(
        t.numel() * t.element_size()
        for layer in cache.layers
        for t in (layer.keys, layer.values)
    )
    # The last generated token is never fed back, so the cache holds one fewer.
    tokens = prompt + new - 1
    assert nbytes == tiny_shape(model).kv_bytes(tokens, 4, batch)


def test_forward_flops_match_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    model = make_tiny_qwen(97, layers=2, hidden=64, attn_implementation="eager")
    tokens = 11
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randint(0, 97, (1, tokens)), use_cache=False)
    assert counter.get_total_flops() == tiny_shape(model).forward_flops(tokens)


def test_lora_params_match_peft():
    from conftest import add_random_lora

    model = add_random_lora(make_tiny_qwen(97, layers=2, hidden=64))
    n = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    assert tiny_shape(model.get_base_model()).lora_params(1) == n


@pytest.fixture(scope="module", params=list(CONFIGS))
def setting(request):
    return request.param, load_configs([REPO / p for p in CONFIGS[request.param]])


def test_weight_loading_rules_get_a_fitting_gpu(setting):
    name, config = setting
    rows = plan_rows(config, SLURM, derived_counts(config))
    assert not warnings(rows, SLURM), name
    budget = SLURM.card_bytes * (1 - HEADROOM)
    for row in rows:
        needs = row["needs"]
        res = rule_resources(needs.rule, config, SLURM, REPO)
        if needs.loads_weights:
            assert res["gpu"] >= 1, needs.rule
            assert res["slurm_partition"] == "gpu"
        assert needs.gpu_bytes <= budget, (name, needs.rule, needs.gpu_bytes / 2**30)
        assert res.get("gpu", 0) <= SLURM.gpus_per_node
        if res.get("gpu", 0) > 1:
            assert res["nodes"] == 1, needs.rule
        assert res["runtime"] <= SLURM.max_runtime_min if "gpu" in res else True
    loading = {r["rule"] for r in rows if r["needs"].loads_weights}
    assert {"extract_activations", "feature_ablation", "feature_accuracy"} <= loading


def test_direct_effects_needs_no_gpu(setting):
    _, config = setting
    needs = rule_needs("direct_effects", config, SLURM, REPO)
    assert needs.gpus == 0 and needs.host_bytes < 32e9


def test_one_gpu_config_trains_in_one_process():
    config = load_configs([REPO / p for p in CONFIGS["one_gpu"]])
    assert rule_resources("train_rank1", config, SLURM, REPO)["gpu"] == 1
    paper = load_configs([REPO / p for p in CONFIGS["paper"]])
    assert rule_resources("train_rank1", paper, SLURM, REPO)["gpu"] == 8


def test_feature_accuracy_batch_is_derived_to_fit_and_overridable():
    config = load_configs([REPO / "config/paper.yaml"])
    shape = KNOWN_SHAPES["Qwen/Qwen2.5-32B-Instruct"]
    # Issue 31: eval.batch_size 16 with two KV caches does not fit at 32B.
    config["causal"]["accuracy_batch_size"] = config["eval"]["batch_size"]
    too_big = rule_needs("feature_accuracy", config, SLURM, REPO)
    assert too_big.gpu_bytes > SLURM.card_bytes
    config["causal"]["accuracy_batch_size"] = None
    batch = feature_accuracy_batch(config, shape, SLURM.card_bytes)
    assert 1 <= batch < 16
    needs = rule_needs("feature_accuracy", config, SLURM, REPO)
    assert needs.gpu_bytes <= SLURM.card_bytes * (1 - HEADROOM)


def test_every_planned_rule_exists_in_the_rule_files():
    text = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for rule in GPU_RULES:
        assert re.search(rf"rule {rule}:|use rule \w+ as {rule} with:", text), rule


RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
# Calls that load the model's weights (not load_lora_skeleton: meta device).
LOADER = re.compile(r"\b(load_lora|load_causal_lm|load_lora_model)\(")
# Rules whose script loads the model for another rule only: why not here.
NO_WEIGHTS = {"lora_features": "activations_features.py loads it for kind mlp only"}


def _rule_blocks() -> dict[str, str]:
    """rule name -> its text in the rule files (the figure rules, named in a
    loop, under the loop's `spec["rule_name"]`)."""
    blocks = {}
    for path in RULE_FILES:
        text = path.read_text()
        heads = list(re.finditer(
            r"^\s*(?:rule (\w+):|use rule \w+ as (\w+) with:|rule:)\s*$", text, re.M
        ))  # fmt: skip
        for head, nxt in zip(heads, [*heads[1:], None][: len(heads)], strict=True):
            name = head.group(1) or head.group(2) or 'spec["rule_name"]'
            blocks[name] = text[head.start() : nxt.start() if nxt else None]
    return blocks


def test_every_rule_takes_its_resources_from_the_model():
    blocks = _rule_blocks()
    assert len(blocks) > 30
    for name, block in blocks.items():
        quoted = name if name.startswith("spec") else f'"{name}"'
        assert "resources:\n" in block and f"**resources_for({quoted})" in block, (
            f"rule {name}: resources must be **resources_for({quoted})"
        )


def test_rules_whose_script_loads_the_model_are_gpu_rules():
    """A rule running a script (or module) that loads the model's weights gets
    a GPU in the model: a new such rule left out of GPU_RULES fails here."""
    loading = set()
    for name, block in _rule_blocks().items():
        entry = re.search(r'code_of\(\s*"([\w.]+)"', block)
        if entry is None or name.startswith("spec"):
            continue
        if entry.group(1) in ("lorascope.train", "lorascope.evaluation"):
            loading.add(name)
        elif entry.group(1).endswith(".py"):
            script = REPO / "workflow" / "scripts" / entry.group(1)
            if LOADER.search(script.read_text()):
                loading.add(name)
    loading |= {"mlp_features"}  # `use rule lora_features`: the same script
    assert "direct_effects" not in loading  # reads tensors, not the model
    assert loading - set(NO_WEIGHTS) <= set(GPU_RULES)
    assert {r for r in GPU_RULES if r not in ("train_sae", "sae_features")} <= (
        loading | {"train_full"}
    )


def test_an_unknown_rule_or_hardware_fails_naming_it(tmp_path):
    config = load_configs([REPO / "config/paper.yaml"])
    with pytest.raises(ValueError, match="rule 'trian_rank1' is not in the resource"):
        rule_resources("trian_rank1", config, SLURM, REPO)
    with pytest.raises(ValueError, match="hardware: no file at 'nowhere.yaml'"):
        load_hardware("nowhere.yaml", tmp_path)
    (tmp_path / "hw.yaml").write_text("gpu_mem_gb: 80\n")
    with pytest.raises(ValueError, match=r"unknown keys \['gpu_mem_gb'\]"):
        load_hardware("hw.yaml", tmp_path)


def test_without_hardware_no_rule_asks_for_anything():
    config = load_configs([REPO / "config/paper.yaml"])
    assert rule_resources("train_rank1", config, None, REPO) == {}
    assert load_hardware(None) is None


def test_cpu_jobs_never_get_cpus_per_gpu_and_gpu_jobs_never_cpus_per_task():
    """The SLURM plugin lets cpus_per_task win over cpus_per_gpu."""
    config = load_configs([REPO / "config/paper.yaml"])
    for rule in (*GPU_RULES, *CPU_RULES):
        res = rule_resources(rule, config, SLURM, REPO)
        if res.get("gpu"):
            assert "cpus_per_task" not in res and res["cpus_per_gpu"] == 8, rule
        else:
            assert "cpus_per_gpu" not in res, rule


def test_plan_lists_every_cpu_rule_with_a_formula():
    from lorascope.workflow import cpucosts
    from lorascope.workflow.plan import CPU_PLANNED

    formulas = {n for n in dir(cpucosts) if n in CPU_RULES}
    assert formulas == set(CPU_PLANNED)
