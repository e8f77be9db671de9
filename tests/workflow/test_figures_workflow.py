"""The figure rules through the real snakemake CLI.

- On synthetic upstream artifacts (fast): every figure and the dashboards are
  built by their rules, and a params-only change reruns only that figure.
- What a style key, a plotting script or a package module edit reruns on a
  finished micro run is part of the rebuild matrix (tests/support/rebuild_matrix.py).
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import polars as pl
import pytest
import wfrun
import yaml
from figures_artifacts import write_inputs

FIGURE_RULES = {
    "figure_classes", "figure_categories", "figure_sae_density", "figure_ablation",
    "figure_steering", "figure_table1", "figure_table2", "dashboards",
    "figure_causal", "figure_scores",
}  # fmt: skip
NAMES = [
    "fig1_classes", "fig1_categories", "fig2_sae_density", "fig3_ablation",
    "steering_sweep", "table1", "table2", "fig_causal", "fig1_scores",
]  # fmt: skip
REPO = Path(__file__).resolve().parents[2]


def targets(run: str) -> list[str]:
    out = [f"results/{run}/figures/{n}.{e}" for n in NAMES for e in ("png", "pdf")]
    return [*out, f"results/{run}/dashboards"]


def scheduled(stdout: str) -> dict[str, int]:
    """rule -> job count from a dry run's 'Job stats' table ({} = nothing to do).

    The target rule `all` is left out: it is scheduled whenever anything is."""
    jobs = wfrun.job_stats(stdout)
    if jobs is None:
        assert "Nothing to be done" in stdout, stdout[-3000:]
        return {}
    jobs.pop("all", None)
    return jobs


def run(path: Path, extra=(), allowed=True, overrides: dict | None = None):
    wfrun.workdir(path, overrides)
    extra = [*extra, "--allowed-rules", *sorted(FIGURE_RULES)] if allowed else extra
    return wfrun.snakemake(path, targets(wfrun.run_name(path)), extra=extra)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    path = wfrun.workdir(tmp_path_factory.mktemp("figwf"))
    write_inputs(wfrun.results(path))
    run(path, ["--cores", "2"])
    return path


def test_rules_build_every_figure(synthetic_run):
    res = wfrun.results(synthetic_run)
    for name in NAMES:
        for ext in ("png", "pdf"):
            assert (res / "figures" / f"{name}.{ext}").stat().st_size > 2000
    site = res / "dashboards"
    assert (site / "index.html").read_text().count("<tr data-kind=") == 28 + 12
    assert len(list((site / "features").glob("*.html"))) == 40  # lora + sae only
    log = synthetic_run / "logs" / "micro" / "figures" / "figure_classes.log"
    assert "offline explainer" in log.read_text()


def test_params_change_reruns_only_that_figure(synthetic_run, tmp_path):
    over = {"figures": {"sae_density": {"max_subcategories": 1}}}
    (synthetic_run / "overrides.yaml").write_text(yaml.safe_dump(over))
    try:
        out = run(synthetic_run, ["-n"]).stdout
    finally:
        (synthetic_run / "overrides.yaml").unlink()
    assert scheduled(out) == {"figure_sae_density": 1}
    assert scheduled(run(synthetic_run, ["-n"]).stdout) == {}


def test_missing_column_fails_naming_file(tmp_path):
    path = wfrun.workdir(tmp_path / "bad")
    write_inputs(wfrun.results(path))
    kl = wfrun.results(path) / "ablation" / "kl_layers.parquet"
    pl.read_parquet(kl).drop("kl_mean").write_parquet(kl)
    proc = wfrun.snakemake(
        path,
        [f"results/micro/figures/{n}.png" for n in ("fig3_ablation", "fig1_classes")],
        extra=["--allowed-rules", *sorted(FIGURE_RULES), "--keep-going"],
        check=False,
    )
    assert proc.returncode != 0
    log = (path / "logs" / "micro" / "figures" / "figure_ablation.log").read_text()
    assert "kl_layers.parquet: missing column(s) ['kl_mean']" in log
    res = wfrun.results(path)
    assert not (res / "figures" / "fig3_ablation.png").exists()
    assert (res / "figures" / "fig1_classes.png").exists()  # the rest still built


def test_report_embeds_every_figure(synthetic_run, tmp_path):
    report = tmp_path / "report.zip"
    proc = subprocess.run(
        [*wfrun.command(synthetic_run, targets("micro")),
         "--allowed-rules", *sorted(FIGURE_RULES), "--report", str(report)],
        cwd=synthetic_run, env=wfrun.env(), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    names = zipfile.ZipFile(report).namelist()
    for name in NAMES:
        assert any(n.endswith(f"{name}.png") for n in names), name
    # the dashboard site goes in whole (report(directory, htmlindex=...))
    site = [n for n in names if n.endswith("/index.html") and "/raw/" in n]
    assert len(site) == 1
    pages = [n for n in names if n.startswith(site[0].removesuffix("index.html"))]
    assert sum("/features/" in n for n in pages) == 40
