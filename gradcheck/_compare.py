# SPDX-License-Identifier: MIT
"""Acceptance bands, per-entry triage and verdicts.

Each entry of a named quantity has three values: ``analytic`` (the
derivation under test), ``numeric`` (finite differences) and ``autodiff``
(JAX). The acceptance band of an entry is::

    band = SAFETY_FACTOR * (numeric error estimate
                            + rounding of the entry
                            + ROUNDING_FACTOR * eps * max |autodiff| over the quantity)

The first term is how far the finite-difference reference itself may be
off. The second is how far the entry moves when every input moves by a few
ulps (see :mod:`gradcheck._references`): no float64 computation of it, the
analytic one included, can be held closer than that. The third floors the
band at the scale of the quantity, for entries near zero (saturated units,
where a relative error means nothing).

Then, per entry:

* ``|numeric - autodiff| > band``: the references disagree, so the entry
  is *unsettled*: numerical trouble, never blamed on the derivation;
* otherwise ``|analytic - autodiff| > band``: the entry is *mismatched*:
  both references agree and the derivation does not.

* otherwise, if autodiff exists and ``|analytic - autodiff|`` exceeds the
  rounding part of the band alone, the entry is *unresolved*: a right
  derivation follows autodiff to rounding, so the difference is real, but
  finite differences cannot confirm autodiff that closely (a gradient far
  below the resolution of the loss). Unresolved entries count as
  unsettled: never a pass, never a failure.

For a general gradient, entries that did not settle are looked at again
with one-sided differences (see :mod:`gradcheck._kinks`). Where the loss
has a kink at the point (its left and right derivatives differ), the entry
is judged by a subgradient check instead: an analytic value between the
left and right derivatives, within the band, is *not differentiable*
there (a valid subgradient, never called a wrong derivation); a value
outside them is mismatched.

A quantity fails if any entry is mismatched; otherwise it is inconclusive
if any entry is unsettled; otherwise it is not differentiable if any entry
sits at a kink; otherwise it passes. The same order combines quantities
into a check: fail, inconclusive, not-differentiable, pass. A kink ranks
below inconclusive because the derivation was confirmed at every entry a
kink did not excuse, and an unsettled entry confirmed nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
from numpy.typing import NDArray

from gradcheck._kinks import OneSided
from gradcheck._numeric import EPS, ROUNDING_FACTOR, NumericEstimate
from gradcheck._precision import dtype_name, float_eps, float_tiny, is_float_dtype
from gradcheck._signatures import Signature, diagnose

__all__ = [
    "Reference",
    "Verdict",
    "Discrepancy",
    "QuantityComparison",
    "SAFETY_FACTOR",
    "compare_quantity",
    "combine_verdicts",
    "entry_name",
]

Array = NDArray[np.float64]

# The error estimate is an estimate, not a bound; a factor of 4 keeps the
# chance that a right derivation falls outside it negligible while leaving
# the band far below any mistake of consequence.
SAFETY_FACTOR = 4.0

DEFAULT_WORST = 5

# The precisions a derivation may compute in before it returns its arrays
# in a wider dtype, coarsest first: bfloat16 numbers are float16 numbers
# too, mostly, so the coarsest precision that holds every entry names it
# (see `_lower_precision`).
LOWER_PRECISIONS = tuple(
    np.dtype(t) for t in (ml_dtypes.bfloat16, np.float16, np.float32)
)


@dataclass(frozen=True)
class Reference:
    """The two references for one named quantity.

    Attributes:
        numeric: the finite-difference estimate and its error estimate.
        autodiff: the JAX autodiff value, or ``None`` when the loss could
            not be traced; the analytic value is then judged against the
            numeric one alone.
        rounding: how far the quantity moves when every input moves by a
            few ulps, per entry: the accuracy any float64 computation of it,
            the analytic one included, can be held to.
    """

    numeric: NumericEstimate
    autodiff: Array | None
    rounding: Array | float = 0.0


class Verdict(enum.StrEnum):
    """The outcome of a check or of one quantity."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    # The loss has a kink at the point and the analytic value is a valid
    # subgradient there; everything else agreed.
    NOT_DIFFERENTIABLE = "not-differentiable"


