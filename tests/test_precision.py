# SPDX-License-Identifier: MIT
"""Lower precision: float32 and bfloat16 derivations, float64 references."""

from __future__ import annotations

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradcheck import (
    Network,
    Verdict,
    compare_delta_rule,
    compare_gradient,
    delta_rule,
    format_failure,
)
from gradcheck import strategies as gst
from gradcheck._check import compare_delta_rule as _compare_delta_rule
from gradcheck._compare import compare_quantity
from gradcheck._precision import float_eps, is_float_dtype
from gradcheck._references import compute_references

BF16 = ml_dtypes.bfloat16
SMALL_NETS = gst.networks(max_hidden=1, max_width=3)


def in_dtype(dtype):
    """A delta-rule derivation computed entirely in ``dtype``."""

    def derivation(network, params, x, d, eta):
        params = {name: value.astype(dtype) for name, value in params.items()}
        out = delta_rule(network, params, x.astype(dtype), d.astype(dtype), dtype(eta))
        return {name: value.astype(dtype) for name, value in out.items()}

    return derivation


def test_bfloat16_is_a_float_with_its_own_eps():
    assert np.dtype(BF16).kind == "V"
    assert is_float_dtype(BF16)
    assert float_eps(BF16) == 2.0**-7
    assert not is_float_dtype(np.int32)


def _saturated_case():
    # One input, three outputs at net inputs 18, 20 and -19: in float32 the
    # first two outputs round to exactly 1, so y (1 - y) is 0, not 1.5e-8.
    network = Network((1, 3), bias=True)
    params = {"W[0->1]": np.array([[18.0, 20.0, -19.0]]), "b[1]": np.zeros(3)}
    x = np.array([[1.0], [1.0]])
    d = np.array([[0.2, 0.9, 0.4], [0.7, 0.1, 0.3]])
    return network, params, x, d


def test_saturated_float32_derivation_passes():
    network, params, x, d = _saturated_case()

    result = compare_delta_rule(network, params, x, d, 0.1, in_dtype(np.float32))

    assert result.verdict is Verdict.PASS, format_failure(result)
    assert result.quantity("theta[1]").precision == "float32"


@pytest.mark.parametrize("method", ["full", "screen"])
def test_float32_derivation_of_values_below_its_range_passes(method):
    # At a net input of -200 the output and the slope are e^-200 =
    # 1.4e-87, far below the smallest float32 (1.4e-45): a float32
    # derivation returns 0 there, and is right to. Relative bands alone
    # called it wrong.
    network = Network((2, 3, 1), bias=True)
    params = {
        "W[0->1]": np.array([[-100.0, -90.0, 0.5], [-100.0, -110.0, -0.5]]),
        "b[1]": np.zeros(3),
        "W[1->2]": np.array([[3.0], [-2.0], [0.3]]),
        "b[2]": np.array([-200.0]),
    }
    x = np.array([[1.0, 1.0], [0.9, 1.1]])
    d = np.array([[0.3], [0.6]])
    analytic = in_dtype(np.float32)(network, params, x, d, 0.1)
    assert not analytic["dy/ds[2]"].any()
    assert not analytic["dy/ds[1]"][:, :2].any()

    result = compare_delta_rule(
        network, params, x, d, 0.1, in_dtype(np.float32), method=method
    )

    assert result.verdict is Verdict.PASS, format_failure(result)


def test_error_totals_are_the_sums_of_the_bounds():
    from gradcheck._rounding import delta_rule_error_bounds, delta_rule_error_totals

    network = Network((4, 5, 3, 2), skips=((0, 2), (1, 3)), bias=True)
    rng = np.random.default_rng(5)
    params = {n: rng.normal(size=s) for n, s in network.param_shapes().items()}
    x, d = rng.normal(size=(3, 4)), rng.uniform(size=(3, 2))

    bounds = delta_rule_error_bounds(network, params, x, d, 0.3)
    totals = delta_rule_error_totals(network, params, x, d, 0.3)

    assert list(totals) == list(bounds)
    for name, bound in bounds.items():
        assert totals[name] == pytest.approx(float(np.sum(bound)), rel=1e-12), name


