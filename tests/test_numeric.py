# SPDX-License-Identifier: MIT
"""Central finite differences checked against closed-form derivatives."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from gradcheck import GradcheckError
from gradcheck._numeric import (
    EPS,
    NumericEstimate,
    central_differences,
    default_steps,
    elementwise_central_differences,
)

CBRT_EPS = EPS ** (1.0 / 3.0)


def _shifted(f, z: np.ndarray, calls: list | None = None):
    """Build ``evaluate_shifted`` for a function ``f`` of a ``(K, P)`` batch."""

    def evaluate_shifted(index: np.ndarray, delta: np.ndarray) -> np.ndarray:
        if calls is not None:
            calls.append(len(index))
        points = np.tile(z, (len(index), 1))
        points[np.arange(len(index)), index] += delta
        return f(points)

    return evaluate_shifted


def _sum_sin(points: np.ndarray) -> np.ndarray:
    return np.sin(points).sum(axis=1)


def _sigmoid(s: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def test_central_differences_of_sum_of_sin_is_cos_within_its_error_estimate():
    # On (0, pi) every sin(z) is positive, so the sum has no cancellation
    # and is known to a few ulps of its own size, as the rounding term of
    # the error estimate assumes (a sum of squared errors is the same).
    z = np.linspace(0.1, 3.0, 13)

    estimate = central_differences(_shifted(_sum_sin, z), z, default_steps(z))

    actual_error = np.abs(estimate.value - np.cos(z))
    assert estimate.value.shape == z.shape
    assert (actual_error <= estimate.error).all()
    # The estimate is honest but not uselessly loose.
    assert (estimate.error < 1e-6).all()


def test_central_differences_error_estimate_covers_a_coarse_step():
    z = np.linspace(0.1, 3.0, 13)

    fine = central_differences(_shifted(_sum_sin, z), z, default_steps(z))
    coarse = central_differences(_shifted(_sum_sin, z), z, default_steps(z, 0.05))

    # With a coarse step truncation dominates; the estimate grows with it
    # and still covers the actual error.
    assert (np.abs(coarse.value - np.cos(z)) <= coarse.error).all()
    assert coarse.error.max() > 100 * fine.error.max()


def test_central_differences_at_large_magnitude_uses_relative_steps():
    z = np.array([1.0e4, -2.5e4, 7.0e4])
    steps = default_steps(z)

    estimate = central_differences(
        _shifted(lambda p: np.log(np.abs(p)).sum(axis=1), z), z, steps
    )

    assert_allclose(steps, CBRT_EPS * np.abs(z), rtol=1e-15)
    assert_allclose(estimate.step, steps, rtol=0.0)
    exact = 1.0 / z
    assert (np.abs(estimate.value - exact) <= estimate.error).all()
    assert_allclose(estimate.value, exact, rtol=1e-8)


def test_default_steps_are_absolute_below_magnitude_one():
    z = np.array([0.0, 0.5, -1.0, 3.0, -1e6])

    steps = default_steps(z, rel_step=1e-4)

    assert_allclose(steps, [1e-4, 1e-4, 1e-4, 3e-4, 100.0], rtol=1e-15)


def test_central_differences_differentiates_each_trailing_output():
    z = np.array([-1.0, 0.25, 2.0])

    def two_outputs(points: np.ndarray) -> np.ndarray:
        return np.stack([np.sin(points).sum(axis=1), (points**3).sum(axis=1)], -1)

    estimate = central_differences(_shifted(two_outputs, z), z, default_steps(z))

    exact = np.stack([np.cos(z), 3.0 * z**2], axis=-1)
    assert estimate.value.shape == (3, 2)
    assert estimate.error.shape == (3, 2)
    assert estimate.step.shape == (3, 2)
    assert (np.abs(estimate.value - exact) <= estimate.error).all()


def test_central_differences_calls_in_fixed_length_chunks():
    z = np.linspace(-1.0, 1.0, 5)
    calls: list[int] = []

    chunked = central_differences(
        _shifted(_sum_sin, z, calls), z, default_steps(z), chunk=3
    )
    whole = central_differences(_shifted(_sum_sin, z), z, default_steps(z))

    # 4 perturbed points per coordinate, 20 rows, padded to 7 chunks of 3.
    assert calls == [3] * 7
    assert_allclose(chunked.value, whole.value, rtol=0.0, atol=0.0)


def test_elementwise_central_differences_of_sigmoid_is_its_slope():
    s = np.linspace(-20.0, 20.0, 41)
    slope = _sigmoid(s) * _sigmoid(-s)

    estimate = elementwise_central_differences(_sigmoid, s, default_steps(s))

    assert estimate.value.shape == s.shape
    assert (np.abs(estimate.value - slope) <= estimate.error).all()
    # Near sigma = 1 the values are known to an ulp of 1, not of the slope.
    assert_allclose(estimate.value, slope, rtol=1e-6, atol=1e-9)


def test_elementwise_central_differences_keeps_the_shape():
    s = np.array([[-1.0, 0.0], [2.0, 30.0]])

    estimate = elementwise_central_differences(np.tanh, s, default_steps(s))

    assert estimate.value.shape == (2, 2)
    assert estimate.error.shape == (2, 2)
    assert (np.abs(estimate.value - 1.0 / np.cosh(s) ** 2) <= estimate.error).all()


@pytest.mark.parametrize(
    "f",
    [
        pytest.param(lambda p: (3.0 * p).sum(axis=1), id="linear"),
        pytest.param(_sum_sin, id="sin"),
        pytest.param(lambda p: (p**2).sum(axis=1), id="quadratic"),
    ],
)
def test_central_differences_error_estimate_is_positive(f):
    # A linear or quadratic function has no truncation error, so the two
    # steps agree; the rounding term must still keep the estimate positive.
    z = np.array([-2.0, 0.5, 1.0])

    estimate = central_differences(_shifted(f, z), z, default_steps(z))

    assert (estimate.error > 0).all()


def test_elementwise_error_estimate_is_positive():
    s = np.array([-40.0, -5.0, 0.0, 5.0, 40.0])

    estimate = elementwise_central_differences(_sigmoid, s, default_steps(s))

    assert (estimate.error > 0).all()


def test_numeric_estimate_scaled_keeps_error_positive():
    estimate = NumericEstimate(
        value=np.array([1.0, -2.0]), error=np.array([1e-9, 2e-9]), step=np.ones(2)
    )

    scaled = estimate.scaled(-0.5)

    assert_allclose(scaled.value, [-0.5, 1.0])
    assert_allclose(scaled.error, [5e-10, 1e-9])
    assert_allclose(scaled.step, estimate.step)


@pytest.mark.parametrize(
    ("rel_step", "builtin", "pattern"),
    [
        pytest.param(0.0, ValueError, r"got rel_step=0\.0$", id="zero"),
        pytest.param(-1e-3, ValueError, r"got rel_step=-0\.001$", id="negative"),
        pytest.param(float("nan"), ValueError, r"got rel_step=nan$", id="nan"),
        pytest.param(float("inf"), ValueError, r"got rel_step=inf$", id="inf"),
        pytest.param("1e-3", TypeError, r"got rel_step='1e-3'$", id="string"),
        pytest.param(True, TypeError, r"got rel_step=True$", id="bool"),
    ],
)
def test_default_steps_rejects_bad_rel_step(rel_step, builtin, pattern):
    z = np.zeros(3)

    with pytest.raises(builtin, match=pattern) as info:
        default_steps(z, rel_step)

    assert isinstance(info.value, GradcheckError)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([1e-5, 0.0, 1e-5], id="zero"),
        pytest.param([1e-5, -1e-5, 1e-5], id="negative"),
        pytest.param([1e-5, np.nan, 1e-5], id="nan"),
    ],
)
def test_central_differences_rejects_non_positive_steps(steps):
    z = np.zeros(3)

    with pytest.raises(
        ValueError, match="every finite-difference step must be positive"
    ) as info:
        central_differences(_shifted(_sum_sin, z), z, np.array(steps))

    assert isinstance(info.value, GradcheckError)