def combine_verdicts(verdicts: list[Verdict]) -> Verdict:
    """Return the most severe verdict: fail, inconclusive, not-differentiable, pass."""
    for verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.NOT_DIFFERENTIABLE):
        if verdict in verdicts:
            return verdict
    return Verdict.PASS


def entry_name(quantity: str, index: tuple[int, ...]) -> str:
    """Name one entry, for example ``W[1->2]`` and ``(3, 0)`` give ``W[1->2][3,0]``."""
    return f"{quantity}[{','.join(str(i) for i in index)}]"


@dataclass(frozen=True)
class Discrepancy:
    """One entry's three values and its band.

    Attributes:
        name: the entry, for example ``theta[2][0,1]``.
        analytic: the derivation's value (NaN if it gave none).
        numeric: the finite-difference value.
        autodiff: the JAX value; NaN when autodiff was skipped.
        band: the acceptance band of this entry.
        left: the left derivative where the loss has a kink here, else NaN.
        right: the right derivative where the loss has a kink here, else NaN.
    """

    name: str
    analytic: float
    numeric: float
    autodiff: float
    band: float
    left: float = float("nan")
    right: float = float("nan")

    @property
    def is_kink(self) -> bool:
        """Whether the loss has a kink at this entry."""
        return not np.isnan(self.left)

    @property
    def abs_discrepancy(self) -> float:
        """``|analytic - autodiff|``."""
        return abs(self.analytic - self.autodiff)

    @property
    def reference_gap(self) -> float:
        """``|numeric - autodiff|``, how far the references are apart."""
        return abs(self.numeric - self.autodiff)

    def to_dict(self) -> dict[str, float | str]:
        """Return a JSON-ready copy."""
        return {
            "name": self.name,
            "analytic": self.analytic,
            "numeric": self.numeric,
            "autodiff": self.autodiff,
            "band": self.band,
            "abs_discrepancy": self.abs_discrepancy,
        } | (
            {"kink": True, "left": self.left, "right": self.right}
            if self.is_kink
            else {}
        )


@dataclass(frozen=True)
class QuantityComparison:
    """The comparison of one named quantity.

    Attributes:
        name: the quantity, for example ``dE/dW[0->1]``.
        verdict: pass, fail or inconclusive.
        shape: the expected shape.
        n_mismatched: entries where the references agree and the analytic
            value lies outside the band.
        n_unsettled: entries where the two references disagree, or where the
            analytic value is off autodiff by more than rounding but by less
            than finite differences can resolve.
        max_abs_discrepancy: largest ``|analytic - autodiff|``.
        max_rel_discrepancy: largest ``|analytic - autodiff| / max(|autodiff|,
            band)``; the band floors the denominator so that entries near
            zero do not blow up.
        max_reference_gap: largest ``|numeric - autodiff|``.
        max_band: the widest band of any entry.
        max_band_ratio: largest ``|analytic - autodiff| / band``; below 1
            everywhere means the derivation is inside its band.
        max_reference_ratio: largest ``|numeric - autodiff| / band``; above
            1 means the references disagree.
        worst: the entries furthest outside (or nearest to) their band,
            worst first.
        note: why the quantity failed without a usable comparison (for
            example a wrong shape), or empty.
        signature: the recognised shape of the mistake (a uniform factor, a
            transpose, ...) when the quantity failed, or ``None``.
        precision: the dtype the analytic value came in; a lower precision
            than float64 widens its band by the ratio of the epsilons.
        n_not_differentiable: entries where the loss has a kink and the
            analytic value is a valid subgradient.
    """

    name: str
    verdict: Verdict
    shape: tuple[int, ...]
    n_mismatched: int
    n_unsettled: int
    max_abs_discrepancy: float
    max_rel_discrepancy: float
    max_reference_gap: float
    max_band: float
    max_band_ratio: float
    max_reference_ratio: float
    worst: tuple[Discrepancy, ...] = field(default=())
    note: str = ""
    signature: Signature | None = None
    precision: str = "float64"
    n_not_differentiable: int = 0

    @property
    def size(self) -> int:
        """Number of entries."""
        return int(np.prod(self.shape))

    @property
    def kind(self) -> str:
        """The quantity without its layer, for example ``dE/dW`` or ``theta``."""
        return self.name.split("[", 1)[0]

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready copy."""
        return {
            "name": self.name,
            "verdict": str(self.verdict),
            "shape": list(self.shape),
            "n_mismatched": self.n_mismatched,
            "n_unsettled": self.n_unsettled,
            "n_not_differentiable": self.n_not_differentiable,
            "max_abs_discrepancy": self.max_abs_discrepancy,
            "max_rel_discrepancy": self.max_rel_discrepancy,
            "max_reference_gap": self.max_reference_gap,
            "max_band": self.max_band,
            "max_band_ratio": self.max_band_ratio,
            "max_reference_ratio": self.max_reference_ratio,
            "worst": [w.to_dict() for w in self.worst],
            "note": self.note,
            "precision": self.precision,
            "signature": None
            if self.signature is None
            else {
                "kind": self.signature.kind,
                "message": self.signature.message,
                "factor": self.signature.factor,
            },
        }


def _ratio(amount: Array, band: Array) -> Array:
    """Return ``amount / band``: 0 for 0 / 0, inf for x / 0 and for NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(amount == 0, 0.0, amount / band)
    return np.where(np.isnan(ratio), np.inf, ratio)