def test_saturated_float32_needs_the_error_bound():
    # Without the bound in float32's unit roundoff, scaling the float64
    # allowance by the ratio of epsilons calls the right slope wrong.
    network, params, x, d = _saturated_case()
    analytic = in_dtype(np.float32)(network, params, x, d, 0.1)
    reference = compute_references(network, params, x, d, 0.1)["theta[1]"]

    comparison = compare_quantity("theta[1]", analytic["theta[1]"], reference)

    assert comparison.verdict is Verdict.FAIL


@settings(max_examples=5)
@given(gst.delta_rule_cases(SMALL_NETS))
def test_float32_delta_rule_passes_on_generated_cases(case):
    result = compare_delta_rule(*case.args, derivation=in_dtype(np.float32))

    assert result.verdict is Verdict.PASS, format_failure(result)


@settings(max_examples=4)
@given(gst.delta_rule_cases(SMALL_NETS))
def test_bfloat16_delta_rule_passes_on_generated_cases(case):
    result = compare_delta_rule(*case.args, derivation=in_dtype(BF16))

    assert result.verdict is Verdict.PASS, format_failure(result)
    assert {q.precision for q in result.quantities} == {"bfloat16"}


@pytest.mark.slow
@settings(max_examples=120)
@given(gst.delta_rule_cases())
def test_float32_delta_rule_passes_on_many_generated_cases(case):
    # Deep saturation among them: before the error bound, about 2 in 120
    # failed, with 1 - y rounded to 0 in float32.
    result = compare_delta_rule(*case.args, derivation=in_dtype(np.float32))

    assert result.verdict is Verdict.PASS, format_failure(result)


@pytest.mark.parametrize("name", ["dE/dW[0->1]", "theta[2]"])
def test_float32_delta_rule_with_a_one_percent_mistake_fails(name):
    network = Network((2, 3, 1), bias=True)
    rng = np.random.default_rng(4)
    params = {
        "W[0->1]": rng.normal(size=(2, 3)),
        "b[1]": rng.normal(size=3),
        "W[1->2]": rng.normal(size=(3, 1)),
        "b[2]": rng.normal(size=1),
    }
    x, d = rng.normal(size=(4, 2)), rng.uniform(size=(4, 1))

    def wrong(network, params, x, d, eta):
        out = in_dtype(np.float32)(network, params, x, d, eta)
        value = out[name].copy()
        k = int(np.argmax(np.abs(value)))
        value.flat[k] *= np.float32(1.01)
        return out | {name: value}

    result = _compare_delta_rule(network, params, x, d, 0.1, wrong)

    assert result.verdict is Verdict.FAIL
    assert result.first_wrong == name


# A general gradient: a small tanh MLP, in float32 or bfloat16 throughout.


def mlp_loss(params, x, t):
    h = jnp.tanh(x @ params["W1"] + params["b1"])
    return 0.5 * jnp.sum((h @ params["W2"] - t) ** 2)


def mlp_grad(params, x, t):
    p = {k: jnp.asarray(v) for k, v in params.items()}
    x, t = jnp.asarray(x), jnp.asarray(t)
    h = jnp.tanh(x @ p["W1"] + p["b1"])
    r = h @ p["W2"] - t
    dh = (r @ p["W2"].T) * (1 - h**2)
    return {"W1": x.T @ dh, "b1": dh.sum(0), "W2": h.T @ r}


def _finite(shape):
    return hnp.arrays(
        np.float64, shape, elements=st.floats(-2, 2, allow_subnormal=False)
    )


mlp_cases = st.tuples(
    _finite((3, 4)), _finite((4,)), _finite((4, 2)), _finite((5, 3)), _finite((5, 2))
)


