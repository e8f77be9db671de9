"""Config schema: defaults, unknown keys, wrong types, every key documented."""

import pytest
import yaml
from conftest import REPO

from lorascope.core.config import ConfigError, load_schema, validate

TEMPLATES = [
    "explain",
    "categories",
    "sae_categories",
    "subcategories",
    "assign",
    "detect",
]


def _walk(schema, path=""):
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}{key}", sub
        if sub.get("type") == "object":
            yield from _walk(sub, f"{path}{key}.")


def test_every_key_has_description_and_default():
    for key, sub in _walk(load_schema()):
        assert sub.get("description"), f"{key} has no description"
        assert "default" in sub, f"{key} has no default"


def test_defaults_are_filled_and_paper_values():
    cfg = validate({})
    assert cfg["train"]["lora"]["r"] == 1
    assert cfg["train"]["lora"]["alpha"] == 16
    assert cfg["train"]["rank1"]["learning_rate"] == 1e-3
    assert cfg["train"]["full"]["learning_rate"] == 1e-5
    assert cfg["model"]["base"] == "toy"


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"nonsense": 1}, "nonsense"),
        ({"train": {"lora": {"r": 0}}}, "train.lora.r"),
        ({"train": {"rank1": {"learning_rate": -1.0}}}, "train.rank1.learning_rate"),
        ({"train": {"rank1": {"epochs": "five"}}}, "train.rank1.epochs"),
        ({"data": {"overlong": "chop"}}, "data.overlong"),
        ({"train": {"lora": {"rank": 1}}}, "train.lora.rank"),
        ({"model": {"base": "/no/such/model"}}, "model.base"),
    ],
)
def test_bad_config_names_the_key(bad, key):
    with pytest.raises(ConfigError) as e:
        validate(bad)
    assert key in str(e.value)


@pytest.mark.parametrize("name", ["config/config.yaml", "config/paper.yaml"])
def test_shipped_configs_validate(name):
    from conftest import REPO

    with open(REPO / name) as f:
        validate(yaml.safe_load(f))


def test_micro_overlay_validates():
    from conftest import REPO
    from snakemake.utils import update_config

    with open(REPO / "config/config.yaml") as f:
        cfg = yaml.safe_load(f)
    with open(REPO / "tests/configs/micro.yaml") as f:
        update_config(cfg, yaml.safe_load(f))
    assert validate(cfg)["run"] == "micro"


def _leaves(node, path=()):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key), value


def test_one_gpu_overlay_holds_only_what_differs_from_paper():
    """config/one_gpu.yaml is stacked on config/paper.yaml (`--configfile
    config/paper.yaml config/one_gpu.yaml`): every key it sets changes the
    validated paper config, and the two validate together."""
    from snakemake.utils import update_config

    paper = validate(yaml.safe_load((REPO / "config/paper.yaml").read_text()))
    overlay = yaml.safe_load((REPO / "config/one_gpu.yaml").read_text())
    for path, value in _leaves(overlay):
        node = paper
        for key in path:
            node = node[key]
        assert node != value, f"one_gpu.yaml repeats paper.yaml's {'.'.join(path)}"
    cfg = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    update_config(cfg, overlay)
    cfg = validate(cfg)
    assert (cfg["run"], cfg["model"]["base"]) == (
        "qwen1.5b",
        "Qwen/Qwen2.5-1.5B-Instruct",
    )
    assert cfg["train"]["fsdp_config"] is None
    assert cfg["hub"]["prefetch"] and cfg["autointerp"]["provider"] == "openai"


def test_flash_attention_is_opt_in_and_checked_up_front(monkeypatch):
    """Without flash-attn installed, asking for it fails at validation, naming
    the key and the fix; the paper config itself does not ask for it."""
    import importlib.util

    from lorascope.core import config as cfg_mod

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "flash_attn" else real(name, *a),
    )
    config = {"model": {"attn_implementation": "flash_attention_2"}}
    with pytest.raises(
        cfg_mod.ConfigError, match="model.attn_implementation.*flash-attn"
    ):
        cfg_mod.validate(config)
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert cfg_mod.validate(paper)["model"]["attn_implementation"] == "sdpa"


# --- checks a schema cannot express (lorascope.core.checks) ------------------


