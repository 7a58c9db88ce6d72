# SPDX-License-Identifier: MIT
"""Tests of the HTML discrepancy report and results.json."""

from __future__ import annotations

import copy
import json
import math
import os
import re

import numpy as np
import pytest
from markupsafe import escape

import gradcheck as gc
from gradcheck import _report
from gradcheck._report import render_html, results_json, write_report
from gradcheck._result import strict_json
from gradcheck.errors import InvalidArgumentError, InvalidTypeError

NETWORK = gc.Network((2, 3, 1), skips=((0, 2),))


def _run(derivation: gc.Derivation = gc.delta_rule, label: str = "") -> dict:
    rng = np.random.default_rng(0)
    params = gc.init_params(NETWORK, rng, 1.0)
    x = rng.normal(size=(4, 2))
    d = rng.uniform(size=(4, 1))
    result = gc.compare_delta_rule(
        NETWORK,
        params,
        x,
        d,
        derivation=derivation,
        label=label,
        reproduce="seed 0, example 0",
    )
    return result.to_dict()


def _wrong_theta(network, params, x, d, eta):
    # Divides the output theta by dy/ds: the classic forgotten-derivative bug.
    quantities = dict(gc.delta_rule(network, params, x, d, eta))
    quantities["theta[2]"] = quantities["theta[2]"] / quantities["dy/ds[2]"]
    return quantities


def _wrong_shape(network, params, x, d, eta):
    quantities = dict(gc.delta_rule(network, params, x, d, eta))
    quantities["dE/dW[1->2]"] = quantities["dE/dW[1->2]"].T
    return quantities


@pytest.fixture(scope="module")
def passing() -> dict:
    check = _run(label="generated #0")
    check["details"] = {"weight_scale": 0.5}
    return check


@pytest.fixture(scope="module")
def failing() -> dict:
    return _run(_wrong_theta, label="generated #1")


@pytest.fixture(scope="module")
def wrong_shape() -> dict:
    return _run(_wrong_shape, label="generated #2")


def _relabel(check: dict, label: str, verdict: str | None = None) -> dict:
    check = copy.deepcopy(check)
    check["label"] = label
    if verdict is not None:
        check["verdict"] = verdict
    return check


def _campaign(
    generated: list[dict],
    real: list[dict] | tuple[dict, ...] = (),
    *,
    interrupted: bool = False,
    shrunk: dict | None = None,
    largest: list[dict] | None = None,
) -> dict:
    """Build a campaign dict with the schema the campaign module produces."""
    checks = [*generated, *real]
    counts = {
        "checks": len(checks),
        "pass": sum(c["verdict"] == "pass" for c in checks),
        "fail": sum(c["verdict"] == "fail" for c in checks),
        "inconclusive": sum(c["verdict"] == "inconclusive" for c in checks),
    }
    if largest is None:
        largest = [
            {
                "kind": "theta",
                "max_abs_discrepancy": 1e-17,
                "max_rel_discrepancy": 3e-16,
                "max_band_ratio": 0.01,
                "max_reference_gap": 1e-11,
                "check": checks[0]["label"] if checks else "",
                "entry": "theta[2][0,0]",
            }
        ]
    return {
        "title": "Delta rule campaign",
        "derivation": "gradcheck.delta_rule (built-in)",
        "seed": 0,
        "count": len(generated),
        "interrupted": interrupted,
        "started": "2026-12-03T17:00:00+00:00",
        "duration_s": 93.2,
        "counts": counts,
        "largest_discrepancies": largest,
        "sections": [
            {
                "name": "Generated architectures",
                "description": "Architectures drawn by Hypothesis (seed 0).",
                "checks": list(generated),
            },
            {
                "name": "Real data: scikit-learn digits",
                "description": "A small network trained on the digits.",
                "checks": list(real),
            },
        ],
        "shrunk": shrunk,
        "environment": {"python": "3.11.7", "numpy": "2.4.6", "gradcheck": "0.1.0"},
        "settings": {"safety_factor": 4.0, "rounding_factor": 64.0},
    }


