# SPDX-License-Identifier: MIT
"""Bug signatures named by diagnose, on the gradients of a small MLP.

The network has 4 inputs, 3 hidden and 3 output sigmoid units, and a
batch of 5 examples; the loss is the batch mean of 1/2 sum (d - y)^2. The
wrong gradients are the usual mistakes of a hand derivation, made on
purpose in numpy.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from gradcheck._signatures import KINDS, Signature, diagnose
from gradcheck.errors import InvalidArgumentError, InvalidTypeError

# Any numpy warning (a division by zero, an overflow) is a bug in diagnose.
pytestmark = pytest.mark.filterwarnings("error")

BATCH = 5


def _sigmoid(s: np.ndarray) -> np.ndarray:
    # The textbook formula on purpose: a saturated unit gives y = 1.0 and
    # y (1 - y) = 0.0 exactly, as in a hand derivation.
    return 1.0 / (1.0 + np.exp(-s))


def _mlp(seed: int = 0, gain: float = 1.0) -> SimpleNamespace:
    """Forward and backward pass of the MLP, with the right gradients.

    ``theta`` is ``-dE/ds`` per layer, as in the delta rule; ``gain``
    scales the weights, so a large gain saturates units.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (BATCH, 4))
    d = rng.uniform(0.0, 1.0, (BATCH, 3))
    w1 = gain * rng.normal(0.0, 1.0, (4, 3))
    w2 = gain * rng.normal(0.0, 1.0, (3, 3))

    y1 = _sigmoid(x @ w1)
    y2 = _sigmoid(y1 @ w2)

    dE_dy2 = -(d - y2) / BATCH
    theta2 = (d - y2) * y2 * (1.0 - y2) / BATCH
    theta1 = y1 * (1.0 - y1) * (theta2 @ w2.T)
    return SimpleNamespace(
        x=x,
        d=d,
        y1=y1,
        y2=y2,
        dE_dy2=dE_dy2,
        theta2=theta2,
        theta1=theta1,
        dE_dW1=-(x.T @ theta1),
        dE_dW2=-(y1.T @ theta2),
        dE_db1=-theta1.sum(axis=0),
    )


NET = _mlp()


def _with_entries(array: np.ndarray, **values: float) -> np.ndarray:
    """Return a copy with entries set, ``e0_0=nan`` setting entry ``[0, 0]``."""
    wrong = array.copy()
    for name, value in values.items():
        wrong[tuple(int(i) for i in name[1:].split("_"))] = value
    return wrong


FACTOR = r"\(fitted factor {}\)"
TRANSPOSE_CAUSE = r"theta\.T @ y instead of y\.T @ theta"
ZEROS = (
    "the gradient is identically zero while the reference is not: a missing "
    "term, a detached branch, or a gradient never accumulated"
)

