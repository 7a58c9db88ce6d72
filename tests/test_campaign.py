# SPDX-License-Identifier: MIT
"""Campaigns: generated architectures, the digits run, shrinking, interruption."""

from __future__ import annotations

import pytest

from examples import delta_rule_mistakes as mistakes
from gradcheck import Verdict, delta_rule
from gradcheck._campaign import GENERATED, RAISED, run_campaign, summarise
from gradcheck._delta_rule import QUANTITY_KINDS
from gradcheck._digits import DIGITS_NETWORK, train_on_digits
from gradcheck.errors import InputMutationError, InvalidArgumentError, InvalidTypeError
from gradcheck.strategies import seeded_delta_rule_cases


def test_builtin_delta_rule_passes_generated_campaign():
    campaign = run_campaign(count=6, seed_=3, digits_epochs=None)

    summary = summarise(campaign)

    assert summary["counts"] == {"checks": 6, "pass": 6, "fail": 0, "inconclusive": 0}
    assert campaign.shrunk is None
    assert not campaign.has_failures
    kinds = [row["kind"] for row in summary["largest_discrepancies"]]
    assert kinds == [k for k in QUANTITY_KINDS if k in kinds]
    assert {"theta", "dE/dW", "Delta W", "dy/ds", "dE/dy"} <= set(kinds)
    assert all(row["max_band_ratio"] < 1 for row in summary["largest_discrepancies"])


def test_campaign_is_reproducible_from_its_seed():
    first = run_campaign(count=3, seed_=11, digits_epochs=None)
    second = run_campaign(count=3, seed_=11, digits_epochs=None)

    assert [c.network for c in first.checks] == [c.network for c in second.checks]
    assert [c.batch for c in first.checks] == [c.batch for c in second.checks]


@pytest.mark.parametrize(
    ("derivation", "first_wrong"),
    [
        (mistakes.missing_output_slope, "theta"),
        (mistakes.flipped_error_sign, "dE/dy"),
    ],
    ids=["missing-output-slope", "flipped-error-sign"],
)
def test_wrong_derivation_fails_everywhere_and_shrinks(derivation, first_wrong):
    campaign = run_campaign(count=5, seed_=0, derivation=derivation, digits_epochs=None)

    checks = campaign.sections[GENERATED]
    assert all(c.verdict is Verdict.FAIL for c in checks)
    for check in checks:
        assert check.first_wrong == f"{first_wrong}[{check.network.output_layer}]"
    shrunk = campaign.shrunk
    assert shrunk is not None and shrunk.verdict is Verdict.FAIL
    assert shrunk.network.n_params <= min(c.network.n_params for c in checks)
    assert shrunk.network.n_layers == 2
    assert summarise(campaign)["shrunk"]["check"]["first_wrong"] == shrunk.first_wrong


def test_interrupted_campaign_keeps_partial_results():
    calls = 0

    def interrupted_after_two(network, params, x, d, eta):
        nonlocal calls
        calls += 1
        if calls > 2:
            raise KeyboardInterrupt
        return delta_rule(network, params, x, d, eta)

    campaign = run_campaign(
        count=10, derivation=interrupted_after_two, digits_epochs=None
    )

    assert campaign.interrupted
    assert len(campaign.checks) == 2
    assert summarise(campaign)["interrupted"] is True


def test_campaign_rejects_negative_count():
    with pytest.raises(InvalidArgumentError, match=r"count=-1"):
        run_campaign(count=-1)


def test_digits_training_learns_and_saturates():
    checkpoints = train_on_digits(epochs=60)

    assert [c.epoch for c in checkpoints] == [0, 1, 30, 60]
    first, last = checkpoints[0].details, checkpoints[-1].details
    assert last["accuracy"] > 0.9 > first["accuracy"]
    assert last["saturated_fraction"] > 0.2 > first["saturated_fraction"]
    assert checkpoints[-1].x.shape == (48, DIGITS_NETWORK.sizes[0])


def test_digits_checkpoints_pass_with_builtin_and_fail_with_mistake():
    good = run_campaign(count=0, digits_epochs=2)
    bad = run_campaign(
        count=0, derivation=mistakes.missing_output_slope, digits_epochs=2
    )

    assert [c.verdict for c in good.checks] == [Verdict.PASS] * 3
    assert [c.first_wrong for c in bad.checks] == ["theta[2]"] * 3
    assert good.checks[-1].details["epoch"] == 2


def test_derivation_that_raises_on_some_networks_is_recorded_and_run_goes_on():
    def crashes_with_skips(network, params, x, d, eta):
        if network.skips:
            raise ValueError("shapes do not align")
        return delta_rule(network, params, x, d, eta)

    campaign = run_campaign(
        count=8, derivation=crashes_with_skips, digits_epochs=None, shrink=False
    )

    checks = campaign.checks
    assert len(checks) == 8
    raised = [c for c in checks if c.first_wrong == RAISED]
    assert raised and all(c.network.skips for c in raised)
    assert all("shapes do not align" in c.details["error"] for c in raised)
    assert all(c.verdict is Verdict.PASS for c in checks if not c.network.skips)


def _returns_nothing(network, params, x, d, eta):
    return None


def _doubles_its_input(network, params, x, d, eta):
    x *= 2.0
    return delta_rule(network, params, x, d, eta)


@pytest.mark.parametrize(
    ("derivation", "error", "message"),
    [
        (_returns_nothing, InvalidTypeError, r"must return a mapping"),
        (_doubles_its_input, InputMutationError, r"changed its input x in place"),
    ],
)
def test_misbehaving_derivation_stops_the_campaign_with_its_own_error(
    derivation, error, message
):
    # Not a Hypothesis "flaky" error: the derivation's own misuse, named.
    with pytest.raises(error, match=message):
        run_campaign(count=3, derivation=derivation, digits_epochs=None)


def test_campaign_with_seeded_cases_passes_right_and_shrinks_wrong_derivation():
    good = run_campaign(
        count=5, seed_=2, digits_epochs=None, cases=seeded_delta_rule_cases
    )
    bad = run_campaign(
        count=3,
        seed_=2,
        derivation=mistakes.missing_output_slope,
        digits_epochs=None,
        cases=seeded_delta_rule_cases,
    )

    assert [c.verdict for c in good.checks] == [Verdict.PASS] * 5
    assert len({c.network for c in good.checks}) == 5
    assert "seeded" in summarise(good)["sections"][0]["description"]
    assert all(c.verdict is Verdict.FAIL for c in bad.checks)
    assert bad.shrunk is not None and bad.shrunk.network.n_layers == 2
    assert bad.shrunk.first_wrong == "theta[1]"


def test_reproduce_line_names_the_derivation_and_the_cases_it_ran_with():
    own = run_campaign(
        count=1,
        seed_=3,
        derivation=mistakes.missing_output_slope,
        derivation_name="examples.delta_rule_mistakes:missing_output_slope",
        digits_epochs=None,
        shrink=False,
        cases=seeded_delta_rule_cases,
    )
    built_in = run_campaign(count=1, seed_=3, digits_epochs=None)

    assert own.checks[0].reproduce == (
        "gradcheck report --seed 3 --derivation "
        "examples.delta_rule_mistakes:missing_output_slope --seeded-arrays "
        "--count 1, the last example"
    )
    assert built_in.checks[0].reproduce == (
        "gradcheck report --seed 3 --count 1, the last example"
    )