def _strict_loads(text: str) -> object:
    def reject(constant: str) -> object:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


# ---------------------------------------------------------------------------
# The page


def test_render_html_shows_counts_and_verdicts(passing):
    generated = [_relabel(passing, f"generated #{i}") for i in range(3)]
    real = [_relabel(passing, "digits epoch 0")]
    real[0]["details"] = {"epoch": 0, "saturated_fraction": 0.43}

    html = render_html(_campaign(generated, real))

    assert "PASSED" in html
    assert "FAILED" not in html
    assert "all 4 of 4 checks passed" in html
    assert '<div class="n">4</div><div class="k">checks</div>' in html
    assert '<div class="n">0</div><div class="k">failed</div>' in html
    assert html.count('class="b pass"') >= 4
    for label in ("generated #0", "generated #2", "digits epoch 0"):
        assert label in html
    assert "saturated_fraction=0.43" in html
    assert "Delta rule campaign" in html
    assert "gradcheck.delta_rule (built-in)" in html
    assert "2026-12-03 17:00 UTC" in html
    assert "1 min 33 s" in html
    assert "How to read this" in html


def test_render_html_notes_inconclusive_checks(passing):
    unsure = _relabel(passing, "generated #1", verdict="inconclusive")

    html = render_html(_campaign([passing, unsure]))

    assert "PASSED" in html
    assert "1 of 2 checks passed; 1 inconclusive" in html
    assert 'id="inconclusive"' in html


def test_render_html_escapes_labels(passing):
    check = _relabel(passing, "<script>alert(1)</script>")
    check["details"] = {"note": '<img src=x onerror="alert(2)">'}
    campaign = _campaign([check])
    campaign["title"] = "<b>bold</b>"
    campaign["sections"][0]["description"] = "<iframe></iframe>"

    html = render_html(campaign)

    assert "<script" not in html
    assert "<img" not in html
    assert "<iframe" not in html
    assert "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html


def test_render_html_shows_failures_with_first_wrong_and_worst(passing, failing):
    html = render_html(_campaign([passing, failing]))

    assert failing["verdict"] == "fail"
    assert failing["first_wrong"] == "theta[2]"
    assert "FAILED" in html
    assert "1 of 2 checks failed" in html
    assert 'id="failures"' in html
    # Failures come before the per-section tables.
    assert html.index('id="failures"') < html.index('id="section-0"')
    assert "First wrong quantity: <code>theta[2]</code>" in html
    quantity = next(q for q in failing["quantities"] if q["name"] == "theta[2]")
    for entry in quantity["worst"]:
        assert str(escape(entry["name"])) in html
    assert "|analytic &minus; autodiff|" in html


def test_render_html_shows_note_and_nonfinite_values(wrong_shape):
    html = render_html(_campaign([wrong_shape]))

    assert wrong_shape["verdict"] == "fail"
    assert "the derivation returned shape (1, 3), expected (3, 1)" in html
    assert "\u221e" in html


def test_render_html_shows_smallest_failing_network(passing, failing):
    shrunk = {
        "description": "smallest failing network Hypothesis found",
        "check": _relabel(failing, "shrunk"),
    }

    html = render_html(_campaign([passing, failing], shrunk=shrunk))

    assert "Smallest failing network" in html
    assert "smallest failing network Hypothesis found" in html
    assert html.index("Smallest failing network") < html.index("generated #1")


def test_render_html_shows_partial_banner_only_when_interrupted(passing):
    partial = render_html(_campaign([passing], interrupted=True))
    complete = render_html(_campaign([passing], interrupted=False))

    assert "Partial results" in partial
    assert 'class="banner"' in partial
    assert "Partial results" not in complete


