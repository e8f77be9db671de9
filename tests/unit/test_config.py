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
    "fuzz",
    "simulate",
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


def _no_flash_attn(monkeypatch):
    """This interpreter cannot import flash_attn (whether or not it has it)."""
    import builtins
    import importlib.util

    real_spec, real_import = importlib.util.find_spec, builtins.__import__
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "flash_attn" else real_spec(name, *a),
    )

    def no_flash(name, *args, **kwargs):
        if name.split(".")[0] == "flash_attn":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_flash)


def test_flash_attention_is_only_a_hint_where_snakemake_runs(monkeypatch):
    """Snakemake's interpreter is not the jobs' (--sdm conda, a cluster image):
    without flash-attn there, validation warns, naming the key and the fix,
    and does not stop; the paper config itself does not ask for it."""
    from lorascope.core import config as cfg_mod
    from lorascope.core.checks import ConfigHint

    _no_flash_attn(monkeypatch)
    config = {"model": {"attn_implementation": "flash_attention_2"}}
    with pytest.warns(ConfigHint, match="model.attn_implementation.*flash-attn"):
        assert cfg_mod.validate(config)["model"]["attn_implementation"]
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert cfg_mod.validate(paper)["model"]["attn_implementation"] == "sdpa"


def test_flash_attention_fails_the_job_at_start_in_its_own_environment(
    monkeypatch, tmp_path
):
    """The job imports flash_attn before loading anything: its failure names
    the key, the job's interpreter and the fix, not a missing file."""
    import sys

    from lorascope.core.checks import ConfigHint
    from lorascope.core.models import load_causal_lm
    from lorascope.train.trainer import train

    _no_flash_attn(monkeypatch)
    missing = str(tmp_path / "no_model")
    with pytest.raises(RuntimeError) as err:
        load_causal_lm(missing, attn_implementation="flash_attention_2")
    msg = str(err.value)
    assert msg.startswith("model.attn_implementation is flash_attention_2, but")
    assert sys.executable in msg and "Install flash-attn" in msg
    with pytest.warns(ConfigHint):
        config = validate({"model": {"attn_implementation": "flash_attention_2"}})
    with pytest.raises(RuntimeError, match="cannot import flash_attn"):
        train("rank1", missing, missing, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()  # nothing started


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


def test_rank_above_vllm_max_lora_rank_fails_naming_both_keys():
    # vLLM refuses the adapter only when the generation job loads it, after
    # training: the config check says so first.
    vllm = {"backend": "vllm", "vllm": {"max_lora_rank": 8}}
    with pytest.raises(ConfigError) as err:
        validate({"eval": vllm, "train": {"lora": {"r": 16}}})
    assert str(err.value) == (
        "invalid config:\n  eval.vllm.max_lora_rank: 8 is below train.lora.r = 16; "
        "the vLLM engine would refuse the rank-16 adapter. Set "
        "eval.vllm.max_lora_rank to at least 16, or eval.backend: hf"
    )
    assert validate({"eval": vllm, "train": {"lora": {"r": 8}}})  # equal: fine
    hf = {"backend": "hf", "vllm": {"max_lora_rank": 8}}
    assert validate({"eval": hf, "train": {"lora": {"r": 16}}})  # no vLLM engine


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


OFFLINE = {"provider": "offline"}


def test_api_keys_of_the_providers_used(monkeypatch):
    from lorascope.workflow.environment import check_environment

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MY_KEY", raising=False)
    # The paper's benchmarks (the schema's default) include gated GPQA.
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    cfg = validate({"autointerp": {"provider": "openai"}})
    assert check_environment(cfg) == [
        "autointerp.api_key_env: autointerp.provider is 'openai' (the category "
        "proposal follows it) but the environment variable OPENAI_API_KEY is not "
        "set",
        "autointerp: export OPENAI_API_KEY; or run without LLM calls: "
        "--config 'autointerp={provider: offline}'",
    ]
    # Only the steps about to run count; the categorizer follows the explainer.
    assert check_environment(cfg, {"train_rank1"}) == []
    assert check_environment(cfg, {"autointerp_categories"})[0] == (
        "autointerp.categories.api_key_env: autointerp.categories.provider is "
        "null, following autointerp.provider 'openai', but the environment "
        "variable OPENAI_API_KEY is not set"
    )
    own = validate({"autointerp": {"provider": "openai", "categories": OFFLINE}})
    assert check_environment(own, {"autointerp_categories"}) == []
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert check_environment(cfg) == []
    local = {"provider": "openai", "api_key_env": ""}  # a local server
    assert check_environment(validate({"autointerp": local})) == []
    cats = {
        "categories": {"provider": "anthropic", "model": "m", "api_key_env": "MY_KEY"}
    }
    refs = {"request_params": {"extra_headers": {"X-Key": {"env": "MY_KEY"}}}}
    problems = check_environment(validate({"autointerp": cats | refs}))
    assert problems[:2] == [
        "autointerp.categories.api_key_env: autointerp.categories.provider is "
        "'anthropic' but the environment variable MY_KEY is not set",
        "autointerp.request_params.extra_headers.X-Key: environment variable "
        "MY_KEY is not set",
    ]
    assert problems[2].startswith("autointerp: export MY_KEY; or use one provider")
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


def _layered(*files, cli=()):
    """config files stacked as snakemake stacks them, then --config entries."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    cfg = {}
    for name in files:
        update_config(cfg, yaml.safe_load((REPO / "config" / name).read_text()))
    update_config(cfg, parse_config(list(cli)))
    return validate(cfg)


def test_one_gpu_starts_with_one_key_or_none(monkeypatch):
    """config/one_gpu.yaml: the category proposal follows the explainer, so
    OPENAI_API_KEY alone (or offline, one setting) is enough; the refusal
    says every way out in one message."""
    from lorascope.autointerp.settings import llm_settings
    from lorascope.workflow.environment import check_environment

    monkeypatch.setenv("HF_TOKEN", "hf_x")  # GPQA's download: not this test
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    cfg = _layered("paper.yaml", "one_gpu.yaml")
    cat = llm_settings(cfg["autointerp"], "r", "categorizer")
    assert (cat.provider, cat.model) == ("openai", "gpt-5-mini")
    problems = check_environment(cfg)
    assert [p.split(":")[0] for p in problems] == [
        "autointerp.api_key_env",
        "autointerp",
    ]
    assert "ANTHROPIC_API_KEY" not in " ".join(problems)
    offline = problems[-1].split("run without LLM calls: --config ")[1].strip("'")
    assert (
        check_environment(_layered("paper.yaml", "one_gpu.yaml", cli=[offline])) == []
    )
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert check_environment(cfg) == []


def test_paper_config_lists_both_keys_and_every_way_out_at_once(monkeypatch):
    from lorascope.workflow.environment import check_environment

    monkeypatch.setenv("HF_TOKEN", "hf_x")  # GPQA's download: not this test
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    problems = check_environment(_layered("paper.yaml"))
    assert len(problems) == 3
    assert "OPENAI_API_KEY" in problems[0] and "ANTHROPIC_API_KEY" in problems[1]
    ways = problems[2]
    assert ways.startswith("autointerp: export OPENAI_API_KEY and ANTHROPIC_API_KEY")
    assert "config/one_gpu.yaml" in ways
    offline = ways.split("run without LLM calls: --config ")[1].strip("'")
    assert check_environment(_layered("paper.yaml", cli=[offline])) == []
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")  # one key: still the other
    assert "ANTHROPIC_API_KEY" in check_environment(_layered("paper.yaml"))[0]


def test_a_categorizer_on_another_provider_names_its_model():
    from lorascope.autointerp.settings import llm_settings

    other = {"provider": "openai", "categories": {"provider": "anthropic"}}
    with pytest.raises(ConfigError, match="autointerp.categories.model: null follows"):
        validate({"autointerp": other})
    own = validate(
        {"autointerp": {"provider": "openai", "base_url": "http://h/v1",
                        "categories": {"provider": "anthropic", "model": "c"}}}
    )["autointerp"]  # fmt: skip
    cat = llm_settings(own, "r", "categorizer")
    assert (cat.provider, cat.model, cat.base_url) == ("anthropic", "c", None)
    same = validate(
        {"autointerp": {"provider": "openai", "base_url": "http://h/v1",
                        "api_key_env": "K", "categories": {"provider": "openai"}}}
    )["autointerp"]  # fmt: skip
    cat = llm_settings(same, "r", "categorizer")
    assert (cat.model, cat.base_url, cat.api_key_env) == (
        "gpt-5-mini",
        "http://h/v1",
        "K",
    )
