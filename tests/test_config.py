"""Config schema: defaults, unknown keys, wrong types, every key documented."""

import pytest
import yaml
from conftest import REPO

from lorascope.core.config import ConfigError, load_schema, validate


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
