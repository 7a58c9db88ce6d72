# SPDX-License-Identifier: MIT
"""The Taylor-remainder test: order 2 for a right gradient, 1 for a wrong one."""

from __future__ import annotations

import numpy as np
import pytest
from evidence_problems import (
    NET,
    delta_case,
    mlp_grad,
    mlp_grad_one_entry_off,
    mlp_loss,
    mlp_problem,
)

from gradcheck import (
    Verdict,
    compare_delta_rule,
    compare_gradient,
    delta_rule,
)
from gradcheck._taylor import TAYLOR_STEPS, fit_order, taylor_directions
from gradcheck.mutants import get

STEPS = np.asarray(TAYLOR_STEPS)


def test_fit_order_reads_the_slope_above_rounding():
    floor = np.full(STEPS.size, 1e-16)
    quadratic = 3.0 * STEPS**2
    linear = 1e-3 * STEPS + STEPS**2

    assert fit_order(STEPS, quadratic, floor) == pytest.approx(2.0, abs=1e-9)
    assert fit_order(STEPS, linear, floor) == pytest.approx(1.0, abs=0.01)
    assert fit_order(STEPS, np.full(STEPS.size, 1e-17), floor) is None


def test_directions_are_seeded_signed_and_zero_outside_their_part():
    z = np.array([0.5, -3.0, 2.0, 0.1])
    parts = [slice(0, 2), slice(2, 4)]

    first = taylor_directions(z, parts)
    again = taylor_directions(z, parts)

    np.testing.assert_array_equal(first, again)
    assert (first[0, 2:] == 0).all() and (first[1, :2] == 0).all()
    assert 1.5 <= abs(first[0, 1]) <= 4.5  # scaled by max(1, |z|) = 3


def test_right_gradient_shows_second_order_per_leaf():
    params, x, t = mlp_problem()

    result = compare_gradient(mlp_loss, mlp_grad, params, x, t)

    assert result.verdict is Verdict.PASS
    assert [r.quantity for r in result.taylor] == ["W1", "W2"]
    for r in result.taylor:
        assert r.order_analytic == pytest.approx(2.0, abs=0.1)
        assert r.order_autodiff == pytest.approx(2.0, abs=0.1)
    assert result.diagnosis == ""


def test_planted_error_shows_first_order_in_its_leaf_only():
    params, x, t = mlp_problem()

    result = compare_gradient(mlp_loss, mlp_grad_one_entry_off, params, x, t)

    orders = {r.quantity: r.order_analytic for r in result.taylor}
    assert result.verdict is Verdict.FAIL
    assert orders["W1"] == pytest.approx(2.0, abs=0.1)
    assert orders["W2"] == pytest.approx(1.0, abs=0.1)
    assert result.taylor[1].finding == "first order, as for a wrong gradient"
    assert result.taylor[1].order_autodiff == pytest.approx(2.0, abs=0.1)


def test_taylor_is_in_to_dict():
    params, x, t = mlp_problem()

    data = compare_gradient(mlp_loss, mlp_grad, params, x, t).to_dict()

    assert data["taylor"][0]["quantity"] == "W1"
    assert len(data["taylor"][0]["analytic"]) == STEPS.size
    assert data["taylor"][0]["finding"] == "second order, as for a right gradient"


def test_delta_rule_gradient_is_second_order_per_tensor():
    params, x, d = delta_case()

    result = compare_delta_rule(NET, params, x, d)

    assert [r.quantity for r in result.taylor] == [
        f"dE/d{name}" for name in NET.param_shapes()
    ]
    for r in result.taylor:
        assert r.order_analytic == pytest.approx(2.0, abs=0.1)


def test_delta_rule_mistake_is_first_order_where_it_is():
    params, x, d = delta_case()

    result = compare_delta_rule(
        NET, params, x, d, 0.1, get("half-forgotten").derivation
    )

    assert result.verdict is Verdict.FAIL
    assert all(r.order_analytic == pytest.approx(1.0, abs=0.1) for r in result.taylor)


def test_taylor_evidence_is_said_but_never_fails_the_check():
    # A step of 1e-1 widens the central difference's band so far that an
    # error of 1e-4 relative cannot be settled per entry (more than
    # rounding, less than finite differences resolve); the Taylor
    # remainder, which needs no step, turns first order.
    params, x, d = delta_case(seed=1)

    def slightly_off(network, params, x, d, eta):
        result = delta_rule(network, params, x, d, eta)
        return {**result, "dE/dW[2->3]": result["dE/dW[2->3]"] * (1.0 + 1e-4)}

    result = compare_delta_rule(
        NET, params, x, d, 0.1, slightly_off, rel_step=1e-1, complex_step=False
    )

    assert result.quantity("dE/dW[2->3]").verdict is Verdict.INCONCLUSIVE
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.diagnosis == (
        "Taylor test disagrees with the per-entry verdict: the per-entry check "
        "could not settle dE/dW[2->3], but its Taylor remainder falls like "
        "h^1.0, the sign of a first-order error"
    )


def test_failed_quantity_with_a_second_order_remainder_is_said():
    # 1e-9 relative fails per entry under the complex step's band, but
    # along the random direction it stays below the second-order term at
    # every step above rounding.
    params, x, d = delta_case(seed=1)

    def slightly_off(network, params, x, d, eta):
        result = delta_rule(network, params, x, d, eta)
        return {**result, "dE/dW[2->3]": result["dE/dW[2->3]"] * (1.0 + 1e-9)}

    result = compare_delta_rule(NET, params, x, d, 0.1, slightly_off)

    assert result.verdict is Verdict.FAIL
    assert (
        "the Taylor remainder of dE/dW[2->3] falls like h^2.0, as for a right "
        "gradient, though entries failed"
    ) in result.diagnosis


def test_taylor_can_be_switched_off():
    params, x, d = delta_case()

    result = compare_delta_rule(NET, params, x, d, taylor=False)

    assert result.taylor == ()