def test_numbers_in_scientific_notation_are_numbers():
    # PyYAML reads 1e-3 (no dot) as a string; config/README.md writes it so.
    cfg = validate(
        yaml.safe_load(
            "train: {rank1: {learning_rate: 1e-3}}\n"
            "sae: {lr: 3e-4, k: 2e0}\n"
            "steering: {alphas: [0, 1e2]}\n"
            "eval: {limit: 1e1}\n"
        )
    )
    assert cfg["train"]["rank1"]["learning_rate"] == pytest.approx(1e-3)
    assert isinstance(cfg["sae"]["lr"], float) and cfg["sae"]["k"] == 2.0
    assert cfg["steering"]["alphas"] == [0, 100.0]
    assert cfg["eval"]["limit"] == 10 and isinstance(cfg["eval"]["limit"], int)
    with pytest.raises(ConfigError, match="eval.limit"):
        validate({"eval": {"limit": "1.5e0"}})  # not an integer


def test_command_line_numbers_are_the_numbers_a_file_gives():
    """Snakemake's --config reads every scalar as a string ('4'): it must
    become what YAML reads from a file (4, an int), and `digits` (an integer
    or a list of them, a oneOf) is coerced too (issue 33, item 5)."""
    from snakemake.cli import parse_config

    cli = parse_config(
        [
            "sae={k: 4}",
            "train={rank1: {epochs: 1}}",
            "toy={benchmarks: {toy_a: {digits: 2, n: 5},"
            " toy_b: {digits: [1, 3], n: 4}}}",
        ]
    )
    assert cli["sae"]["k"] == "4"  # what arrives
    cfg = validate(cli)
    assert cfg["sae"]["k"] == 4 and type(cfg["sae"]["k"]) is int
    assert type(cfg["train"]["rank1"]["epochs"]) is int
    assert cfg["toy"]["benchmarks"] == {
        "toy_a": {"digits": 2, "n": 5},
        "toy_b": {"digits": [1, 3], "n": 4},
    }
    with pytest.raises(ConfigError, match="toy.benchmarks.toy_a.digits"):
        validate(parse_config(["toy={benchmarks: {toy_a: {digits: x, n: 5}}}"]))


def test_sae_k_larger_than_its_width_names_both():
    # The shipped toy model: 4 layers x 7 modules x rank 1 = 28 components.
    validate({"sae": {"k": 224, "expansion": 8}})
    with pytest.raises(ConfigError, match=r"sae.k: 225 is larger than .* 224"):
        validate({"sae": {"k": 225, "expansion": 8}})
    with pytest.raises(ConfigError, match=r"sae.k: 50 .* 48 .* 2 layers"):
        validate(
            {
                "toy": {"rebuild": True, "pretrain": {"num_layers": 2}},
                "train": {"lora": {"target_modules": ["q_proj", "v_proj"], "r": 3}},
                "sae": {"k": 50, "expansion": 4},
            }
        )


def _hub():
    return ["aime24", "math500", "gpqa_diamond"]


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            {"eval": {"benchmarks": ["toy_add9"]}},
            r"eval.benchmarks: 'toy_add9' is not defined in toy.benchmarks",
        ),
        ({"eval": {"benchmarks": ["aime25"]}}, r"unknown benchmark 'aime25'.*math500"),
        ({"steering": {"benchmark": "math5000"}}, "steering.benchmark"),
        (
            {"eval": {"benchmark_files": {"math500": "no/such.jsonl"}}},
            r"eval.benchmark_files.math500: no file at 'no/such.jsonl'",
        ),
    ],
)
def test_benchmark_names_are_checked(bad, message):
    with pytest.raises(ConfigError, match=message):
        validate({"eval": {"benchmarks": ["toy_add2"]}} | bad, benchmarks=_hub)