@pytest.mark.parametrize("dtype", [np.float32, BF16], ids=["float32", "bfloat16"])
@settings(max_examples=10)
@given(arrays=mlp_cases)
def test_lower_precision_general_gradient_passes_on_generated_cases(dtype, arrays):
    w1, b1, w2, x, t = (a.astype(dtype) for a in arrays)
    params = {"W1": w1, "b1": b1, "W2": w2}

    result = compare_gradient(mlp_loss, mlp_grad, params, x, t)

    assert result.verdict is Verdict.PASS, format_failure(result)
    assert {q.precision for q in result.quantities} == {np.dtype(dtype).name}


def test_float32_general_gradient_with_a_one_percent_mistake_fails():
    rng = np.random.default_rng(3)
    params = {
        "W1": rng.normal(size=(3, 4)).astype(np.float32),
        "b1": rng.normal(size=4).astype(np.float32),
        "W2": rng.normal(size=(4, 2)).astype(np.float32),
    }
    x = rng.normal(size=(5, 3)).astype(np.float32)
    t = rng.normal(size=(5, 2)).astype(np.float32)

    def wrong(params, x, t):
        g = mlp_grad(params, x, t)
        return g | {"W2": g["W2"].at[1, 0].multiply(1.01)}

    result = compare_gradient(mlp_loss, wrong, params, x, t)

    assert result.verdict is Verdict.FAIL
    assert result.first_wrong == "W2"
    assert result.quantity("W2").n_mismatched == 1


def computed_in(dtype, returned):
    """A derivation computed in ``dtype`` whose arrays come back as ``returned``."""

    def derivation(network, params, x, d, eta):
        out = in_dtype(dtype)(network, params, x, d, eta)
        return {name: value.astype(returned) for name, value in out.items()}

    return derivation


@pytest.mark.parametrize(
    ("computed", "returned"),
    [(BF16, np.float32), (np.float32, np.float64)],
    ids=["bfloat16-as-float32", "float32-as-float64"],
)
def test_a_value_returned_wider_than_computed_fails_and_says_so(computed, returned):
    network = Network((3, 5, 2), skips=((0, 2),), bias=True)
    rng = np.random.default_rng(0)
    params = {
        name: rng.normal(size=shape) for name, shape in network.param_shapes().items()
    }
    x, d = rng.normal(size=(4, 3)), rng.uniform(size=(4, 2))

    result = compare_delta_rule(
        network, params, x, d, 0.1, derivation=computed_in(computed, returned)
    )

    # Held to the rounding of the dtype it came back in, it is wrong there;
    # the signature names the likely cause.
    assert result.verdict is Verdict.FAIL
    failing = [q for q in result.quantities if q.verdict is Verdict.FAIL]
    kinds = {q.signature.kind for q in failing if q.signature is not None}
    assert kinds == {"lower-precision"}
    first = result.quantity(result.first_wrong)
    assert first.signature is not None
    assert np.dtype(computed).name in first.signature.message
    assert "lower-precision" not in {
        q.signature.kind
        for q in result.quantities
        if q.verdict is Verdict.PASS and q.signature is not None
    }


def test_a_one_percent_mistake_is_not_called_a_lower_precision():
    # A float32 value 1% off fits the loose band of a bfloat16 computation,
    # but its entries are no bfloat16 numbers, so no such signature.
    network = Network((2, 3, 1), bias=True)
    rng = np.random.default_rng(4)
    params = {
        name: rng.normal(size=shape) for name, shape in network.param_shapes().items()
    }
    x, d = rng.normal(size=(4, 2)), rng.uniform(size=(4, 1))

    def wrong(network, params, x, d, eta):
        out = in_dtype(np.float32)(network, params, x, d, eta)
        value = out["dE/dW[0->1]"] * np.float32(1.01)
        return out | {"dE/dW[0->1]": value}

    result = compare_delta_rule(network, params, x, d, 0.1, derivation=wrong)

    assert result.first_wrong == "dE/dW[0->1]"
    signature = result.quantity("dE/dW[0->1]").signature
    assert signature is None or signature.kind != "lower-precision"
