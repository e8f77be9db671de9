"""Bad attribution input fails before any job, naming the key and the value
(issue 28): a backtracking word the tokenizer has no token for, a set size
larger than the SAE features that fire."""

from __future__ import annotations

import polars as pl
import pytest
from test_preflight import job, no_model

from lorascope.core.config import validate
from lorascope.workflow.preflight import preflight_problems


@pytest.fixture()
def config():
    return validate({"run": "t"})


def _problems(config, jobs):
    return preflight_problems(
        config, jobs, True, count=lambda: 0, module_names=no_model
    )


def test_a_backtrack_word_the_toy_tokenizer_lacks_fails_before_any_job(config):
    config["attribution"]["backtrack_tokens"] = ["Wait", "Alternatively"]
    params = {"config": config, "base": "results/t/toy/base_model"}
    found = _problems(config, [job("feature_attribution", params)])
    assert len(found) == 1
    assert found[0].startswith("attribution.backtrack_tokens: 'Alternatively'")
    config["attribution"]["backtrack_tokens"] = ["Wait", "Hmm"]
    assert _problems(config, [job("feature_attribution", params)]) == []


def _table(path, firing: int, silent: int) -> str:
    pl.DataFrame(
        {
            "kind": ["sae"] * (firing + silent) + ["lora"],
            "latent": list(range(firing + silent)) + [None],
            "frac_active": [0.1] * firing + [0.0] * silent + [0.5],
        }
    ).write_parquet(path)
    return str(path)


def test_a_set_larger_than_the_features_that_fire_fails_naming_it(config, tmp_path):
    table = _table(tmp_path / "features.parquet", firing=3, silent=5)
    config["attribution"]["set_size"] = 4
    params = {"config": config, "base": "results/t/toy/base_model"}
    sets = job("behaviour_sets", params, {"attribution": table})
    found = _problems(config, [sets])
    assert found == [
        f"attribution.set_size: 4 is larger than the 3 SAE features that fire ({table})"
    ]
    config["attribution"]["set_size"] = 3
    assert _problems(config, [sets]) == []
    # a table a scheduled job rebuilds is not read: the job checks its own
    config["attribution"]["set_size"] = 4
    rebuild = job("feature_attribution", params, outputs=[table])
    assert _problems(config, [rebuild, sets]) == []


def test_more_validation_sequences_than_attribution_sequences_fail_before_any_job(
    config,
):
    """The job raised this only after Snakemake had removed its old output."""
    config["attribution"].update(n_sequences=2, validate_sequences=3)
    params = {"config": config, "base": "results/t/toy/base_model"}
    (found,) = _problems(config, [job("feature_attribution", params)])
    assert found == (
        "attribution.validate_sequences: 3 is more than the 2 attribution "
        "sequences (attribution.n_sequences / ablation.n_sequences)"
    )
    config["attribution"]["validate_sequences"] = 2
    assert _problems(config, [job("feature_attribution", params)]) == []