def compare_quantity(
    name: str,
    analytic: object,
    reference: Reference,
    n_worst: int = DEFAULT_WORST,
    batch_size: int | None = None,
    kinks: OneSided | None = None,
    error_bound: Array | None = None,
) -> QuantityComparison:
    """Compare one analytic quantity with its two references.

    Args:
        name: the quantity's name, used for entry names.
        analytic: the derivation's array for it.
        reference: its numeric and autodiff references.
        n_worst: how many of the worst entries to keep.
        batch_size: examples in the data, when known, so that a factor of
            the batch size can be named.
        kinks: where the loss has a kink, its left and right derivatives,
            shaped like the quantity; those entries get a subgradient check.
        error_bound: per entry, a first-order bound on the error of a
            computation of the quantity with unit roundoff ``u``, in units
            of ``u`` (see :mod:`gradcheck._rounding`). For an analytic value
            in a lower precision than float64, ``SAFETY_FACTOR`` times its
            dtype's ``u = eps / 2`` times this bound joins the band: it
            covers cancellation between terms much larger than their result.

    Returns:
        The comparison, with a verdict as the module docstring defines.
    """
    numeric = reference.numeric.value
    # Without autodiff, the numeric value stands in for it and the
    # references cannot disagree.
    autodiff = numeric if reference.autodiff is None else reference.autodiff
    shape = tuple(autodiff.shape)

    scale = float(np.max(np.abs(autodiff), initial=0.0))
    band = SAFETY_FACTOR * (
        reference.numeric.error + reference.rounding + ROUNDING_FACTOR * EPS * scale
    )
    gap = np.abs(numeric - autodiff)
    unsettled = ~(gap <= band)

    # An analytic value computed in lower precision is held to its own
    # precision: the rounding allowance, measured as the move under a few
    # float64 ulps, grows with the ratio of the epsilons.
    analytic = given = np.asarray(analytic)
    precision = (
        analytic.dtype if is_float_dtype(analytic.dtype) else np.dtype(np.float64)
    )
    eps_ratio = float_eps(precision) / EPS
    analytic = analytic.astype(np.float64)
    reference_band = band
    # How closely a right analytic value follows autodiff: both are float64
    # (or lower precision) computations of the same derivative.
    rounding_band = (
        SAFETY_FACTOR * eps_ratio * (reference.rounding + ROUNDING_FACTOR * EPS * scale)
    )
    if eps_ratio > 1.0 and error_bound is not None:
        # The bound covers every rounding of the lower-precision computation,
        # of its inputs and of entries near zero included, so the float64
        # allowances stay as they are: scaled up, the move under 16 ulps
        # and the floor of 64 ulps would be 12 % and half the scale in
        # bfloat16.
        rounding_band = SAFETY_FACTOR * (
            reference.rounding
            + ROUNDING_FACTOR * EPS * scale
            + 0.5 * float_eps(precision) * np.asarray(error_bound, dtype=np.float64)
        )
    if eps_ratio > 1.0:
        # Below its smallest normal number a lower precision keeps no
        # relative accuracy: a right value of 1e-73 is 0 in float32.
        rounding_band = rounding_band + SAFETY_FACTOR * float_tiny(precision)
        band = (
            band
            + rounding_band
            - SAFETY_FACTOR * (reference.rounding + ROUNDING_FACTOR * EPS * scale)
        )
    if analytic.shape != shape:
        # Broadcasting could hide this, so it is a failure of its own.
        return QuantityComparison(
            name=name,
            verdict=Verdict.FAIL,
            shape=shape,
            n_mismatched=int(np.prod(shape)),
            n_unsettled=int(unsettled.sum()),
            max_abs_discrepancy=float("inf"),
            max_rel_discrepancy=float("inf"),
            max_reference_gap=float(gap.max(initial=0.0)),
            max_band=float(band.max(initial=0.0)),
            max_band_ratio=float("inf"),
            max_reference_ratio=float(np.max(_ratio(gap, reference_band), initial=0.0)),
            precision=precision.name,
            note=f"the derivation returned shape {analytic.shape}, expected {shape}",
            signature=diagnose(analytic, autodiff, band=band, batch_size=batch_size),
        )

    diff = np.abs(analytic - autodiff)
    # NaN in the analytic value never passes: `diff <= band` is False.
    mismatched = ~unsettled & ~(diff <= band)
    # Off autodiff by more than rounding, yet inside what finite differences
    # can confirm: a real difference that the numeric reference cannot
    # settle (a gradient far below the loss's resolution). Never a pass.
    unresolved = np.zeros_like(mismatched)
    if reference.autodiff is not None:
        unresolved = ~unsettled & ~mismatched & ~(diff <= rounding_band)
    # At a kink, the central difference and autodiff mean nothing; the
    # analytic value must lie between the one-sided derivatives, within
    # their error and the analytic value's own rounding.
    at_kink = np.zeros_like(mismatched)
    not_differentiable = np.zeros_like(mismatched)
    kink_band = band
    if kinks is not None and kinks.kink.any():
        at_kink = kinks.kink
        # Rounding measured by perturbation crosses the kink and means
        # nothing there; the analytic value's own rounding is its floor.
        side_scale = np.maximum(scale, np.fmax(np.abs(kinks.left), np.abs(kinks.right)))
        kink_floor = SAFETY_FACTOR * eps_ratio * ROUNDING_FACTOR * EPS * side_scale
        kink_band = np.where(at_kink, SAFETY_FACTOR * kinks.error + kink_floor, band)
        low = np.fmin(kinks.left, kinks.right) - kink_band
        high = np.fmax(kinks.left, kinks.right) + kink_band
        inside = (analytic >= low) & (analytic <= high)
        not_differentiable = at_kink & inside
        mismatched = (mismatched & ~at_kink) | (at_kink & ~inside)
        unsettled = unsettled & ~at_kink
        unresolved = unresolved & ~at_kink
        band = kink_band
    note = ""
    if unresolved.any():
        note = (
            f"{int(unresolved.sum())} entries differ from autodiff by more than "
            "rounding but less than finite differences can resolve here; "
            "check at a larger scale of parameters or loss"
        )
    if not_differentiable.any():
        n_kinks = int(not_differentiable.sum())
        note = (note + "; " if note else "") + (
            f"{_count(n_kinks, 'entry sits', 'entries sit')} at a kink of the loss "
            "(left and right derivatives differ); the analytic value is a "
            "valid subgradient there"
        )
    if mismatched.any():
        verdict = Verdict.FAIL
    elif unsettled.any() or unresolved.any():
        verdict = Verdict.INCONCLUSIVE
    elif not_differentiable.any():
        verdict = Verdict.NOT_DIFFERENTIABLE
    else:
        verdict = Verdict.PASS

    # Rank entries by how far outside their band they lie; unsettled
    # entries by the reference gap, since that is what went wrong there.
    severity = np.where(unsettled, _ratio(gap, reference_band), _ratio(diff, band))
    if at_kink.any():
        # Distance outside the interval of subgradients, in bands.
        outside = np.maximum(
            np.fmin(kinks.left, kinks.right) - analytic,  # type: ignore[union-attr]
            analytic - np.fmax(kinks.left, kinks.right),  # type: ignore[union-attr]
        )
        severity = np.where(
            at_kink, _ratio(np.maximum(outside, 0.0), kink_band), severity
        )
    order = np.argsort(-severity, axis=None, kind="stable")[:n_worst]
    worst = tuple(
        Discrepancy(
            name=entry_name(name, idx),
            analytic=float(analytic[idx]),
            numeric=float(numeric[idx]),
            autodiff=(
                float("nan") if reference.autodiff is None else float(autodiff[idx])
            ),
            band=float(band[idx]),
            left=float(kinks.left[idx]) if at_kink[idx] else float("nan"),  # type: ignore[union-attr]
            right=float(kinks.right[idx]) if at_kink[idx] else float("nan"),  # type: ignore[union-attr]
        )
        for idx in (tuple(int(i) for i in np.unravel_index(k, shape)) for k in order)
    )

    rel = _ratio(diff, np.maximum(np.abs(autodiff), band))
    return QuantityComparison(
        name=name,
        verdict=verdict,
        shape=shape,
        n_mismatched=int(mismatched.sum()),
        n_unsettled=int((unsettled | unresolved).sum()),
        max_abs_discrepancy=float(np.max(diff, initial=0.0)),
        max_rel_discrepancy=float(np.max(rel, initial=0.0)),
        max_reference_gap=float(gap.max(initial=0.0)),
        max_band=float(band.max(initial=0.0)),
        max_band_ratio=float(
            np.max(np.where(at_kink, severity, _ratio(diff, band)), initial=0.0)
        ),
        max_reference_ratio=float(np.max(_ratio(gap, reference_band), initial=0.0)),
        precision=precision.name,
        n_not_differentiable=int(not_differentiable.sum()),
        worst=worst,
        note=note,
        signature=(
            (
                _lower_precision(name, given, reference, batch_size, kinks, error_bound)
                or diagnose(analytic, autodiff, band=band, batch_size=batch_size)
            )
            if verdict is Verdict.FAIL
            else None
        ),
    )