# (id, analytic, reference, keyword arguments, kind, factor, message patterns)
SIGNATURE_CASES = [
    (
        "bias-column-broadcasts",
        NET.dE_db1[:, None],
        NET.dE_db1,
        {},
        "broadcast-shape",
        None,
        [
            r"^the gradient has shape \(3, 1\) where \(3,\) is expected",
            r"numpy would broadcast one against the other to \(3, 3\) silently",
            r"its values match the reference once reshaped to \(3,\)$",
        ],
    ),
    (
        "bias-keepdims-broadcasts",
        -NET.theta1.sum(axis=0, keepdims=True),
        NET.dE_db1,
        {},
        "broadcast-shape",
        None,
        [r"shape \(1, 3\) where \(3,\) is expected", r"to \(1, 3\) silently"],
    ),
    (
        "row-against-matrix-broadcasts",
        NET.dE_dW2[:1],
        NET.dE_dW2,
        {},
        "broadcast-shape",
        None,
        [r"shape \(1, 3\) where \(3, 3\) is expected", r"to \(3, 3\) silently"],
    ),
    (
        "theta-returned-as-weight-gradient",
        -NET.theta1,
        NET.dE_dW1,
        {},
        "shape",
        None,
        [
            r"^the gradient has shape \(5, 3\) where \(4, 3\) is expected, "
            r"and the two shapes do not broadcast$"
        ],
    ),
    (
        "transposed-shape-wrong-values",
        np.ones((3, 4)),
        NET.dE_dW1,
        {},
        "shape",
        None,
        [r"transposed shape, but its transpose does not match$"],
    ),
    (
        "outer-product-swapped-non-square",
        -(NET.theta1.T @ NET.x),
        NET.dE_dW1,
        {},
        "transpose",
        None,
        [
            r"^the gradient has shape \(3, 4\), the transpose of the expected "
            r"\(4, 3\), and its transpose matches the reference",
            TRANSPOSE_CAUSE,
        ],
    ),
    (
        "outer-product-swapped-square",
        -(NET.theta2.T @ NET.y1),
        NET.dE_dW2,
        {"batch_size": BATCH},
        "transpose",
        None,
        [r"only after transposing it", r"square shape \(3, 3\)", TRANSPOSE_CAUSE],
    ),
    (
        "nan-and-inf",
        _with_entries(NET.dE_dW1, e0_0=np.nan, e1_2=-np.inf),
        NET.dE_dW1,
        {},
        "non-finite",
        None,
        [r"^the gradient has 2 non-finite entries \(NaN or inf\) out of 12 "],
    ),
    (
        "detached-branch",
        np.zeros_like(NET.dE_dW1),
        NET.dE_dW1,
        {"batch_size": BATCH},
        "zeros",
        None,
        [f"^{re.escape(ZEROS)}$"],
    ),
    (
        "sum-where-loss-averages",
        BATCH * NET.dE_dW1,
        NET.dE_dW1,
        {"batch_size": BATCH},
        "batch-mean",
        5.0,
        [
            r"^the gradient is 5 times the reference " + FACTOR.format(5),
            r"5 is the batch size: the loss averages over the batch but the "
            r"gradient sums over it \(a factor 1/5 is missing\)$",
        ],
    ),
    (
        "mean-taken-twice",
        NET.dE_dW1 / BATCH,
        NET.dE_dW1,
        {"batch_size": BATCH},
        "batch-mean",
        0.2,
        [
            r"^the gradient is 1/5 of the reference " + FACTOR.format(0.2),
            r"5 is the batch size: the gradient divides by it once more than the "
            r"loss does, as when the loss sums over the batch but the gradient "
            r"averages over it, or the mean is taken twice$",
        ],
    ),
    (
        "half-of-loss-forgotten",
        2.0 * (NET.y2 - NET.d) / BATCH,
        NET.dE_dy2,
        {"batch_size": BATCH},
        "double",
        2.0,
        [
            r"^the gradient is twice the reference " + FACTOR.format(2),
            r"the 1/2 of the loss was dropped when differentiating",
            r"1/2 \(d - y\)\^2 written as 2 \(y - d\) instead of y - d",
        ],
    ),
    (
        "half-of-loss-assumed",
        (NET.y2 - NET.d) / BATCH,
        2.0 * NET.dE_dy2,
        {"batch_size": BATCH},
        "half",
        0.5,
        [
            r"^the gradient is half the reference " + FACTOR.format(0.5),
            r"assumes a 1/2 in the loss that the loss does not have",
        ],
    ),
    (
        "batch-of-two-double",
        2.0 * NET.dE_dy2[:2],
        NET.dE_dy2[:2],
        {"batch_size": 2},
        "double",
        2.0,
        [r"or the gradient sums over the batch of 2 where the loss averages$"],
    ),
    (
        "error-sign-flipped",
        (NET.d - NET.y2) / BATCH,
        NET.dE_dy2,
        {"batch_size": BATCH},
        "sign",
        -1.0,
        [
            r"^the gradient has the opposite sign everywhere " + FACTOR.format(-1),
            r"the error taken as y - d where d - y was meant",
        ],
    ),
    (
        "update-returned-as-gradient",
        -0.1 * NET.dE_dW1,
        NET.dE_dW1,
        {"batch_size": BATCH},
        "factor",
        -0.1,
        [
            r"^the gradient is off by a uniform factor of -0\.1, which also "
            r"flips its sign: a constant such as a learning rate"
        ],
    ),
    (
        "batch-size-unknown",
        BATCH * NET.dE_dW1,
        NET.dE_dW1,
        {},
        "factor",
        5.0,
        [r"^the gradient is off by a uniform factor of 5: "],
    ),
    (
        "sigmoid-derivative-missing",
        (NET.d - NET.y2) / BATCH,
        NET.theta2,
        {"batch_size": BATCH},
        "missing-elementwise-factor",
        None,
        [
            r"^the ratio analytic / reference is not uniform but runs from "
            r"\d+(\.\d+)? to \d+(\.\d+)? over the 15 informative entries",
            r"an elementwise factor of size at most 1 is missing; ",
            r"every ratio is at least 4, as when the sigmoid derivative "
            r"y \(1 - y\) <= 1/4 is left out$",
        ],
    ),
    (
        "sigmoid-derivative-missing-and-sign",
        (NET.y2 - NET.d) / BATCH,
        NET.theta2,
        {},
        "missing-elementwise-factor",
        None,
        [r"runs from -\d+\.?\d* to -\d", r"missing \(with the sign flipped too\)"],
    ),
    (
        "tanh-derivative-missing",
        NET.d - np.tanh(NET.x[:, :3]),
        (NET.d - np.tanh(NET.x[:, :3])) * (1.0 - np.tanh(NET.x[:, :3]) ** 2),
        {},
        "missing-elementwise-factor",
        None,
        [r"runs from 1\.\d+ to", r"tanh' = 1 - tanh\^2 <= 1$"],
    ),
]