def test_local_paths_that_do_not_exist_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for typo in ("models/qwen7b", "./qwen", "a/b/c", "~/nowhere/model"):
        with pytest.raises(ConfigError, match=f"model.base: local path '{typo}'"):
            validate({"model": {"base": typo}})
    validate({"model": {"base": "Qwen/Qwen2.5-7B-Instruct"}})  # a hub id
    (tmp_path / "models" / "qwen7b").mkdir()
    validate({"model": {"base": "models/qwen7b"}})
    with pytest.raises(ConfigError, match="model.full_finetune: local path"):
        validate({"model": {"full_finetune": "./s1.1"}})
    bad = {
        "data": {"dataset": "json", "data_files": ["s1k.json"]},
        "autointerp": {"prompts": {"explain": "my/explain.txt"}},
    }
    with pytest.raises(ConfigError) as e:
        validate(bad)
    assert "data.data_files: no file at 's1k.json'" in str(e.value)
    assert "autointerp.prompts.explain: no file at 'my/explain.txt'" in str(e.value)
    with pytest.raises(ConfigError, match="autointerp.prompts.dir: no directory at"):
        validate({"autointerp": {"prompts": {"dir": "my_prompts"}}})
    (tmp_path / "my_prompts").mkdir()
    with pytest.raises(ConfigError, match="'my_prompts' lacks explain.txt, categ"):
        validate({"autointerp": {"prompts": {"dir": "my_prompts"}}})
    for name in TEMPLATES:
        (tmp_path / "my_prompts" / f"{name}.txt").write_text("$x")
    validate({"autointerp": {"prompts": {"dir": "my_prompts"}}})


def test_api_keys_of_the_providers_used(monkeypatch):
    from lorascope.workflow.environment import check_environment

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MY_KEY", raising=False)
    # The paper's benchmarks (the schema's default) include gated GPQA.
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    cfg = validate({"autointerp": {"provider": "openai"}})
    problems = check_environment(cfg)
    assert len(problems) == 1
    assert problems[0].startswith("autointerp.api_key_env:")
    assert "OPENAI_API_KEY" in problems[0]
    # Only the steps about to run count; the categorizer is offline here.
    assert check_environment(cfg, {"train_rank1", "autointerp_categories"}) == []
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert check_environment(cfg) == []
    local = {"provider": "openai", "api_key_env": ""}  # a local server
    assert check_environment(validate({"autointerp": local})) == []
    cats = {"categories": {"provider": "anthropic", "api_key_env": "MY_KEY"}}
    refs = {"request_params": {"extra_headers": {"X-Key": {"env": "MY_KEY"}}}}
    problems = check_environment(validate({"autointerp": cats | refs}))
    assert problems == [
        "autointerp.categories.api_key_env: autointerp.categories.provider is "
        "'anthropic' but the environment variable MY_KEY is not set (export it, "
        "or set the provider to offline)",
        "autointerp.request_params.extra_headers.X-Key: environment variable "
        "MY_KEY is not set",
    ]
    assert check_environment(validate({})) == []  # offline needs nothing


def test_gated_benchmark_without_hf_token_fails_before_any_job(monkeypatch, tmp_path):
    """Issue 33, item 14: GPQA without HF_TOKEN fails with the other checks
    (onstart), not when its fetch job finally starts."""
    from lorascope.workflow.environment import check_environment

    monkeypatch.delenv("HF_TOKEN", raising=False)
    gpqa = {"eval": {"benchmarks": ["toy_add2", "gpqa_diamond"]}}
    cfg = validate(gpqa)
    (problem,) = check_environment(cfg)
    assert problem.startswith("eval.benchmarks: gpqa_diamond (Idavidrein/gpqa)")
    assert "HF_TOKEN is not set" in problem and "bench_prepare" in problem
    # Only a scheduled download needs the token: its bench_prepare job...
    prepare = [("bench_prepare", {"benchmark": "gpqa_diamond"})]
    assert len(check_environment(cfg, {"bench_prepare"}, prepare)) == 1
    others = [("bench_prepare", {"benchmark": "toy_add2"}), ("train_rank1", {})]
    assert check_environment(cfg, {"bench_prepare", "train_rank1"}, others) == []
    assert check_environment(cfg, {"train_rank1"}) == []
    # ...or with hub.prefetch its hub_fetch job (an existing snapshot: none).
    fetched = validate(gpqa | {"hub": {"prefetch": True}})
    fetch = [("hub_fetch", {"kind": "dataset", "snapshot": "Idavidrein--gpqa@main"})]
    (problem,) = check_environment(fetched, {"hub_fetch"}, fetch)
    assert "eval.benchmarks: gpqa_diamond" in problem and "(hub_fetch)" in problem
    assert check_environment(fetched, {"bench_prepare"}, prepare) == []
    # A local copy or a token: nothing to report.
    local = tmp_path / "gpqa.csv"
    local.write_text("x\n")
    files = {
        "benchmarks": ["gpqa_diamond"],
        "benchmark_files": {"gpqa_diamond": str(local)},
    }
    assert check_environment(validate({"eval": files})) == []
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert check_environment(cfg) == []
