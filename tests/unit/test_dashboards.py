"""Feature dashboards: page content, bad input, and a real headless Chromium.

The browser test drives Debian's `chromium` over the DevTools protocol
(tests/support/chromium_cdp.py) and saves screenshots under its tmp dir (or
$LORASCOPE_SCREENSHOTS when set).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import figures_synth as S
import numpy as np
import pytest
from chromium_cdp import Browser, find_chromium

from lorascope.core.config import schema_defaults
from lorascope.dashboards.build import DashboardOptions, KindTables, build_dashboards

OPTIONS = DashboardOptions.from_config(schema_defaults("figures")["dashboards"])

N_LORA, N_SAE, N_CTX = 21, 9, 4


def _kinds(seed: int = 0) -> dict[str, KindTables]:
    rng = np.random.default_rng(seed)
    return {
        "lora": KindTables(**S.dashboard_kind("lora", N_LORA, rng, n_ctx=N_CTX)),
        "sae": KindTables(**S.dashboard_kind("sae", N_SAE, rng, n_ctx=N_CTX)),
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dash") / "dashboards"
    n = build_dashboards(_kinds(), out, "labels: offline explainer", OPTIONS)
    assert n == N_LORA + N_SAE
    return out


def test_pages_and_content(site):
    pages = sorted((site / "features").glob("*.html"))
    assert len(pages) == N_LORA + N_SAE
    index = (site / "index.html").read_text()
    assert index.count("<tr data-kind=") == N_LORA + N_SAE
    page = (site / "features" / "lora-4.html").read_text()
    assert "L0.gate+" in page and "offline explainer" in page
    # one span per context token, each carrying its value for the hover
    assert len(re.findall(r'class="tok[^"]*"', page)) == N_CTX * 12
    assert page.count("peak") >= N_CTX
    # explanations are escaped, never injected as markup
    assert "<b>tokens</b>" not in page and "&lt;b&gt;tokens&lt;/b&gt;" in page


def test_works_offline(site):
    for page in [site / "index.html", *(site / "features").glob("*.html")]:
        text = page.read_text()
        assert not re.search(r'(src|href)="(https?:)?//', text), page
    assert (site / "static" / "dashboard.js").stat().st_size > 0


def test_missing_column_names_file_and_column(tmp_path):
    kinds = _kinds()
    kinds["sae"].scores = kinds["sae"].scores.drop("balanced_accuracy")
    with pytest.raises(ValueError, match=r"scores/sae\.parquet.*balanced_accuracy"):
        build_dashboards(kinds, tmp_path / "d", "x", OPTIONS)


def test_duplicate_feature_fails(tmp_path):
    kinds = _kinds()
    exp = kinds["lora"].explanations
    kinds["lora"].explanations = exp.vstack(exp.head(1))
    with pytest.raises(ValueError, match="feature 0 appears more than once"):
        build_dashboards(kinds, tmp_path / "d", "x", OPTIONS)


def test_contexts_per_feature_option(tmp_path):
    build_dashboards(_kinds(), tmp_path / "d", "x", DashboardOptions(2, 10))
    page = (tmp_path / "d" / "features" / "sae-0.html").read_text()
    assert page.count('class="ctx"') == 2
    with pytest.raises(ValueError, match="figures.dashboards.contexts_per_feature"):
        schema_defaults("figures", {"dashboards": {"contexts_per_feature": 0}})


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "chromium is not installed (Debian: apt-get install -y chromium); "
            "the dashboard browser test needs it"
        )
    b = Browser(binary)
    yield b
    b.close()


def _shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("LORASCOPE_SCREENSHOTS", tmp_path / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_index_in_browser(site, browser, tmp_path):
    browser.goto(site / "index.html")
    visible = "document.querySelectorAll('#features tbody tr:not([hidden])').length"
    assert browser.eval(visible) == N_LORA + N_SAE
    assert browser.eval("document.getElementById('count').textContent") == (
        f"{N_LORA + N_SAE} of {N_LORA + N_SAE} shown"
    )

    def set_filter(el_id, value):
        browser.eval(
            f"(() => {{ const e = document.getElementById('{el_id}');"
            f" e.value = '{value}'; e.dispatchEvent(new Event('input')); }})()"
        )

    set_filter("f-kind", "sae")
    assert browser.eval(visible) == N_SAE
    set_filter("f-kind", "lora")
    set_filter("f-module", "gate")
    assert browser.eval(visible) == 3  # one gate per layer, 3 layers
    set_filter("f-module", "")
    set_filter("f-kind", "")
    set_filter("f-detection", "0.5")
    shown = browser.eval(
        "Array.from(document.querySelectorAll('#features tbody tr:not([hidden])'))"
        ".map(r => parseFloat(r.dataset.detection))"
    )
    kinds = _kinds()
    expected = sum(
        int((k.scores["balanced_accuracy"] >= 0.5).sum()) for k in kinds.values()
    )
    assert len(shown) == expected and min(shown) >= 0.5
    set_filter("f-detection", "0")
    # sorting by detection, descending after two clicks
    browser.eval("document.querySelector('th[data-key=detection]').click()")
    browser.eval("document.querySelector('th[data-key=detection]').click()")
    order = browser.eval(
        "Array.from(document.querySelectorAll('#features tbody tr'))"
        ".map(r => parseFloat(r.dataset.detection))"
    )
    assert order == sorted(order, reverse=True)
    shot = _shots(tmp_path) / "index.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 5000
    assert browser.console_errors() == []


def test_feature_page_in_browser(site, browser, tmp_path):
    browser.goto(site / "features" / "lora-4.html")
    n_tok = browser.eval("document.querySelectorAll('.ctx .tok').length")
    assert n_tok == N_CTX * 12
    # highlight strength follows the activation: the peak token is the darkest
    alphas = browser.eval(
        "Array.from(document.querySelectorAll('.ctx')[0].querySelectorAll('.tok'))"
        ".map(t => [parseFloat(getComputedStyle(t).getPropertyValue('--a')),"
        " parseFloat(t.title), t.classList.contains('peak')])"
    )
    peak = [a for a in alphas if a[2]][0]
    assert peak[0] == max(a[0] for a in alphas) > 0.5
    assert all(a[1] == a[1] for a in alphas)  # every token has a numeric title
    bg = browser.eval(
        "getComputedStyle(document.querySelector('.ctx .tok.peak')).backgroundColor"
    )
    assert bg == "rgb(230, 97, 1)"  # the strongest token: full colour
    faint = browser.eval(
        "getComputedStyle(document.querySelector('.ctx .tok:not(.peak)'))"
        ".backgroundColor"
    )
    assert re.fullmatch(r"rgba\((230, 97, 1|33, 102, 172), 0\.\d+\)", faint)
    assert browser.eval("document.querySelector('svg.hist rect') !== null")
    shot = _shots(tmp_path) / "feature.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 5000
    assert browser.console_errors() == []


def test_console_errors_are_caught(site, browser, tmp_path):
    # The check above must be able to fail: a page with a missing script.
    broken = tmp_path / "broken"
    shutil.copytree(site, broken)
    (broken / "static" / "dashboard.js").unlink()
    browser.goto(broken / "index.html")
    errors = browser.console_errors()
    assert errors and any("ERR_FILE_NOT_FOUND" in e for e in errors)


def test_context_view_shades_by_the_largest_activation():
    """Each token's shade is |act| / max |act| over all contexts shown (3
    decimals), negative acts flagged, the centre token marked; newlines and
    tabs become visible marks so a context stays on one line."""
    from lorascope.dashboards.build import context_view

    rows = [
        {
            "rank": 1, "doc": 7, "pos": 2, "value": 4,
            "tokens": ["a\n", "\tb", "c"], "acts": [0.0, -1.0, 4.0], "center": 2,
        },
        {
            "rank": 2, "doc": 9, "pos": 0, "value": 1,
            "tokens": ["d"], "acts": [1.0 / 3], "center": 0,
        },
    ]  # fmt: skip
    view, scale = context_view(rows)
    assert scale == 4.0
    first = view[0]
    assert (first["rank"], first["doc"], first["pos"], first["value"]) == (1, 7, 2, 4.0)
    assert [t["text"] for t in first["tokens"]] == ["a↵", "⇥b", "c"]
    assert [t["alpha"] for t in first["tokens"]] == [0.0, 0.25, 1.0]
    assert [t["neg"] for t in first["tokens"]] == [False, True, False]
    assert [t["center"] for t in first["tokens"]] == [False, False, True]
    assert view[1]["tokens"][0]["alpha"] == 0.083  # (1/3) / 4, 3 decimals
    # Nothing active (or nothing at all): scale 1, every shade 0, no crash.
    zero = [dict(rows[1], acts=[0.0])]
    assert context_view(zero)[1] == 1.0 and context_view([])[1] == 1.0
    assert context_view(zero)[0][0]["tokens"][0]["alpha"] == 0.0
    # A context whose tokens and acts disagree in length is an error.
    with pytest.raises(ValueError):
        context_view([dict(rows[1], acts=[1.0, 2.0])])


def test_missing_values_show_a_dash_and_templates_fail_on_undefined():
    from lorascope.dashboards.build import _env, _fmt

    assert _fmt(None) == "—" and _fmt(float("nan")) == "—"
    assert _fmt(0.0) == "0" and _fmt(3) == "3" and _fmt(1 / 3) == "0.333"
    env = _env()
    with pytest.raises(Exception, match="undefined"):
        env.from_string("{{ missing }}").render()
    assert env.from_string("{{ '<b>' }}").render() == "&lt;b&gt;"