@pytest.mark.parametrize(
    ("analytic", "reference", "kwargs", "kind", "factor", "patterns"),
    [pytest.param(*case[1:], id=case[0]) for case in SIGNATURE_CASES],
)
def test_diagnose_names_signature(analytic, reference, kwargs, kind, factor, patterns):
    signature = diagnose(analytic, reference, **kwargs)

    assert isinstance(signature, Signature)
    assert signature.kind == kind
    for pattern in patterns:
        assert re.search(pattern, signature.message), (pattern, signature.message)
    if factor is None:
        assert signature.factor is None
    else:
        assert signature.factor == pytest.approx(factor, rel=1e-12)


def test_signature_cases_cover_every_kind():
    # compare_quantity names a lower precision itself (see test_precision).
    assert {case[4] for case in SIGNATURE_CASES} == set(KINDS) - {"lower-precision"}


def test_messages_are_one_line():
    for _, analytic, reference, kwargs, *_ in SIGNATURE_CASES:
        message = diagnose(analytic, reference, **kwargs).message
        assert "\n" not in message
        assert message.isascii()


# (id, analytic, reference, keyword arguments): nothing to name.
RNG = np.random.default_rng(1)
NO_SIGNATURE_CASES = [
    ("right", NET.dE_dW1, NET.dE_dW1, {}),
    ("right-within-rounding", NET.dE_dW1 * (1 + 1e-13), NET.dE_dW1, {}),
    ("random-1", RNG.normal(size=(4, 3)), NET.dE_dW1, {"batch_size": BATCH}),
    ("random-2", RNG.normal(size=(4, 3)), NET.dE_dW1, {}),
    ("random-3", RNG.normal(size=(5, 3)), NET.theta2, {}),
    (
        "random-same-sign",
        RNG.uniform(0.0, 2.0 * np.abs(NET.theta2).max(), (5, 3)),
        np.abs(NET.theta2),
        {},
    ),
    (
        "ten-percent-noise",
        NET.dE_dW1 * (1 + 0.1 * RNG.normal(size=(4, 3))),
        NET.dE_dW1,
        {},
    ),
    ("hidden-delta-for-output", NET.theta1, NET.theta2, {"batch_size": BATCH}),
    ("zero-size", np.zeros((0, 3)), np.zeros((0, 3)), {}),
    ("scalar-off-by-some-factor", 1.37, 1.0, {}),
    ("too-few-entries-for-a-ratio", [4.0, 9.0, 5.0], [1.0, 2.0, 1.0], {}),
    (
        "indistinguishable-from-zero",
        np.full((4, 3), 1e-9),
        NET.dE_dW1,
        {"band": 1e-8},
    ),
    ("reference-all-inside-band", NET.dE_dW1, np.full((4, 3), 1e-9), {"band": 1e-8}),
    (
        # One entry 5% too large is a local slip, not a missing slope.
        "one-entry-five-percent-high",
        NET.dE_dW1 * np.where(np.arange(12).reshape(4, 3) == 5, 1.05, 1.0),
        NET.dE_dW1,
        {"band": 1e-12 * np.abs(NET.dE_dW1).max()},
    ),
]