def test_render_html_references_nothing_external(passing, failing):
    html = render_html(_campaign([passing, failing]))

    external = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//""", re.I)
    assert not external.search(html)
    assert "<script" not in html
    assert "<link" not in html
    assert "@import" not in html
    assert not re.search(r"""url\(\s*["']?(?!#)""", html)  # only url(#id)
    assert "<svg" in html  # the plot is inline


def test_render_html_handles_nan_and_zero_ratios(passing, wrong_shape):
    nan_check = _relabel(passing, "generated #1", verdict="fail")
    nan_check["quantities"][0]["max_band_ratio"] = math.nan
    nan_check["quantities"][0]["max_abs_discrepancy"] = math.nan
    zero_check = _relabel(passing, "generated #2")
    for quantity in zero_check["quantities"]:
        quantity["max_band_ratio"] = 0.0

    html = render_html(_campaign([nan_check, zero_check, wrong_shape]))

    assert "NaN" in html
    assert "exactly 0" in html
    assert "\u221e or NaN" in html


def test_render_html_stays_small_for_a_full_campaign(passing, failing):
    generated = [_relabel(passing, f"generated #{i}") for i in range(200)]
    generated[17] = _relabel(failing, "generated #17")
    real = [_relabel(passing, f"digits epoch {10 * i}") for i in range(10)]

    html = render_html(_campaign(generated, real))

    assert len(html.encode()) < 3_000_000
    # Passing checks get the per-quantity table, not worst-entry tables: the
    # failing check has them in the Failures section and in its row.
    n_failing = sum(q["verdict"] == "fail" for q in failing["quantities"])
    assert html.count('class="num worst"') == n_failing + 1


def test_render_html_stays_small_when_every_check_fails(failing):
    # The worst case: every quantity of every check fails.
    heavy = copy.deepcopy(failing)
    worst = next(q for q in heavy["quantities"] if q["verdict"] == "fail")["worst"]
    for quantity in heavy["quantities"]:
        quantity["verdict"] = "fail"
        quantity["worst"] = worst
    generated = [_relabel(heavy, f"generated #{i}") for i in range(210)]

    html = render_html(_campaign(generated))

    assert len(html.encode()) < 3_000_000
    assert f"{210 - _report.MAX_FAILURE_CARDS} more failing checks" in html
    assert 'href="#check-0-209"' in html


@pytest.mark.parametrize(
    ("campaign", "error"),
    [
        pytest.param([], InvalidTypeError, id="not-a-dict"),
        pytest.param(
            {"title": "x", "counts": {}}, InvalidArgumentError, id="no-sections"
        ),
    ],
)
def test_render_html_rejects_malformed_campaigns(campaign, error):
    with pytest.raises(error, match="campaign"):
        render_html(campaign)


# ---------------------------------------------------------------------------
# results.json


def test_results_json_is_strict_with_counts_and_nonfinite_as_strings(
    passing, failing, wrong_shape, tmp_path
):
    largest = [
        {
            "kind": "dE/dW",
            "max_abs_discrepancy": math.inf,
            "max_rel_discrepancy": -math.inf,
            "max_band_ratio": math.nan,
            "max_reference_gap": 1e-11,
            "check": "generated #2",
            "entry": "dE/dW[1->2]",
        }
    ]
    campaign = _campaign([passing, failing, wrong_shape], largest=largest)

    _, json_path = write_report(campaign, tmp_path)
    data = _strict_loads(json_path.read_text(encoding="utf-8"))

    assert data["counts"] == campaign["counts"]
    row = data["largest_discrepancies"][0]
    assert row["max_abs_discrepancy"] == "inf"
    assert row["max_rel_discrepancy"] == "-inf"
    assert row["max_band_ratio"] == "nan"
    assert row["max_reference_gap"] == 1e-11
    assert data["title"] == "Delta rule campaign"
    assert data["interrupted"] is False
    assert data["shrunk"] is None