def _lower_precision(
    name: str,
    given: NDArray,
    reference: Reference,
    batch_size: int | None,
    kinks: OneSided | None,
    error_bound: Array | None,
) -> Signature | None:
    """Name a value computed in a lower precision than the dtype it came in.

    A derivation that computes in bfloat16 and returns float32 is held to
    float32's rounding, and fails. Such a value gives itself away: every
    entry is a bfloat16 number, though the true values are not. It is
    named when that holds for a lower precision and the value, taken in
    that precision, passes.
    """
    dtype = given.dtype if is_float_dtype(given.dtype) else np.dtype(np.float64)
    truth = (
        reference.numeric.value if reference.autodiff is None else reference.autodiff
    )
    finite = np.isfinite(truth) & (truth != 0)
    for lower in LOWER_PRECISIONS:
        if float_eps(lower) <= float_eps(dtype):
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            narrowed = given.astype(lower)
            is_lower = narrowed.astype(dtype) == given
            truth_is_lower = truth.astype(lower).astype(np.float64) == truth
        # Numbers such as 0.5 are in every precision and tell nothing.
        if not (is_lower.all() and (finite & ~truth_is_lower).any()):
            continue
        again = compare_quantity(
            name,
            narrowed,
            reference,
            batch_size=batch_size,
            kinks=kinks,
            error_bound=error_bound,
        )
        if again.verdict is Verdict.PASS:
            low, high = dtype_name(lower), dtype_name(dtype)
            return Signature(
                "lower-precision",
                f"every entry is a {low} number and within {low} rounding of "
                f"the true value: it looks computed in {low} and returned as "
                f"{high}, which holds it to {high} rounding; return it as {low}",
            )
    return None


def _count(n: int, one: str, many: str) -> str:
    """Return ``"1 entry"`` or ``"3 entries"``."""
    return f"{n} {one if n == 1 else many}"