@pytest.mark.parametrize(
    ("analytic", "reference", "kwargs"),
    [pytest.param(*case[1:], id=case[0]) for case in NO_SIGNATURE_CASES],
)
def test_diagnose_names_nothing(analytic, reference, kwargs):
    assert diagnose(analytic, reference, **kwargs) is None


def test_scalar_doubled_is_named():
    assert diagnose(2.0, 1.0).kind == "double"


@pytest.mark.parametrize("seed", range(20))
def test_random_wrong_gradients_have_no_signature(seed):
    rng = np.random.default_rng(100 + seed)
    net = _mlp(seed)
    analytic = rng.normal(0.0, np.abs(net.dE_dW1).max(), net.dE_dW1.shape)

    assert diagnose(analytic, net.dE_dW1, batch_size=BATCH) is None


class TestSymmetricSquare:
    """A symmetric reference cannot tell a transpose from the right matrix."""

    reference = NET.dE_dW2 + NET.dE_dW2.T

    def test_transpose_of_symmetric_is_right(self):
        assert diagnose(self.reference.T, self.reference) is None

    def test_doubled_transpose_is_a_factor_not_a_transpose(self):
        signature = diagnose(2.0 * self.reference.T, self.reference)

        assert signature.kind == "double"

    def test_random_is_not_a_transpose(self):
        analytic = np.random.default_rng(3).normal(size=(3, 3))

        assert diagnose(analytic, self.reference) is None


class TestBand:
    """Entries inside the band say nothing about a ratio."""

    # A finite-difference band, on a gradient scaled to 1.
    band = 1e-4
    reference = NET.dE_dW1 / np.abs(NET.dE_dW1).max()
    reference[0, :] = [3e-5, -5e-5, 0.0]
    # Doubled, except in the uninformative first row, where the noise
    # stays inside twice the band but breaks every ratio.
    analytic = 2.0 * reference
    analytic[0, :] = [-9e-5, 8e-5, 1.5e-4]

    def test_entries_inside_band_are_ignored(self):
        signature = diagnose(self.analytic, self.reference, band=self.band)

        assert signature.kind == "double"
        assert signature.factor == pytest.approx(2.0, rel=1e-12)

    def test_without_band_the_noise_counts(self):
        assert diagnose(self.analytic, self.reference) is None

    def test_per_entry_band_broadcasts(self):
        band = np.full((1, 3), self.band)

        assert diagnose(self.analytic, self.reference, band=band).kind == "double"

    def test_factor_must_hold_inside_band_too(self):
        analytic = self.analytic.copy()
        analytic[0, 0] = 1.0

        assert diagnose(analytic, self.reference, band=self.band) is None

    def test_band_scales_with_factor(self):
        # The reference is off by up to the band; times 5 so is the fit.
        noisy = self.reference + 0.9 * self.band
        analytic = 5.0 * self.reference

        signature = diagnose(analytic, noisy, band=self.band, batch_size=BATCH)

        assert signature.kind == "batch-mean"


class TestSaturated:
    """Saturated units give a reference with many exact zeros."""

    net = _mlp(seed=2, gain=40.0)

    def test_reference_has_many_exact_zeros(self):
        assert np.count_nonzero(self.net.theta2 == 0.0) >= 5

    def test_sign_flip_with_zeros(self):
        signature = diagnose(-self.net.theta2, self.net.theta2)

        assert signature.kind == "sign"

    def test_missing_derivative_with_zeros(self):
        analytic = (self.net.d - self.net.y2) / BATCH
        informative = np.count_nonzero(self.net.theta2)

        signature = diagnose(analytic, self.net.theta2)

        assert signature.kind == "missing-elementwise-factor"
        assert f"over the {informative} informative entries" in signature.message

    def test_random_against_zeros(self):
        analytic = np.random.default_rng(5).normal(size=self.net.theta2.shape)

        assert diagnose(analytic, self.net.theta2) is None


