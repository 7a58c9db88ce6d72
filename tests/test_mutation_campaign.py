# SPDX-License-Identifier: MIT
"""The mutation campaign: outcomes, localisation, search, report and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, seed, settings
from test_mutants import FIRST_ON_RICH, rich_point

from gradcheck import Network, Verdict, delta_rule
from gradcheck import mutants as catalogue
from gradcheck._mutation_campaign import (
    _delta_rule_point,
    _gradient_point,
    evaluate_mutant,
    evaluate_point,
    examples_to_catch,
    run_mutation_campaign,
    summarise_mutations,
)
from gradcheck._mutation_report import render_mutation_html, write_mutation_report
from gradcheck._softmax_model import softmax_cases
from gradcheck.cli import main
from gradcheck.mutants import DELTA_RULE, TANH_SOFTMAX


@pytest.fixture(scope="module")
def point():
    return _delta_rule_point(rich_point(), "rich")


@pytest.fixture(scope="module")
def outcomes(point):
    right, found = evaluate_point(point, catalogue.catalogue(DELTA_RULE), delta_rule)
    assert right.verdict is Verdict.PASS
    return {o.mutant: o for o in found}


@pytest.mark.parametrize("name", sorted(set(FIRST_ON_RICH) - {"slope-clipped"}))
def test_each_mutant_is_detected_and_named_where_it_matters(outcomes, name):
    outcome = outcomes[name]

    assert outcome.outcome == "detected"
    assert outcome.first_wrong == FIRST_ON_RICH[name]
    assert outcome.localised
    assert outcome.why_not == ""


def test_clipped_slope_is_equivalent_until_units_saturate(outcomes):
    clipped = catalogue.get("slope-clipped")
    saturated = _delta_rule_point(rich_point(scale=40.0, batch=3), "saturated")

    found = evaluate_mutant(saturated, clipped)

    assert outcomes["slope-clipped"].outcome == "equivalent"
    assert found.outcome == "detected"
    assert found.first_wrong.startswith("dy/ds[")


# RICH without its skip; shared by tests so that it compiles once.
PLAIN = Network((2, 3, 3, 2), (), True)


def test_mistakes_that_cannot_show_are_classified_equivalent():
    # No skips, batch 1, eta 1: four mutants compute the right numbers.
    network = PLAIN
    _, params, x, d, _ = rich_point(batch=1)
    params = {k: v for k, v in params.items() if k != "W[1->3]"}
    here = _delta_rule_point((network, params, x, d, 1.0), "plain")

    for name in ("skip-successors-missing", "eta-twice", "eta-missing"):
        assert evaluate_mutant(here, catalogue.get(name)).outcome == "equivalent"
    averaged = evaluate_mutant(here, catalogue.get("bias-gradient-averaged"))
    assert averaged.outcome == "equivalent"
    assert averaged.band_ratio == 0.0
    # The same batch of one leaves the batch loop nothing: caught.
    skipped = evaluate_mutant(here, catalogue.get("batch-loop-off-by-one"))
    assert skipped.outcome == "detected"


def _nudged(network, params, x, d, eta):
    # dy/ds keeps its central difference (the complex step tightens only
    # the derivatives of the loss), so its band is far wider than rounding.
    q = delta_rule(network, params, x, d, eta)
    name = f"dy/ds[{network.output_layer}]"
    q[name] = q[name] * (1.0 + 1e-12)
    return q


def test_a_change_inside_the_band_is_below_band_not_equivalent(point):
    mutant = catalogue.Mutant(
        "nudged", "1e-12 relative", "dy/ds[L]", _nudged, DELTA_RULE
    )

    outcome = evaluate_mutant(point, mutant)

    assert outcome.outcome == "below band"
    assert 0.0 < outcome.band_ratio < 1.0


def test_a_blind_checker_is_reported_as_missing_the_mutant(point):
    # A checker that passes everything must show up as a miss.
    blind = _delta_rule_point(rich_point(), "blind")
    real_check = blind.check
    blind.check = lambda derivation, refs=None: (
        real_check(delta_rule) if refs is None else real_check(derivation, refs)
    )

    outcome = evaluate_mutant(blind, catalogue.get("half-forgotten"))

    assert outcome.outcome == "missed"
    assert outcome.band_ratio > 1.0


def test_localisation_explains_a_touched_quantity_inside_its_band(point):
    # The touched quantity is off by 1e-14 only (inside even the band of
    # the complex step); a later one is far off.
    def later(network, params, x, d, eta):
        q = delta_rule(network, params, x, d, eta)
        name = f"dE/dW[1->{network.output_layer}]"
        q[name] = q[name] * (1.0 + 1e-14)
        q["Delta b[3]"] = q["Delta b[3]"] + 1.0
        return q

    mutant = catalogue.Mutant("later", "x", "dE/dW[u->L]", later, DELTA_RULE)

    outcome = evaluate_mutant(point, mutant)

    assert outcome.first_wrong == "Delta b[3]"
    assert not outcome.localised
    assert "dE/dW[1->3] moved by at most" in outcome.why_not
    assert "too little to see" in outcome.why_not


def test_gradient_mutants_are_detected_at_their_step():
    cases = []

    @seed(3)
    @settings(max_examples=30, database=None, derandomize=False)
    @given(softmax_cases())
    def draw(case):
        if case.params["W1"].shape[1] > 1 and len(case.x) > 1:
            cases.append(case)

    draw()
    here = _gradient_point(TANH_SOFTMAX, cases[-1], "softmax")

    right, found = evaluate_point(
        here, catalogue.catalogue(TANH_SOFTMAX), TANH_SOFTMAX.grad
    )

    assert right.verdict is Verdict.PASS
    by_name = {o.mutant: o for o in found}
    assert by_name["tanh-slope-one-minus-y"].first_wrong == "dL/ds"
    assert by_name["softmax-jacobian-diagonal"].first_wrong == "dL/dz"
    assert all(o.localised for o in found)


def test_examples_to_catch_counts_examples_up_to_the_first_failure():
    strong = catalogue.get("error-sign-flipped")
    right = catalogue.Mutant("right", "no mistake", "theta[L]", delta_rule)

    here = {"networks": (PLAIN,), "max_batch": 1}

    assert examples_to_catch(strong, 0, 5, targeted=False, **here) == 1
    assert examples_to_catch(strong, 0, 5, targeted=True, **here) == 1
    assert examples_to_catch(right, 0, 3, targeted=True, **here) is None


def test_summary_and_report_hold_the_matrix(tmp_path):
    chosen = [catalogue.get("eta-twice"), catalogue.get("skip-successors-missing")]
    campaign = run_mutation_campaign(
        count=1,
        mutants=chosen,
        gradient_count=0,
        search_seeds=(0,),
        search_budget=2,
        search_networks=(PLAIN,),
    )

    summary = summarise_mutations(campaign)
    html_path, json_path = write_mutation_report(summary, tmp_path)

    rows = {row["name"]: row for row in summary["mutants"]}
    assert sum(rows["eta-twice"]["counts"].values()) == 1
    assert summary["right"]["checks"] == 1
    assert summary["passed"] is (summary["totals"]["missed"] == 0)
    assert rows["eta-twice"]["search"]["untargeted"] != []
    data = json.loads(json_path.read_text())
    assert data["mutants"][0]["name"] == "eta-twice"
    assert set(data["mutants"][0]["counts"]) == {
        "detected",
        "equivalent",
        "below band",
        "unsettled",
        "missed",
    }
    html = html_path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<code>skip-successors-missing</code>" in html
    assert "Examples needed to catch each mutant" in html
    assert "Every detection names the touched quantity first." in html
    assert "<script" not in html and "http" not in html


def test_report_rejects_an_incomplete_summary():
    with pytest.raises(ValueError, match="summary is missing the keys"):
        render_mutation_html({"title": "x"})


def test_cli_exits_0_and_writes_the_report(tmp_path, capsys):
    code = main(
        [
            "mutants",
            "--only",
            "error-sign-flipped,half-forgotten",
            "--count",
            "1",
            "--gradient-count",
            "0",
            "--search-seeds",
            "",
            "--out",
            str(tmp_path),
            "-q",
        ]
    )

    assert code == 0
    out = capsys.readouterr().out
    assert "2 mutants: 2 detected, 0 equivalent" in out
    assert "touched one in 2 of 2 detections (100.0%)" in out
    assert (tmp_path / "mutants.html").exists()
    assert json.loads((tmp_path / "mutants.json").read_text())["passed"] is True


def test_cli_exits_1_when_a_mutant_is_missed(tmp_path, capsys, monkeypatch):
    import gradcheck._mutation_campaign as campaign_module

    real_run = campaign_module._run

    def blind(point, derivation, refs=None):
        return real_run(point, delta_rule if refs is None else derivation, refs)

    monkeypatch.setattr(campaign_module, "_run", blind)
    args = ["mutants", "--only", "half-forgotten", "--count", "1"]
    args += ["--gradient-count", "0", "--search-seeds", "", "-q"]

    code = main([*args, "--out", str(tmp_path)])

    assert code == 1
    assert "MISSED: half-forgotten on 1 points" in capsys.readouterr().out
    assert json.loads((tmp_path / "mutants.json").read_text())["passed"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "no-such-mutant"], "no mutant is named 'no-such-mutant'"),
        (["--plugin", "no_such_module_xyz"], "--plugin 'no_such_module_xyz'"),
    ],
    ids=["unknown-mutant", "unknown-plugin"],
)
def test_cli_exits_2_on_bad_usage(tmp_path, capsys, args, message):
    code = main(["mutants", *args, "--out", str(tmp_path), "-q"])

    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_a_zero_search_budget(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["mutants", "--search-budget", "0"])

    assert exit_.value.code == 2
    assert "expected 1 or more" in capsys.readouterr().err


@pytest.mark.slow
def test_targeting_finds_a_saturation_only_mistake_in_every_seed():
    # Which examples Hypothesis draws depends on its version and on the
    # modules loaded, so the claim is over several seeds, not one stream.
    clipped = catalogue.get("slope-clipped")
    seeds = range(6)

    untargeted = [examples_to_catch(clipped, s, 60, targeted=False) for s in seeds]
    targeted = [examples_to_catch(clipped, s, 60, targeted=True) for s in seeds]

    assert None not in targeted, (untargeted, targeted)
    as_numbers = [61 if n is None else n for n in untargeted]
    assert np.median(targeted) <= np.median(as_numbers), (untargeted, targeted)


def test_shared_references_give_the_same_check_as_fresh_ones():
    from gradcheck import compare_delta_rule
    from gradcheck._references import compute_references

    args = rich_point()
    references = compute_references(*args)

    shared = compare_delta_rule(*args, references=references)
    fresh = compare_delta_rule(*args)

    assert shared.to_dict() == fresh.to_dict()


def test_shared_gradient_references_give_the_same_check_as_fresh_ones():
    from examples import tanh_softmax as ex
    from gradcheck import compare_gradient
    from gradcheck._gradient import gradient_references

    params, x, labels = ex.example_problem(batch=4)
    references = gradient_references(ex.loss, params, x, labels)

    shared = compare_gradient(
        ex.loss, ex.grad_summed, params, x, labels, references=references
    )
    fresh = compare_gradient(ex.loss, ex.grad_summed, params, x, labels)

    assert shared.verdict is Verdict.FAIL
    assert shared.to_dict() == fresh.to_dict()


@pytest.mark.parametrize(
    ("rate", "shown"),
    [(1.0, "100%"), (1447 / 1454, "99.5%"), (0.0, "0.0%"), (None, "\u2013")],
)
def test_rates_keep_a_decimal_so_that_almost_all_is_not_all(rate, shown):
    from gradcheck._mutation_report import _percent

    assert _percent(rate) == shown