def test_results_json_lists_every_check_compactly(passing, failing):
    shrunk = {"description": "smallest", "check": _relabel(failing, "shrunk")}
    campaign = _campaign([passing, failing], [passing], shrunk=shrunk)

    data = results_json(campaign)

    assert [c["label"] for c in data["checks"]] == [
        "generated #0",
        "generated #1",
        "generated #0",
    ]
    row = data["checks"][1]
    evidence = ("numeric_reference", "taylor_orders", "sweeps")
    assert {k: v for k, v in row.items() if k not in evidence} == {
        "section": "Generated architectures",
        "label": "generated #1",
        "verdict": "fail",
        "architecture": NETWORK.describe(),
        "first_wrong": "theta[2]",
        "n_params": NETWORK.n_params,
        "batch": 4,
    }
    assert row["numeric_reference"] == "complex step"
    assert set(row["taylor_orders"]) == {f"dE/d{n}" for n in NETWORK.param_shapes()}
    assert 1 <= len(row["sweeps"]) <= 3
    assert len(row["sweeps"][0]["vs_autodiff"]) == len(row["sweeps"][0]["steps"])
    assert data["checks"][2]["section"] == "Real data: scikit-learn digits"
    assert data["shrunk"] == {
        "architecture": NETWORK.describe(),
        "first_wrong": "theta[2]",
        "label": "shrunk",
    }
    json.dumps(data, allow_nan=False)


def test_strict_converts_nested_nonfinite_values():
    value = {"a": (1.0, np.float64("nan")), "b": [{"c": -math.inf}], "d": np.int64(3)}

    assert strict_json(value) == {"a": [1.0, "nan"], "b": [{"c": "-inf"}], "d": 3}


# ---------------------------------------------------------------------------
# Writing


def test_write_report_creates_directory_and_replaces_existing(passing, tmp_path):
    directory = tmp_path / "reports" / "delta-rule"
    directory.mkdir(parents=True)
    (directory / "index.html").write_text("old page")
    (directory / "results.json").write_text("{}")

    html_path, json_path = write_report(_campaign([passing]), directory)

    assert html_path == directory / "index.html"
    assert json_path == directory / "results.json"
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert _strict_loads(json_path.read_text(encoding="utf-8"))["counts"]["pass"] == 1
    assert sorted(os.listdir(directory)) == ["index.html", "results.json"]


def test_write_report_creates_missing_directory(passing, tmp_path):
    directory = tmp_path / "new" / "nested"

    write_report(_campaign([passing]), str(directory))

    assert sorted(os.listdir(directory)) == ["index.html", "results.json"]


def test_write_report_keeps_old_report_when_replace_fails(
    passing, tmp_path, monkeypatch
):
    (tmp_path / "index.html").write_text("old page")

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(_report.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_report(_campaign([passing]), tmp_path)

    assert (tmp_path / "index.html").read_text() == "old page"
    assert os.listdir(tmp_path) == ["index.html"]


def test_render_html_renders_an_empty_campaign():
    html = render_html(_campaign([]))

    assert "no checks ran" in html
    assert "No checks to plot." in html


def test_report_draws_the_step_sweeps_and_the_taylor_orders(tmp_path, failing):
    campaign = _campaign([failing], [])

    html_path, _ = write_report(campaign, tmp_path)
    html = html_path.read_text(encoding="utf-8")

    assert "Step sweep of the worst entries" in html
    assert 'aria-label="error of the central difference against its step"' in html
    assert "<polyline" in html
    assert "Taylor remainder along a random direction" in html
    assert "Numeric reference: complex step" in html
    # Self-contained: nothing is fetched from elsewhere.
    assert not re.search(r'(src|href)="https?:', html)
    assert "<script" not in html


def test_sweep_svg_is_empty_without_sweeps():
    assert _report.render_sweep_svg([]) == ""
    assert _report.render_sweep_svg(None) == ""
