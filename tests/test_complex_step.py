# SPDX-License-Identifier: MIT
"""The complex step: accurate to rounding where it applies, rejected elsewhere."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from gradcheck import (
    InvalidTypeError,
    Network,
    Verdict,
    compare_delta_rule,
    compare_gradient,
    delta_rule,
    init_params,
)
from gradcheck._calibrate import quadratic_grad, quadratic_loss
from gradcheck._check import COMPLEX_STEP_AUTO_PARAMS
from gradcheck._complex_step import (
    complex_step_gradient,
    delta_rule_complex_step,
)
from gradcheck._references import compute_references

EPS = np.finfo(np.float64).eps
RNG = np.random.default_rng(3)
X = RNG.normal(size=(5, 3))
T = RNG.normal(size=(5, 2))
NET = Network((2, 3, 1), skips=((0, 2),), bias=True)


def sin_exp(z, data):
    """``sum(sin(z) exp(z))``, whose gradient is ``(cos z + sin z) exp(z)``."""
    return jnp.sum(jnp.sin(z) * jnp.exp(z))


def _params(scale=1.0):
    return {
        "W": scale * np.array([[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]]),
        "b": scale * np.ones(2),
    }


def abs_loss(params, x):
    """``|w0| x0 + |w1| x1`` plus cubes: complex abs drops the imaginary part."""
    w = params["w"]
    return jnp.sum(jnp.abs(w[:2]) * x[:2]) + jnp.sum(w**3)


def abs_grad(params, x):
    w = np.asarray(params["w"])
    g = 3.0 * w**2
    g[:2] += np.sign(w[:2]) * x[:2]
    return {"w": g}


def squared_modulus_loss(params, x):
    """``sum(|w|^2 x)``: real for complex input, so no complex step at all."""
    return jnp.sum(jnp.abs(params["w"]) ** 2 * x)


def squared_modulus_grad(params, x):
    return {"w": 2.0 * params["w"] * x}


def test_complex_step_matches_a_closed_form_to_rounding():
    z = np.linspace(-2.0, 3.0, 11)

    value = complex_step_gradient(sin_exp, z, ())

    exact = (np.cos(z) + np.sin(z)) * np.exp(z)
    np.testing.assert_allclose(value, exact, rtol=4 * EPS, atol=4 * EPS)


def test_delta_rule_complex_step_matches_the_closed_form_of_one_unit():
    # E = 1/2 (d - sigmoid(w x + b))^2, dE/dw = -(d - y) y (1 - y) x.
    network = Network((1, 1), bias=True)
    params = {"W[0->1]": np.array([[0.7]]), "b[1]": np.array([-0.3])}
    x, d = np.array([[1.3]]), np.array([[0.9]])
    y = 1.0 / (1.0 + np.exp(-(0.7 * 1.3 - 0.3)))
    references = compute_references(network, params, x, d, 0.1)

    merged, record = delta_rule_complex_step(network, params, x, d, 0.1, references)

    slope = -(0.9 - y) * y * (1.0 - y)
    w = merged["dE/dW[0->1]"].numeric.value[0, 0]
    assert w == pytest.approx(slope * 1.3, rel=8 * EPS)
    assert merged["dE/db[1]"].numeric.value[0] == pytest.approx(slope, rel=8 * EPS)
    assert merged["theta[1]"].numeric.value[0, 0] == pytest.approx(-slope, rel=8 * EPS)
    assert merged["dE/dy[1]"].numeric.value[0, 0] == pytest.approx(y - 0.9, rel=8 * EPS)
    assert record.n_accepted == record.n_entries == 4


def test_general_gradient_uses_the_complex_step_and_says_so():
    result = compare_gradient(quadratic_loss, quadratic_grad, _params(), X, T)

    assert result.verdict is Verdict.PASS
    assert result.numeric_reference == "complex step"
    assert result.complex_step.status == "used"
    assert result.complex_step.n_accepted == result.n_params
    assert result.to_dict()["numeric_reference"] == "complex step"
    assert result.to_dict()["complex_step"]["rejected"] == {}


def test_complex_step_shrinks_the_band_to_rounding():
    with_step = compare_gradient(quadratic_loss, quadratic_grad, _params(), X, T)
    without = compare_gradient(
        quadratic_loss, quadratic_grad, _params(), X, T, complex_step=False
    )

    assert without.numeric_reference == "central differences"
    assert without.complex_step.status == "off"
    scale = max(np.abs(w.autodiff) for q in with_step.quantities for w in q.worst)
    assert max(q.max_band for q in with_step.quantities) < 1e-12 * scale
    assert max(q.max_band for q in without.quantities) > 1e-11 * scale


def test_complex_abs_is_rejected_entry_by_entry_and_the_verdict_stays_right():
    params = {"w": np.array([0.8, -1.1, 0.5, -0.4, 1.2])}
    x = np.array([1.5, 2.0, 0.0, 0.0, 0.0])

    result = compare_gradient(abs_loss, abs_grad, params, x)

    record = result.complex_step
    assert result.verdict is Verdict.PASS
    assert (record.n_entries, record.n_accepted) == (5, 3)
    assert record.rejected == {"outside the central difference's band": 2}
    assert record.examples[0] == "w[0]: outside the central difference's band"
    assert result.numeric_reference == (
        "complex step at 3 of 5 entries, central differences elsewhere"
    )


def test_wrong_gradient_is_still_caught_where_the_complex_step_is_rejected():
    params = {"w": np.array([0.8, -1.1, 0.5, -0.4, 1.2])}
    x = np.array([1.5, 2.0, 0.0, 0.0, 0.0])

    def wrong(params, x):
        g = abs_grad(params, x)["w"]
        g[0] = -g[0]
        return {"w": g}

    result = compare_gradient(abs_loss, wrong, params, x)

    assert result.verdict is Verdict.FAIL
    assert result.quantity("w").worst[0].name == "w[0]"


def test_loss_that_returns_a_real_value_for_complex_input_gets_no_complex_step():
    params = {"w": np.array([0.8, -1.1, 0.5])}
    x = np.array([1.5, 2.0, -0.5])

    result = compare_gradient(squared_modulus_loss, squared_modulus_grad, params, x)

    assert result.verdict is Verdict.PASS
    assert result.complex_step.status == "unavailable"
    assert "returns float64 for complex parameters" in result.complex_step.reason
    assert result.numeric_reference == "central differences"


def test_plain_numpy_loss_gets_no_complex_step():
    def numpy_loss(params, x, t):
        r = np.asarray(x) @ np.asarray(params["W"]) + np.asarray(params["b"]) - t
        return 0.5 * float(np.sum(r**2))

    result = compare_gradient(numpy_loss, quadratic_grad, _params(), X, T)

    assert result.complex_step.status == "unavailable"
    assert result.verdict is Verdict.PASS


@pytest.mark.parametrize("value", ["yes", 1, 0.0], ids=["str", "int", "float"])
def test_complex_step_option_must_be_a_bool_or_none(value):
    with pytest.raises(InvalidTypeError) as info:
        compare_gradient(
            quadratic_loss, quadratic_grad, _params(), X, T, complex_step=value
        )

    assert str(info.value) == (
        f"complex_step must be True, False or None, got complex_step={value!r}"
    )


def test_large_magnitudes_pass_with_the_complex_step():
    # Parameters about 1e4 and a loss about 1e8.
    params = _params(scale=1e4)
    t = 1e4 * T

    result = compare_gradient(quadratic_loss, quadratic_grad, params, X, t)

    assert 1e7 < float(quadratic_loss(params, X, t)) < 1e10
    assert result.verdict is Verdict.PASS
    assert result.numeric_reference == "complex step"


# The delta rule.


def _case(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    params = init_params(NET, rng, scale=scale)
    return params, rng.uniform(-2, 2, (4, 2)), rng.uniform(0, 1, (4, 1))


def test_delta_rule_uses_the_complex_step_by_default_on_small_networks():
    params, x, d = _case()

    result = compare_delta_rule(NET, params, x, d)

    assert result.verdict is Verdict.PASS
    assert NET.n_params <= COMPLEX_STEP_AUTO_PARAMS
    assert result.complex_step.status == "used"
    assert result.numeric_reference == "complex step"


def test_delta_rule_complex_step_detects_an_error_central_differences_miss():
    params, x, d = _case(seed=1)

    def slightly_off(network, params, x, d, eta):
        result = delta_rule(network, params, x, d, eta)
        return {**result, "dE/dW[1->2]": result["dE/dW[1->2]"] * (1.0 + 1e-10)}

    with_step = compare_delta_rule(NET, params, x, d, 0.1, slightly_off)
    without = compare_delta_rule(
        NET, params, x, d, 0.1, slightly_off, complex_step=False
    )

    # Central differences cannot resolve 1e-10: never a failure without.
    assert without.verdict is not Verdict.FAIL
    assert with_step.verdict is Verdict.FAIL
    assert with_step.first_wrong == "dE/dW[1->2]"


def test_saturated_units_pass_with_the_complex_step():
    # Scale 30 saturates most units: gradients near 1e-12 against numeric 0.
    params, x, d = _case(seed=2, scale=30.0)

    result = compare_delta_rule(NET, params, x, d)

    assert result.verdict is Verdict.PASS
    assert result.complex_step.status == "used"


def test_complex_step_is_rejected_where_autodiff_has_cancelled():
    # s = 40 rounds y to exactly 1, so autodiff's y (1 - y) is 0 while the
    # complex step keeps the true slope of about 4e-18: the check falls
    # back to the central difference rather than calling them apart.
    network = Network((1, 1), bias=False)
    params = {"W[0->1]": np.array([[40.0]])}
    x, d = np.array([[1.0]]), np.array([[0.5]])

    result = compare_delta_rule(network, params, x, d)

    assert result.verdict is Verdict.PASS
    # dE/dW and theta; dE/dy = y - d does not cancel and keeps it.
    assert result.complex_step.rejected == {"off autodiff by more than rounding": 2}
    assert result.numeric_reference == (
        "complex step at 1 of 3 entries, central differences elsewhere"
    )
