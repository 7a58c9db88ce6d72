# SPDX-License-Identifier: MIT
"""Step-size sweeps: the error of a central difference against its step.

As the step ``h`` shrinks, a central difference's truncation error falls
like ``h^2`` and its rounding error grows like ``noise / h``, so its error
against the exact derivative traces a V on a log-log plot, with its
bottom near ``cbrt(eps)``. Plotting that V for the worst entries of a
check shows at a glance whether the chosen step sat at the bottom, and
whether the analytic value lies on the floor of the V (right, to the
accuracy finite differences can reach) or above it (a wrong value shows
as a flat line at the size of its error, where autodiff's V goes on down).

For each check the sweep covers its worst entries: up to
``MAX_SWEPT`` outside their band (by ``|analytic - autodiff|`` or
``|numeric - autodiff|`` over the band), or the single worst entry of a
passing check. Each entry costs two evaluations per step, all in one
vectorised call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gradcheck._compare import Discrepancy, QuantityComparison

__all__ = ["MAX_SWEPT", "SWEEP_STEPS", "StepSweep", "sweep_entry", "worst_entries"]

Array = NDArray[np.float64]

# Relative steps from 1e-1 down to 1e-13 in half decades.
SWEEP_STEPS = tuple(10.0 ** -np.arange(1.0, 13.25, 0.5))

# Entries swept per check outside their band; a passing check gets one.
MAX_SWEPT = 3


@dataclass(frozen=True)
class StepSweep:
    """The central difference of one entry at many steps.

    Attributes:
        entry: the entry, for example ``theta[2][0,1]``.
        steps: the relative steps; the absolute step is
            ``step * max(1, |z|)`` with ``z`` the coordinate shifted.
        numeric: the central difference at each step.
        vs_autodiff: ``|numeric - autodiff|`` per step (NaN without
            autodiff).
        vs_analytic: ``|numeric - analytic|`` per step.
        analytic: the analytic value.
        autodiff: the autodiff value (NaN without autodiff).
        band: the entry's acceptance band.
    """

    entry: str
    steps: tuple[float, ...]
    numeric: tuple[float, ...]
    vs_autodiff: tuple[float, ...]
    vs_analytic: tuple[float, ...]
    analytic: float
    autodiff: float
    band: float

    @property
    def best_step(self) -> float:
        """The relative step with the smallest error against autodiff."""
        errors = np.asarray(self.vs_autodiff)
        if np.isnan(errors).all():
            errors = np.asarray(self.vs_analytic)
        return float(self.steps[int(np.nanargmin(errors))])

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready copy."""
        return {
            "entry": self.entry,
            "steps": list(self.steps),
            "numeric": list(self.numeric),
            "vs_autodiff": list(self.vs_autodiff),
            "vs_analytic": list(self.vs_analytic),
            "analytic": self.analytic,
            "autodiff": self.autodiff,
            "band": self.band,
            "best_step": self.best_step,
        }


def _severity(w: Discrepancy) -> float:
    reference = w.numeric if np.isnan(w.autodiff) else w.autodiff
    gap = max(abs(w.analytic - reference), abs(w.numeric - reference))
    if w.band > 0:
        return gap / w.band
    return 0.0 if gap == 0 else float("inf")


def worst_entries(
    quantities: Sequence[QuantityComparison],
    sweepable: Callable[[str], bool] = lambda name: True,
) -> list[tuple[QuantityComparison, Discrepancy, tuple[int, ...]]]:
    """Pick the entries to sweep: the worst outside their band, or the worst one.

    Only quantities for which ``sweepable(name)`` holds are considered;
    quantities with a wrong shape and entries at a kink (where a central
    difference means nothing) are left out. Returns each entry's quantity,
    its discrepancy and its index.
    """
    candidates = []
    for q in quantities:
        if not sweepable(q.name) or q.note.startswith("the derivation returned"):
            continue
        for w in q.worst:
            if w.is_kink or not np.isfinite(w.analytic):
                continue
            inner = w.name[len(q.name) + 1 : -1]
            index = tuple(int(i) for i in inner.split(",")) if inner else ()
            candidates.append((_severity(w), q, w, index))
    candidates.sort(key=lambda c: -c[0])
    outside = [c for c in candidates if c[0] > 1.0][:MAX_SWEPT]
    chosen = outside or candidates[:1]
    return [(q, w, index) for _, q, w, index in chosen]


def sweep_entry(
    evaluate: Callable[[Array], Array],
    z: float,
    entry: Discrepancy,
    scale: float = 1.0,
) -> StepSweep:
    """Sweep the central difference of one entry over ``SWEEP_STEPS``.

    Args:
        evaluate: ``(R,) shifts -> (R,)``, the function at ``z + shift``
            along the entry's coordinate.
        z: the coordinate's value.
        entry: the entry's discrepancy (analytic, autodiff, band).
        scale: the factor between the derivative and the quantity (for
            example ``-1`` for ``theta = -dE/ds``, ``-eta`` for an update).
    """
    rel = np.asarray(SWEEP_STEPS)
    h = rel * max(1.0, abs(z))
    plus, minus = (z + h) - z, (z - h) - z  # as represented
    values = np.asarray(evaluate(np.concatenate([plus, minus])), dtype=np.float64)
    f_plus, f_minus = values[: rel.size], values[rel.size :]
    numeric = scale * (f_plus - f_minus) / (plus - minus)
    return StepSweep(
        entry=entry.name,
        steps=tuple(float(s) for s in rel),
        numeric=tuple(float(v) for v in numeric),
        vs_autodiff=tuple(float(v) for v in np.abs(numeric - entry.autodiff)),
        vs_analytic=tuple(float(v) for v in np.abs(numeric - entry.analytic)),
        analytic=float(entry.analytic),
        autodiff=float(entry.autodiff),
        band=float(entry.band),
    )
