# SPDX-License-Identifier: MIT
"""Name the recognisable mistakes behind a wrong gradient.

A hand-derived gradient that is wrong is often wrong in a way that has a
name: it sums over the batch where the loss averages, it has the wrong
sign, it is the transpose of the right matrix, it lacks the derivative of
an activation. :func:`diagnose` compares an ``analytic`` tensor with a
trusted ``reference`` and returns a :class:`Signature` with one sentence
that says so, or ``None`` when no signature fits.

The candidates are tried in this order, and the first that fits wins:

1. the shape: a shape that numpy would broadcast silently
   (``"broadcast-shape"``), the transposed shape of a matrix whose
   transpose matches (``"transpose"``), any other shape (``"shape"``);
2. NaN or inf in ``analytic`` where the reference is finite
   (``"non-finite"``);
3. an ``analytic`` that is identically zero (``"zeros"``);
4. a square matrix whose transpose matches (``"transpose"``);
5. a uniform factor ``analytic = k * reference``: the batch size or its
   inverse (``"batch-mean"``), 2 (``"double"``), 1/2 (``"half"``), -1
   (``"sign"``), any other ``k`` (``"factor"``);
6. a ratio ``analytic / reference`` of one sign and at least 1 in size,
   but not uniform (``"missing-elementwise-factor"``).

Entries where the reference is not finite are left out of every test.
Entries where ``|reference| <= band`` are *uninformative*: they are
indistinguishable from zero, so they say nothing about a ratio and are
left out of every fit, but the fitted explanation must still hold there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gradcheck.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["KINDS", "Signature", "diagnose"]

Array = NDArray[np.float64]
Mask = NDArray[np.bool_]

KINDS = (
    "broadcast-shape",
    "shape",
    "transpose",
    "non-finite",
    "zeros",
    "batch-mean",
    "double",
    "half",
    "sign",
    "factor",
    "missing-elementwise-factor",
    # Named by gradcheck._compare.compare_quantity, not by diagnose: a
    # value computed in a lower precision than the dtype it came in.
    "lower-precision",
)

# Without a band, an explanation must hold to this fraction of max |analytic|:
# far above float64 rounding, far below any mistake of consequence.
RTOL = 1e-6

# A fitted factor within this relative distance of 2, 1/2, -1 or the batch
# size is named after it even where the band is too tight to accept the
# exact value.
FACTOR_RTOL = 1e-6

# A fitted factor this close to 1 is rounding or precision trouble, not a
# wrong constant, and is not named as a factor.
MIN_FACTOR_DEVIATION = 1e-3

# A ratio that varies by less than this much is a noisy uniform factor,
# not a missing elementwise one.
RATIO_SPREAD = 0.01

# One informative entry always fits some factor, so a factor without a name
# needs at least two; 2, 1/2, -1 and the batch size met exactly are
# evidence enough on their own.
MIN_FACTOR_ENTRIES = 2

# With few informative entries, a random gradient has the same sign as the
# reference and a larger size everywhere too often (about 2 * 4**-n for
# independent symmetric entries); four keep that chance below 1 %.
MIN_RATIO_ENTRIES = 4

# A missing elementwise factor is named only when at least this fraction
# of the informative entries lies outside its band.
MIN_MOVED_FRACTION = 0.5

_SIGMOID_PRIME_MAX = 0.25

_TRANSPOSE_CAUSE = (
    "the factors of an outer product are swapped (for example theta.T @ y "
    "instead of y.T @ theta)"
)


@dataclass(frozen=True)
class Signature:
    """A named mistake behind a wrong gradient.

    Attributes:
        kind: a stable identifier, one of :data:`KINDS`.
        message: one sentence for the failure message and the report.
        factor: the fitted uniform factor ``k`` in ``analytic = k *
            reference``, for the factor kinds; ``None`` otherwise.
    """

    kind: str
    message: str
    factor: float | None = None


def diagnose(
    analytic: ArrayLike,
    reference: ArrayLike,
    *,
    band: ArrayLike | None = None,
    batch_size: int | None = None,
) -> Signature | None:
    """Name the most likely mistake behind a wrong tensor, or None.

    Only signatures that explain every entry are named, so a gradient
    that is wrong in no particular way (or right) gives ``None``.

    An explanation ``analytic = c * reference`` holds when, at every entry
    with a finite reference, ``|analytic - c * reference| <= max(1, |c|) *
    band``: the reference's own error is scaled by ``c``. Without a band
    the allowance is ``RTOL * max |analytic|``, the same at every entry.

    Args:
        analytic: the hand-derived tensor, any real array-like, possibly of
            the wrong shape.
        reference: the trusted gradient, a real array.
        band: the acceptance band per entry, non-negative and
            broadcastable to ``reference.shape``; ``None`` when unknown.
            Entries with ``|reference| <= band`` are left out of fits.
        batch_size: the number of examples in the data, when known.
            Factors of ``batch_size`` and ``1 / batch_size`` are named
            ``"batch-mean"`` only when it is larger than 2.

    Returns:
        The signature of the first kind that fits, in the order given in
        the module docstring, or ``None``. NaN or inf in ``analytic`` gives
        kind ``"non-finite"``; zero-size arrays of equal shape give
        ``None``.

    Raises:
        InvalidTypeError: ``analytic``, ``reference`` or ``band`` is not a
            real numeric array (complex values included), or
            ``batch_size`` is not an int.
        InvalidArgumentError: ``band`` is negative, NaN or does not
            broadcast to the reference's shape, or ``batch_size < 1``.
    """
    analytic = _check_real_array(analytic, "analytic")
    reference = _check_real_array(reference, "reference")
    band = _check_band(band, reference.shape)
    batch_size = _check_batch_size(batch_size)

    if analytic.shape != reference.shape:
        return _diagnose_shape(analytic, reference, band)
    if reference.size == 0:
        return None

    # A non-finite reference entry is not the derivation's fault, and says
    # nothing about it; such entries are left out from here on.
    valid = np.isfinite(reference)
    bad = valid & ~np.isfinite(analytic)
    if bad.any():
        return Signature(
            kind="non-finite",
            message=(
                f"the gradient has {int(bad.sum())} non-finite entries (NaN or "
                f"inf) out of {analytic.size} where the reference is finite: "
                "an overflow, a division by zero or the log of zero in the "
                "derivation"
            ),
        )
    informative = valid & (np.abs(reference) > (0.0 if band is None else band))
    if not informative.any():
        return None

    if np.all(analytic[valid] == 0):
        return Signature(
            kind="zeros",
            message=(
                "the gradient is identically zero while the reference is not: "
                "a missing term, a detached branch, or a gradient never "
                "accumulated"
            ),
        )

    if (
        analytic.ndim == 2
        and analytic.shape[0] == analytic.shape[1]
        and _explains(analytic.T, reference, 1.0, band, valid)
        and not _explains(analytic, reference, 1.0, band, valid)
    ):
        return Signature(
            kind="transpose",
            message=(
                "the gradient matches the reference only after transposing "
                f"it, which its square shape {analytic.shape} cannot reveal: "
                f"{_TRANSPOSE_CAUSE}"
            ),
        )

    signature = _diagnose_factor(
        analytic, reference, band, valid, informative, batch_size
    )
    if signature is not None:
        return signature
    return _diagnose_ratio(analytic, reference, band, informative)


def _check_real_array(value: object, name: str) -> Array:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:
        raise InvalidTypeError(
            f"{name} must be a real numeric array, got {name}={value!r}",
            name=name,
            value=value,
        ) from err
    if array.dtype.kind == "c":
        raise InvalidTypeError(
            f"{name} must be real, got a complex array of dtype {array.dtype}; "
            "gradcheck checks real gradients only",
            name=name,
            value=value,
        )
    if array.dtype.kind not in "biuf":
        raise InvalidTypeError(
            f"{name} must be a real numeric array, got dtype {array.dtype} "
            f"from {name}={value!r}",
            name=name,
            value=value,
        )
    return array.astype(np.float64)


def _check_band(band: object, shape: tuple[int, ...]) -> Array | None:
    if band is None:
        return None
    array = _check_real_array(band, "band")
    if np.isnan(array).any() or (array < 0).any():
        raise InvalidArgumentError(
            f"band must be non-negative everywhere, got band={band!r}",
            name="band",
            value=band,
        )
    try:
        return np.broadcast_to(array, shape)
    except ValueError as err:
        raise InvalidArgumentError(
            f"band must broadcast to the reference's shape {shape}, "
            f"got a band of shape {array.shape}",
            name="band",
            value=band,
        ) from err


def _check_batch_size(batch_size: object) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise InvalidTypeError(
            f"batch_size must be an int or None, got batch_size={batch_size!r}",
            name="batch_size",
            value=batch_size,
        )
    if batch_size < 1:
        raise InvalidArgumentError(
            f"batch_size must be at least 1, got batch_size={batch_size!r}",
            name="batch_size",
            value=batch_size,
        )
    return int(batch_size)


def _explains(
    analytic: Array,
    reference: Array,
    factor: float,
    band: Array | None,
    valid: Mask,
) -> bool:
    """Whether ``analytic = factor * reference`` within the allowance everywhere."""
    with np.errstate(over="ignore", invalid="ignore"):
        residual = np.abs(analytic - factor * reference)
    if band is None:
        allowance: Array | float = RTOL * _finite_scale(analytic)
    else:
        allowance = max(1.0, abs(factor)) * band
    return bool(np.all((residual <= allowance)[valid]))


def _finite_scale(array: Array) -> float:
    """Return max |array| over its finite entries, 0 when there are none."""
    finite = array[np.isfinite(array)]
    return float(np.max(np.abs(finite))) if finite.size else 0.0


def _diagnose_shape(analytic: Array, reference: Array, band: Array | None) -> Signature:
    got, expected = analytic.shape, reference.shape
    try:
        broadcast: tuple[int, ...] | None = np.broadcast_shapes(got, expected)
    except ValueError:
        broadcast = None
    valid = np.isfinite(reference)

    # A matrix stored the other way round: the transpose is the fix.
    is_transposed = analytic.ndim == 2 and reference.ndim == 2 and got == expected[::-1]
    if is_transposed and _explains(analytic.T, reference, 1.0, band, valid):
        hidden = (
            "; numpy would also broadcast the two shapes against each other silently"
            if broadcast is not None
            else ""
        )
        return Signature(
            kind="transpose",
            message=(
                f"the gradient has shape {got}, the transpose of the expected "
                f"{expected}, and its transpose matches the reference: "
                f"{_TRANSPOSE_CAUSE}{hidden}"
            ),
        )

    reshaped = ""
    if analytic.size == reference.size and _explains(
        analytic.reshape(expected), reference, 1.0, band, valid
    ):
        reshaped = f"; its values match the reference once reshaped to {expected}"
    if broadcast is not None:
        return Signature(
            kind="broadcast-shape",
            message=(
                f"the gradient has shape {got} where {expected} is expected, and "
                f"numpy would broadcast one against the other to {broadcast} "
                f"silently instead of raising{reshaped}"
            ),
        )
    if is_transposed:
        reshaped = "; it has the transposed shape, but its transpose does not match"
    return Signature(
        kind="shape",
        message=(
            f"the gradient has shape {got} where {expected} is expected, and the "
            f"two shapes do not broadcast{reshaped}"
        ),
    )


def _fit_factor(analytic: Array, reference: Array, informative: Mask) -> float:
    """Least-squares ``k`` in ``analytic = k * reference`` over informative entries."""
    # Scaling by max |reference| first keeps the sums of squares from
    # overflowing or underflowing for gradients far from 1 in size.
    r = reference[informative]
    scale = np.max(np.abs(r))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        r = r / scale
        a = analytic[informative] / scale
        return float(np.dot(a, r) / np.dot(r, r))


def _diagnose_factor(
    analytic: Array,
    reference: Array,
    band: Array | None,
    valid: Mask,
    informative: Mask,
    batch_size: int | None,
) -> Signature | None:
    # A gradient that zero explains too is too small for any factor to be
    # told apart; one that 1 explains is right.
    if _explains(analytic, reference, 0.0, band, valid):
        return None
    if _explains(analytic, reference, 1.0, band, valid):
        return None

    k = _fit_factor(analytic, reference, informative)
    candidates = _named_factors(batch_size)
    for value, kind in candidates:
        if _explains(analytic, reference, value, band, valid):
            fitted = k if np.isfinite(k) else value
            return _factor_signature(kind, fitted, batch_size)

    if int(informative.sum()) < MIN_FACTOR_ENTRIES:
        return None
    if not (np.isfinite(k) and k != 0.0):
        return None
    if not _explains(analytic, reference, k, band, valid):
        return None
    if abs(k - 1.0) <= MIN_FACTOR_DEVIATION:
        return None
    for value, kind in candidates:
        if abs(k - value) <= FACTOR_RTOL * abs(value):
            return _factor_signature(kind, k, batch_size)
    return _factor_signature("factor", k, batch_size)


def _named_factors(batch_size: int | None) -> list[tuple[float, str]]:
    named = [(2.0, "double"), (0.5, "half"), (-1.0, "sign")]
    if batch_size is not None and batch_size > 2:
        named = [
            (float(batch_size), "batch-mean"),
            (1.0 / batch_size, "batch-mean"),
            *named,
        ]
    return named


def _factor_signature(kind: str, k: float, batch_size: int | None) -> Signature:
    fitted = f"(fitted factor {k:.6g})"
    pair_note = ""
    if kind == "batch-mean":
        assert batch_size is not None
        if abs(k) > 1.0:
            message = (
                f"the gradient is {batch_size} times the reference {fitted}, and "
                f"{batch_size} is the batch size: the loss averages over the batch "
                f"but the gradient sums over it (a factor 1/{batch_size} is missing)"
            )
        else:
            message = (
                f"the gradient is 1/{batch_size} of the reference {fitted}, and "
                f"{batch_size} is the batch size: the gradient divides by it once "
                "more than the loss does, as when the loss sums over the batch but "
                "the gradient averages over it, or the mean is taken twice"
            )
    elif kind == "double":
        if batch_size == 2:
            pair_note = (
                ", or the gradient sums over the batch of 2 where the loss averages"
            )
        message = (
            f"the gradient is twice the reference {fitted}: the 1/2 of the loss was "
            "dropped when differentiating, e.g. d/dy of 1/2 (d - y)^2 written as "
            f"2 (y - d) instead of y - d, or a term was added twice{pair_note}"
        )
    elif kind == "half":
        if batch_size == 2:
            pair_note = (
                ", or the gradient averages over the batch of 2 where the loss sums"
            )
        message = (
            f"the gradient is half the reference {fitted}: the derivation assumes "
            "a 1/2 in the loss that the loss does not have, e.g. d/dy of "
            "(d - y)^2 written as y - d instead of 2 (y - d), or one of two equal "
            f"terms is missing{pair_note}"
        )
    elif kind == "sign":
        message = (
            f"the gradient has the opposite sign everywhere {fitted}: a sign "
            "error, e.g. the error taken as y - d where d - y was meant (or the "
            "reverse), or the descent step (minus the gradient) returned in place "
            "of the gradient"
        )
    else:
        flips = ", which also flips its sign" if k < 0 else ""
        message = (
            f"the gradient is off by a uniform factor of {k:.6g}{flips}: a "
            "constant such as a learning rate, the batch size or the 1/2 of the "
            "loss is wrong or misplaced"
        )
    return Signature(kind=kind, message=message, factor=k)


def _diagnose_ratio(
    analytic: Array,
    reference: Array,
    band: Array | None,
    informative: Mask,
) -> Signature | None:
    """Name a missing elementwise factor of size at most 1, or return None."""
    n = int(informative.sum())
    if n < MIN_RATIO_ENTRIES:
        return None
    a = analytic[informative]
    r = reference[informative]
    with np.errstate(over="ignore"):
        ratio = a / r
    if not (np.all(ratio > 0) or np.all(ratio < 0)):
        return None

    # The missing factor has size at most 1, so |analytic| >= |reference|,
    # up to the allowance of each entry.
    if band is None:
        allowance: Array | float = RTOL * _finite_scale(analytic)
    else:
        allowance = band[informative]
    if not np.all(np.abs(a) + allowance >= np.abs(r)):
        return None
    # A missing factor below 1 moves nearly every entry; a few wrong entries
    # among many right ones are a local mistake, not a missing factor.
    if np.count_nonzero(np.abs(a - r) > allowance) < MIN_MOVED_FRACTION * n:
        return None
    size = np.abs(ratio)
    low, high = float(size.min()), float(size.max())
    if high <= low * (1.0 + RATIO_SPREAD):
        return None

    lo, hi = (low, high) if ratio[0] > 0 else (-high, -low)
    flipped = " (with the sign flipped too)" if ratio[0] < 0 else ""
    if low >= (1.0 - RTOL) / _SIGMOID_PRIME_MAX:
        likely = (
            "every ratio is at least 4, as when the sigmoid derivative "
            "y (1 - y) <= 1/4 is left out"
        )
    else:
        likely = (
            "most likely an activation derivative such as sigmoid' = y (1 - y) "
            "<= 1/4 or tanh' = 1 - tanh^2 <= 1"
        )
    return Signature(
        kind="missing-elementwise-factor",
        message=(
            f"the ratio analytic / reference is not uniform but runs from "
            f"{lo:.4g} to {hi:.4g} over the {n} informative entries, never "
            f"below 1 in size: an elementwise factor of size at most 1 is "
            f"missing{flipped}; {likely}"
        ),
    )
