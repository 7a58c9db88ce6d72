# SPDX-License-Identifier: MIT
"""Kinks: ReLU at 0, abs at 0, max at a tie, and near-ties inside the step."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradcheck import (
    GradientMismatchError,
    NotDifferentiableWarning,
    Verdict,
    check_gradient,
    compare_gradient,
    compare_vjp,
    format_failure,
)
from gradcheck._campaign import summarise_checks
from gradcheck._compare import combine_verdicts
from gradcheck._report import render_html, results_json

X = np.array([1.0, -2.0, 0.5])


def relu_loss(params, x):
    w = params["w"]
    return jnp.sum(jax.nn.relu(w) * x) + 0.5 * jnp.sum(w**2)


def relu_grad_with(slope_at_zero):
    def grad(params, x):
        w = params["w"]
        slope = np.where(w > 0, 1.0, np.where(w == 0, slope_at_zero, 0.0))
        return {"w": slope * x + w}

    return grad


AT_ZERO = {"w": np.array([0.0, 0.0, 0.3])}


@pytest.mark.parametrize("slope_at_zero", [0.0, 0.5, 1.0])
def test_relu_at_zero_with_a_subgradient_is_not_differentiable(slope_at_zero):
    result = compare_gradient(relu_loss, relu_grad_with(slope_at_zero), AT_ZERO, X)

    assert result.verdict is Verdict.NOT_DIFFERENTIABLE
    q = result.quantity("w")
    assert q.n_not_differentiable == 2
    assert q.n_mismatched == 0
    kinks = {w.name: (w.left, w.right) for w in q.worst if w.is_kink}
    # w[0]: slopes 0 (left) and x0 = 1 (right); w[1]: 0 and x1 = -2.
    assert kinks.keys() == {"w[0]", "w[1]"}
    np.testing.assert_allclose(kinks["w[0]"], (0.0, 1.0), atol=1e-6)
    np.testing.assert_allclose(kinks["w[1]"], (0.0, -2.0), atol=1e-6)


def test_kink_note_counts_in_words():
    one = compare_gradient(
        relu_loss, relu_grad_with(0.5), {"w": np.array([0.0, 0.3])}, X[:2]
    )
    two = compare_gradient(relu_loss, relu_grad_with(0.5), AT_ZERO, X)

    assert "1 entry sits at a kink of the loss" in one.quantity("w").note
    assert "2 entries sit at a kink of the loss" in two.quantity("w").note


def test_relu_at_zero_outside_the_subgradients_fails_and_shows_the_sides():
    result = compare_gradient(relu_loss, relu_grad_with(2.0), AT_ZERO, X)

    assert result.verdict is Verdict.FAIL
    assert result.quantity("w").n_mismatched == 2
    text = format_failure(result)
    assert "w[0]: analytic 2, numeric 0.5, autodiff 0" in text
    assert "kink: left " in text


@pytest.mark.parametrize(
    ("value", "verdict"),
    [
        (1.0, Verdict.NOT_DIFFERENTIABLE),
        (0.0, Verdict.NOT_DIFFERENTIABLE),
        (-1.0, Verdict.NOT_DIFFERENTIABLE),
        (3.0, Verdict.FAIL),
    ],
)
def test_abs_at_zero_is_judged_by_its_subgradients(value, verdict):
    def loss(params):
        return jnp.sum(jnp.abs(params["w"]))

    def grad(params):
        w = params["w"]
        return {"w": np.where(w == 0, value, np.sign(w))}

    result = compare_gradient(loss, grad, {"w": np.array([0.0, 1.0, -2.0])})

    assert result.verdict is verdict


def max_loss(params):
    w = params["w"]
    return jnp.maximum(w[0], w[1]) + jnp.sum(w**2)


def max_grad(params):
    w = params["w"]
    g = 2.0 * w.copy()
    g[0 if w[0] >= w[1] else 1] += 1.0
    return {"w": g}


def test_max_at_an_exact_tie_is_not_differentiable():
    result = compare_gradient(max_loss, max_grad, {"w": np.array([0.5, 0.5])})

    assert result.verdict is Verdict.NOT_DIFFERENTIABLE
    worst = {w.name: w for w in result.quantity("w").worst}
    np.testing.assert_allclose(
        (worst["w[0]"].left, worst["w[0]"].right), (1.0, 2.0), atol=1e-6
    )


@pytest.mark.parametrize("gap", [1e-7, 1e-9])
def test_near_tie_inside_the_step_is_resolved_by_a_smaller_step(gap):
    # The default step (6e-6) straddles the tie, but the point is
    # differentiable: a smaller step settles it, and no kink is reported.
    params = {"w": np.array([0.5 + gap, 0.5])}

    result = compare_gradient(max_loss, max_grad, params)

    assert result.verdict is Verdict.PASS, format_failure(result)
    q = result.quantity("w")
    assert q.n_not_differentiable == 0
    assert not any(w.is_kink for w in q.worst)
    numeric = {w.name: w.numeric for w in q.worst}
    np.testing.assert_allclose(numeric["w[0]"], 2.0 + 2 * gap, atol=1e-5)


def test_near_tie_with_the_wrong_branch_fails():
    params = {"w": np.array([0.5 + 1e-7, 0.5])}

    def wrong_branch(params):
        g = max_grad(params)["w"]
        return {"w": g[::-1] + 2.0 * (params["w"] - params["w"][::-1])}

    result = compare_gradient(max_loss, wrong_branch, params)

    assert result.verdict is Verdict.FAIL


def test_check_gradient_warns_at_a_kink_and_does_not_raise():
    with pytest.warns(NotDifferentiableWarning, match="valid subgradient"):
        result = check_gradient(relu_loss, relu_grad_with(0.0), AT_ZERO, X)

    assert result.verdict is Verdict.NOT_DIFFERENTIABLE
    with pytest.raises(GradientMismatchError):
        check_gradient(relu_loss, relu_grad_with(2.0), AT_ZERO, X)


def test_vjp_at_a_kink_is_not_differentiable():
    def f(x):
        return jax.nn.relu(x) * 3.0

    def vjp(x, c):
        return c * 3.0 * (x > 0)

    result = compare_vjp(f, vjp, np.array([0.0, 1.0, -1.0]))

    assert result.verdict is Verdict.NOT_DIFFERENTIABLE


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([Verdict.PASS, Verdict.NOT_DIFFERENTIABLE], Verdict.NOT_DIFFERENTIABLE),
        ([Verdict.NOT_DIFFERENTIABLE, Verdict.INCONCLUSIVE], Verdict.INCONCLUSIVE),
        ([Verdict.NOT_DIFFERENTIABLE, Verdict.FAIL], Verdict.FAIL),
    ],
)
def test_not_differentiable_ranks_between_pass_and_inconclusive(verdicts, expected):
    assert combine_verdicts(verdicts) is expected


def test_kinks_appear_in_json_and_html():
    result = compare_gradient(relu_loss, relu_grad_with(0.0), AT_ZERO, X, label="k")
    summary = summarise_checks("kinks", "relu", [("General", "", [result])])

    record = json.loads(json.dumps(result.to_dict()))
    html = render_html(summary)

    assert record["verdict"] == "not-differentiable"
    assert record["quantities"][0]["n_not_differentiable"] == 2
    kink = [w for w in record["quantities"][0]["worst"] if w.get("kink")]
    assert {w["name"] for w in kink} == {"w[0]", "w[1]"}
    assert results_json(summary)["counts"]["not-differentiable"] == 1
    assert 'class="b nd"' in html
    assert "not differentiable" in html
    assert "kink: left" in html


def test_kink_of_a_plain_numpy_loss_is_found_without_autodiff():
    def loss(params):
        w = params["w"]
        return float(np.sum(np.maximum(w, 0) * np.array([1.0, -2.0])) + np.sum(w**2))

    def grad(params):
        w = params["w"]
        return {"w": (w > 0) * np.array([1.0, -2.0]) + 2 * w}

    result = compare_gradient(loss, grad, {"w": np.array([0.0, 0.3])})

    assert result.autodiff_skipped
    assert result.verdict is Verdict.NOT_DIFFERENTIABLE
    kink = next(w for w in result.quantity("w").worst if w.is_kink)
    assert kink.name == "w[0]"
    np.testing.assert_allclose((kink.left, kink.right), (0.0, 1.0), atol=1e-6)
