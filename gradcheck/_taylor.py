# SPDX-License-Identifier: MIT
"""The Taylor-remainder test: a second opinion that needs no step size.

Along a direction ``u``, the remainder

    r(h) = |L(p + h u) - L(p) - h <g, u>|

falls like ``h^2`` when ``g`` is the gradient and like ``h`` when it is
not: a wrong gradient leaves the first-order term ``h <g - grad L, u>``
behind. The test evaluates ``r`` on a geometric sequence of ``h``, keeps
the part of the curve well above rounding, and fits the observed order on
its smallest steps, where the asymptotic term dominates.

One direction per quantity (a parameter leaf, a probe, or a weight matrix
of the delta rule): random signed sizes times ``max(1, |p|)`` on that
quantity's entries, zero elsewhere, from a seeded generator so that a check is
repeatable. Autodiff's remainder along the same direction is the
control: a loss whose own curve is not second order (a kink, rounding
everywhere) says nothing about the analytic gradient.

The test is evidence, never a verdict: a gradient off by less than its
band can show first order, and one off only along directions that cancel
can look right. The result's diagnosis says when it contradicts the
per-entry verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gradcheck._numeric import EPS, ULP_FACTOR

__all__ = [
    "TAYLOR_STEPS",
    "TaylorTest",
    "fit_order",
    "taylor_directions",
    "taylor_tests",
    "contradictions",
]

Array = NDArray[np.float64]

# Steps from 1e-1 down to 1e-8 in half decades: for a loss of order one
# the second-order remainder reaches rounding (1e-16) near 1e-8.
TAYLOR_STEPS = tuple(10.0 ** -np.arange(1.0, 8.25, 0.5))

# A point enters the fit when its remainder is this many times the
# rounding floor, so that rounding moves it by a tenth at most.
SIGNAL = 10.0

# Points fitted, the smallest steps above rounding.
FIT_POINTS = 4

# Orders above SECOND read as a right gradient, below FIRST as a wrong one.
SECOND = 1.6
FIRST = 1.4


def fit_order(steps: Array, remainders: Array, floor: Array) -> float | None:
    """Return the slope of ``log r`` against ``log h`` above rounding, or None.

    Only points with ``r > SIGNAL * floor`` count; of those, the
    ``FIT_POINTS`` at the smallest steps are fitted by least squares. Fewer
    than three such points give ``None``.
    """
    keep = np.flatnonzero(remainders > SIGNAL * floor)
    if keep.size < 3:
        return None
    chosen = keep[np.argsort(steps[keep])][:FIT_POINTS]
    x, y = np.log10(steps[chosen]), np.log10(remainders[chosen])
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / (x @ x))


@dataclass(frozen=True)
class TaylorTest:
    """The Taylor remainders of one quantity along one random direction.

    Attributes:
        quantity: the quantity, for example ``dE/dW[0->1]`` or ``layers[0].W``.
        steps: the values of ``h``.
        analytic: ``r(h)`` for the analytic gradient.
        autodiff: ``r(h)`` for autodiff, or empty without autodiff.
        floor: rounding of ``r(h)`` per step: the loss's noise twice, plus
            ``h`` times the gradient's rounding allowance along the direction.
        order_analytic: the observed order for the analytic gradient, or
            ``None`` where too few points lie above rounding.
        order_autodiff: the same for autodiff.
    """

    quantity: str
    steps: tuple[float, ...]
    analytic: tuple[float, ...]
    autodiff: tuple[float, ...]
    floor: tuple[float, ...]
    order_analytic: float | None
    order_autodiff: float | None

    @property
    def finding(self) -> str:
        """Say what the analytic curve shows: second order, first order, or unclear."""
        order = self.order_analytic
        if order is None:
            return "no signal above rounding"
        if order >= SECOND:
            return "second order, as for a right gradient"
        if order <= FIRST:
            return "first order, as for a wrong gradient"
        return "between first and second order"

    @property
    def suggests_wrong(self) -> bool:
        """Whether the analytic curve is first order while the control is not."""
        return (
            self.order_analytic is not None
            and self.order_analytic <= FIRST
            and (self.order_autodiff is None or self.order_autodiff >= SECOND)
        )

    @property
    def suggests_right(self) -> bool:
        """Whether the analytic curve is second order."""
        return self.order_analytic is not None and self.order_analytic >= SECOND

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready copy."""
        return {
            "quantity": self.quantity,
            "steps": list(self.steps),
            "analytic": list(self.analytic),
            "autodiff": list(self.autodiff),
            "floor": list(self.floor),
            "order_analytic": self.order_analytic,
            "order_autodiff": self.order_autodiff,
            "finding": self.finding,
        }