def test_non_finite_reference_entries_are_left_out():
    reference = _with_entries(NET.dE_dW1, e0_0=np.nan)
    analytic = _with_entries(-NET.dE_dW1, e0_0=np.inf)

    assert diagnose(analytic, reference).kind == "sign"


def test_tiny_and_huge_gradients_fit_without_overflow():
    assert diagnose(3e-300 * NET.dE_dW1, 1e-300 * NET.dE_dW1).factor == pytest.approx(
        3.0
    )
    assert diagnose(-1e300 * NET.dE_dW1, 1e300 * NET.dE_dW1).kind == "sign"


def test_shape_precedes_values():
    signature = diagnose(np.zeros((3, 1)), NET.dE_db1)

    assert signature.kind == "broadcast-shape"
    assert "reshaped" not in signature.message


def test_accepts_array_likes():
    signature = diagnose([[2.0, 4.0], [6.0, 8.0]], np.array([[1.0, 2.0], [3.0, 4.0]]))

    assert signature.kind == "double"


# (id, call, error, message pattern)
INVALID_CASES = [
    (
        "complex-analytic",
        lambda: diagnose(NET.dE_dW1 + 1j, NET.dE_dW1),
        InvalidTypeError,
        r"^analytic must be real, got a complex array of dtype complex128",
    ),
    (
        "complex-reference",
        lambda: diagnose(NET.dE_dW1, NET.dE_dW1.astype(np.complex64)),
        InvalidTypeError,
        r"^reference must be real, got a complex array of dtype complex64",
    ),
    (
        "string-analytic",
        lambda: diagnose(["a", "b"], np.ones(2)),
        InvalidTypeError,
        r"^analytic must be a real numeric array, got dtype <U1",
    ),
    (
        "ragged-analytic",
        lambda: diagnose([[1.0], [1.0, 2.0]], np.ones(2)),
        InvalidTypeError,
        r"^analytic must be a real numeric array, got analytic=\[\[1\.0\]",
    ),
    (
        "negative-band",
        lambda: diagnose(NET.dE_dW1, NET.dE_dW1, band=-1e-8),
        InvalidArgumentError,
        r"^band must be non-negative everywhere, got band=-1e-08$",
    ),
    (
        "nan-band",
        lambda: diagnose(NET.dE_dW1, NET.dE_dW1, band=np.nan),
        InvalidArgumentError,
        r"^band must be non-negative everywhere, got band=nan$",
    ),
    (
        "band-shape",
        lambda: diagnose(NET.dE_dW1, NET.dE_dW1, band=np.ones(4)),
        InvalidArgumentError,
        r"^band must broadcast to the reference's shape \(4, 3\), "
        r"got a band of shape \(4,\)$",
    ),
    (
        "batch-size-zero",
        lambda: diagnose(NET.dE_dW1, NET.dE_dW1, batch_size=0),
        InvalidArgumentError,
        r"^batch_size must be at least 1, got batch_size=0$",
    ),
    (
        "batch-size-float",
        lambda: diagnose(NET.dE_dW1, NET.dE_dW1, batch_size=5.0),
        InvalidTypeError,
        r"^batch_size must be an int or None, got batch_size=5\.0$",
    ),
    (
        "batch-size-bool",
        lambda: diagnose(NET.dE_dW1, NET.dE_dW1, batch_size=True),
        InvalidTypeError,
        r"^batch_size must be an int or None, got batch_size=True$",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [pytest.param(*case[1:], id=case[0]) for case in INVALID_CASES],
)
def test_diagnose_rejects_invalid_arguments(call, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        call()

    assert info.value.name in {"analytic", "reference", "band", "batch_size"}
