# SPDX-License-Identifier: MIT
"""Tell a kink at the point from a kink near it, by one-sided differences.

A central difference across a kink (ReLU at 0, ``abs``, ``max`` at a tie)
averages two different slopes, so finite differences and autodiff disagree
there and a right derivation cannot be confirmed. This module looks again
at the entries whose comparison did not settle, with one-sided
differences, at the default step ``h`` and at ever smaller steps
``h / 4**k``:

* right side: ``F(h) = (f(z + h) - f(z)) / h``; the reported value
  ``2 F(h/2) - F(h)`` (Richardson, the O(h) term cancels) with the error
  estimate ``|F(h/2) - F(h)|`` plus rounding ``10 * noise / h`` (each
  evaluation off by up to ``noise``: ``2 * 2 / (h/2) + 2 / h``);
* left side likewise with ``B(h) = (f(z) - f(z - h)) / h``.

At each level, if the two sides agree within ``SAFETY_FACTOR`` times the
sum of their errors and the central difference's truncation error
(``|D(h/2) - D(h)|``) is no larger than its rounding error, the function is
smooth on ``[z - h, z + h]``: a kink
that lay inside the default step but not at the point (a near-tie of a
``max``) is now outside it, and the central difference at this smaller
step replaces the original one. If the sides still disagree at the finest
level, and each side's value is stable from the previous level to this
one (the same one-sided slope under a four-fold smaller step), the
function has a kink at the point: its left and right derivatives differ.
The finest level is the last one whose rounding error still resolves the
gap between the sides, and at most ``MAX_LEVELS``.

An entry that is neither (the sides disagree but are not stable) stays as
it was: unsettled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gradcheck._numeric import EPS, ULP_FACTOR, _combine

__all__ = ["MAX_LEVELS", "OneSided", "Resolution", "resolve_entries"]

Array = NDArray[np.float64]

# Levels of step, each four times smaller than the last: 4**-11 takes the
# default cbrt(eps) step down to about 1.6e-12, where a float64 loss of
# order one still gives one-sided slopes to about 1e-3.
MAX_LEVELS = 12

# Must match the acceptance band's factor: the sides "disagree" exactly when
# a derivation could not be confirmed against both at once.
SAFETY = 4.0


@dataclass(frozen=True)
class OneSided:
    """Left and right derivatives where a quantity has kinks.

    Attributes:
        kink: per entry, whether the function has a kink there.
        left: the left derivative (NaN where no kink).
        right: the right derivative (NaN where no kink).
        error: the larger of the two sides' error estimates (0 where no
            kink).
    """

    kink: NDArray[np.bool_]
    left: Array
    right: Array
    error: Array

    def reshaped(self, shape: tuple[int, ...]) -> OneSided:
        """Return the same kinks with every array reshaped."""
        return OneSided(
            self.kink.reshape(shape),
            self.left.reshape(shape),
            self.right.reshape(shape),
            self.error.reshape(shape),
        )


@dataclass(frozen=True)
class Resolution:
    """What the one-sided look found, per candidate entry.

    Attributes:
        index: the candidate coordinates of ``z``.
        smooth: the sides agreed at some level: ``value``, ``error`` and
            ``step`` then hold the central difference at that level.
        kink: the sides disagree, stably, down to the finest level.
        value, error, step: the refined central difference (smooth entries).
        left, right, side_error: the one-sided derivatives (kink entries).
        level: the level at which each entry was decided (-1: undecided).
    """

    index: NDArray[np.int64]
    smooth: NDArray[np.bool_]
    kink: NDArray[np.bool_]
    value: Array
    error: Array
    step: Array
    left: Array
    right: Array
    side_error: Array
    level: NDArray[np.int64]


def _evaluate_rows(
    evaluate: Callable[[NDArray[np.int64], Array], Array],
    index: NDArray[np.int64],
    delta: Array,
    chunk: int,
) -> Array:
    """Evaluate rows in fixed-length chunks (padded with zero shifts)."""
    rows = index.size
    chunk = max(1, chunk)
    padded = -(-rows // chunk) * chunk
    index = np.concatenate([index, np.zeros(padded - rows, dtype=np.int64)])
    delta = np.concatenate([delta, np.zeros(padded - rows)])
    values = [
        np.asarray(evaluate(index[i : i + chunk], delta[i : i + chunk]), np.float64)
        for i in range(0, padded, chunk)
    ]
    return np.concatenate(values)[:rows]


def _one_sided(
    f0: float, f_h: Array, f_h2: Array, span_h: Array, span_h2: Array, noise: float
) -> tuple[Array, Array]:
    """Richardson one-sided slope and its error estimate (signed spans)."""
    d1 = (f_h - f0) / span_h
    d2 = (f_h2 - f0) / span_h2
    scale = np.maximum.reduce([np.abs(f_h), np.abs(f_h2), np.full_like(f_h, abs(f0))])
    noise_k = np.maximum(noise, ULP_FACTOR * EPS * scale)
    rounding = 10.0 * noise_k / np.abs(span_h)
    return 2.0 * d2 - d1, np.abs(d2 - d1) + rounding


def resolve_entries(
    evaluate: Callable[[NDArray[np.int64], Array], Array],
    z: Array,
    index: NDArray[np.int64],
    steps: Array,
    noise: float,
    chunk: int = 512,
) -> Resolution:
    """Look at coordinates ``index`` of ``z`` with one-sided differences.

    Args:
        evaluate: ``(index (K,), delta (K,)) -> values (K,)``, the loss at
            ``z + delta[k] * e_index[k]``, as for central differences.
        z: the point, shape ``(P,)``, float64.
        index: the coordinates to look at, shape ``(M,)``.
        steps: the default step of each of those coordinates, ``(M,)``.
        noise: how far one evaluation of the loss may be off.
        chunk: rows per call of ``evaluate``.

    Returns:
        The :class:`Resolution` of every candidate.
    """
    z = np.asarray(z, dtype=np.float64)
    index = np.asarray(index, dtype=np.int64)
    m = index.size
    nan = np.full(m, np.nan)
    res = {
        "smooth": np.zeros(m, bool),
        "kink": np.zeros(m, bool),
        "value": nan.copy(),
        "error": nan.copy(),
        "step": nan.copy(),
        "left": nan.copy(),
        "right": nan.copy(),
        "side_error": np.zeros(m),
        "level": np.full(m, -1, dtype=np.int64),
    }
    if m == 0:
        return Resolution(index=index, **res)
    f0 = float(_evaluate_rows(evaluate, index[:1], np.zeros(1), chunk)[0])
    base = z[index]
    active = np.ones(m, bool)
    # The most accurate one-sided pair seen so far, reported for a kink.
    best = [np.full(m, np.nan), np.full(m, np.nan), np.full(m, np.inf)]
    previous: tuple[Array, Array, Array, Array] | None = None

    for level in range(MAX_LEVELS):
        h = np.asarray(steps, np.float64) / 4.0**level
        # Represented shifts, as the evaluation sees them.
        shifts = [(base + s) - base for s in (h, h / 2.0, -h, -h / 2.0)]
        live = np.flatnonzero(active)
        if live.size == 0:
            break
        rows_index = np.tile(index[live], 4)
        rows_delta = np.concatenate([s[live] for s in shifts])
        f = _evaluate_rows(evaluate, rows_index, rows_delta, chunk).reshape(4, -1)
        sp = [s[live] for s in shifts]

        right, right_err = _one_sided(f0, f[0], f[1], sp[0], sp[1], noise)
        left, left_err = _one_sided(f0, f[2], f[3], sp[2], sp[3], noise)
        gap = np.abs(right - left)
        # Smooth at this scale: the sides agree and the central difference
        # is no longer dominated by its truncation error (a kink inside the
        # step shows as a large change from h to h/2). Keep the central
        # difference at this step.
        value, error = _combine(
            (f[0], f[1]), (f[2], f[3]), (sp[0] - sp[2], sp[1] - sp[3]), noise
        )
        truncation = np.abs(
            (f[1] - f[3]) / (sp[1] - sp[3]) - (f[0] - f[2]) / (sp[0] - sp[2])
        )
        agree = (gap <= SAFETY * (right_err + left_err)) & (
            truncation <= error - truncation
        )
        smooth_now = live[agree]
        res["smooth"][smooth_now] = True
        res["value"][smooth_now] = value[agree]
        res["error"][smooth_now] = error[agree]
        res["step"][smooth_now] = h[smooth_now]
        res["level"][smooth_now] = level
        active[smooth_now] = False

        # Still apart: a kink at the point when each side holds its slope
        # from the previous level, and either this is the last level or
        # the next one could no longer resolve the gap.
        full = np.full(m, np.nan)
        cur = [full.copy() for _ in range(4)]
        for arr, vals in zip(cur, (right, right_err, left, left_err), strict=True):
            arr[live] = vals
        worse = np.fmax(cur[1], cur[3])
        better = active & (worse < best[2])
        best[0][better], best[1][better] = cur[2][better], cur[0][better]
        best[2][better] = worse[better]
        if previous is not None:
            p_right, p_right_err, p_left, p_left_err = previous
            stable = (np.abs(cur[0] - p_right) <= SAFETY * (cur[1] + p_right_err)) & (
                np.abs(cur[2] - p_left) <= SAFETY * (cur[3] + p_left_err)
            )
            floor = max(noise, ULP_FACTOR * EPS * abs(f0))
            next_rounding = 10.0 * floor / (h / 4.0)
            resolvable = np.abs(cur[0] - cur[2]) > SAFETY * 2.0 * next_rounding
            last = level == MAX_LEVELS - 1
            decide = active & stable & (~resolvable | last)
            res["kink"][decide] = True
            res["left"][decide] = best[0][decide]
            res["right"][decide] = best[1][decide]
            res["side_error"][decide] = best[2][decide]
            res["level"][decide] = level
            active &= ~decide
        previous = (cur[0], cur[1], cur[2], cur[3])

    return Resolution(index=index, **res)