def taylor_directions(z: Array, parts: Sequence[slice], seed: int = 0) -> Array:
    """Return one direction per part, shape ``(len(parts), P)``.

    Random signs times random sizes in [0.5, 1.5] (drawn from one
    generator seeded by ``seed``, part after part), times ``max(1, |z|)``,
    on the part's entries, zero elsewhere. Unequal sizes keep the
    direction off symmetries such as the shift of all logits of a softmax,
    along which the loss is flat.
    """
    directions = np.zeros((len(parts), z.size))
    rng = np.random.default_rng(seed)
    for k, part in enumerate(parts):
        n = part.stop - part.start
        signed = rng.choice([-1.0, 1.0], size=n) * rng.uniform(0.5, 1.5, size=n)
        directions[k, part] = signed * np.maximum(1.0, np.abs(z[part]))
    return directions


def taylor_tests(
    evaluate_points: Callable[[Array], Array],
    z: Array,
    names: Sequence[str],
    parts: Sequence[slice],
    analytic: Sequence[Array],
    autodiff: Array | None,
    allowance: Sequence[Array],
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[TaylorTest, ...]:
    """Run the Taylor-remainder test on every quantity of a flat vector.

    Args:
        evaluate_points: ``(R, P) -> (R,)``, the loss at each row.
        z: the point, shape ``(P,)``.
        names: the quantities' names.
        parts: where each quantity lies in ``z``.
        analytic: each quantity's analytic gradient (any shape of its size).
        autodiff: autodiff over all of ``z``, shape ``(P,)``, or ``None``.
        allowance: per quantity, how far a right gradient may be off per
            entry by rounding alone (the rounding part of its band).
        noise: how far one evaluation of the loss may be off.
        seed: seeds the directions.

    Returns:
        One :class:`TaylorTest` per quantity; quantities whose analytic
        gradient has the wrong size or is not finite are left out.
    """
    steps = np.asarray(TAYLOR_STEPS)
    directions = taylor_directions(z, parts, seed)
    tests = []
    for k, (name, part) in enumerate(zip(names, parts, strict=True)):
        g = np.asarray(analytic[k], dtype=np.float64).ravel()
        if g.size != part.stop - part.start or not np.isfinite(g).all():
            continue
        # One quantity's points at a time, so that memory follows one
        # tensor's steps, not all of them; the unperturbed point comes first
        # in every call, so that every call has the same number of rows.
        points = np.broadcast_to(z, (steps.size + 1, z.size)).copy()
        points[1:, part] += steps[:, None] * directions[k][None, part]
        move = points[1:, part] - z[part]  # as represented
        values = np.asarray(evaluate_points(points), dtype=np.float64)
        loss0, shifted_k = values[0], values[1:]
        step_noise = 2.0 * np.maximum(
            noise, ULP_FACTOR * EPS * np.maximum(abs(loss0), np.abs(shifted_k))
        )
        floor = step_noise + np.abs(move) @ np.asarray(allowance[k]).ravel()
        change = shifted_k - loss0
        r_analytic = np.abs(change - move @ g)
        r_autodiff = None
        if autodiff is not None:
            r_autodiff = np.abs(change - move @ autodiff[part])
        tests.append(
            TaylorTest(
                quantity=name,
                steps=tuple(float(h) for h in steps),
                analytic=tuple(float(r) for r in r_analytic),
                autodiff=() if r_autodiff is None else tuple(map(float, r_autodiff)),
                floor=tuple(float(f) for f in floor),
                order_analytic=fit_order(steps, r_analytic, floor),
                order_autodiff=None
                if r_autodiff is None
                else fit_order(steps, r_autodiff, floor),
            )
        )
    return tuple(tests)


def contradictions(
    tests: Sequence[TaylorTest],
    failed: Sequence[str],
    passed: Sequence[str],
    unsettled: Sequence[str] = (),
) -> str:
    """Say where the Taylor test contradicts the per-entry verdicts, or ``""``.

    Args:
        tests: the Taylor tests of one check.
        failed: quantities the per-entry comparison failed.
        passed: quantities it passed.
        unsettled: quantities it found inconclusive; a first-order
            remainder there is evidence the per-entry check could not give.
    """
    notes = []
    for t in tests:
        if t.quantity in unsettled and t.suggests_wrong:
            notes.append(
                f"the per-entry check could not settle {t.quantity}, but its "
                f"Taylor remainder falls like h^{t.order_analytic:.1f}, the sign "
                "of a first-order error"
            )
        elif t.quantity in passed and t.suggests_wrong:
            control = (
                ""
                if t.order_autodiff is None
                else f", autodiff's like h^{t.order_autodiff:.1f}"
            )
            notes.append(
                f"the Taylor remainder of {t.quantity} falls like "
                f"h^{t.order_analytic:.1f}{control}, the sign of a first-order "
                "error, though every entry passed"
            )
        elif t.quantity in failed and t.suggests_right:
            notes.append(
                f"the Taylor remainder of {t.quantity} falls like "
                f"h^{t.order_analytic:.1f}, as for a right gradient, though "
                "entries failed: the error is too small, or cancels, along "
                "the random direction"
            )
    if not notes:
        return ""
    return "Taylor test disagrees with the per-entry verdict: " + "; ".join(notes)
