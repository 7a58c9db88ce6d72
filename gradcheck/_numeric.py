# SPDX-License-Identifier: MIT
"""Central finite differences that carry their own error estimate.

Every derivative is estimated twice, with a step ``h`` and with ``h / 2``.
The two central differences ``D(h)`` and ``D(h/2)`` give

* the reported value, by Richardson extrapolation:
  ``D(h/2) + (D(h/2) - D(h)) / 3``, whose truncation error is O(h^4);
* an error estimate ``|D(h/2) - D(h)|``, which is about three quarters of
  the O(h^2) truncation error of ``D(h)`` and so bounds that of the
  extrapolated value, plus a rounding term ``4 * noise / h``: if each
  evaluation of f is off by up to ``noise``, the extrapolated difference is
  off by at most ``3 * noise / h``.

``noise`` is how far one evaluation of f may be from the exact value. The
caller estimates it (see :mod:`gradcheck._references`, which perturbs every
input by a few ulps and watches f move); it is never taken below
``ULP_FACTOR * eps * |f|``, since f is at best known to the last few bits.

The step is ``cbrt(eps) * max(1, |z|)``, the classic balance between the
truncation error (falling like h^2) and the rounding error (growing like
1/h) of a central difference, scaled to the entry's magnitude. The
denominator is the difference of the two perturbed points as actually
represented, not ``2 h``, so that the step's own rounding does not count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gradcheck.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "JITTER",
    "NumericEstimate",
    "PERTURBATION_TRIALS",
    "ROUNDING_FACTOR",
    "ULP_FACTOR",
    "ShiftedRows",
    "default_steps",
    "central_differences",
    "combine_elementwise",
    "elementwise_central_differences",
    "elementwise_points",
    "nudge",
]

Array = NDArray[np.float64]

EPS = float(np.finfo(np.float64).eps)

# The least rounding noise assumed for one evaluation of f, in ulps of |f|:
# the result is rounded once, and a few operations before it each add about
# half an ulp. A measured noise level replaces it when larger.
ULP_FACTOR = 8.0

# Rounding error of a quantity computed from the same inputs, in ulps of
# the quantity's largest entry: the floor of every acceptance band.
ROUNDING_FACTOR = 64.0

# Rounding is estimated by re-evaluating with every input moved by up to
# PERTURBATION_ULPS ulps, PERTURBATION_TRIALS times (see _references).
PERTURBATION_TRIALS = 6
PERTURBATION_ULPS = 16.0
JITTER = PERTURBATION_ULPS * EPS

# Rows of perturbed points evaluated per call, which bounds memory.
DEFAULT_CHUNK = 1024


@dataclass(frozen=True)
class NumericEstimate:
    """A finite-difference derivative with its error estimate.

    Attributes:
        value: the Richardson-extrapolated central difference.
        error: an estimate of ``|value - true derivative|``, per entry.
        step: the larger of the two steps used, per entry.
    """

    value: Array
    error: Array
    step: Array

    def scaled(self, factor: float) -> NumericEstimate:
        """Return the estimate of ``factor`` times the derivative."""
        return NumericEstimate(
            value=factor * self.value,
            error=abs(factor) * self.error,
            step=self.step,
        )

    def reshaped(self, shape: tuple[int, ...]) -> NumericEstimate:
        """Return the same estimate with every array reshaped."""
        return NumericEstimate(
            self.value.reshape(shape),
            self.error.reshape(shape),
            self.step.reshape(shape),
        )


def nudge(a: Array, rng: np.random.Generator) -> Array:
    """Return ``a`` with each entry moved by up to ``JITTER`` of its size.

    The moves are uniform in [-1, 1] and independent per entry: unlike
    random signs, they cannot cancel exactly between equal terms of a sum.
    """
    return a * (1.0 + JITTER * rng.uniform(-1.0, 1.0, np.shape(a)))


def default_steps(z: Array, rel_step: float | None = None) -> Array:
    """Return the default step per entry, ``rel_step * max(1, |z|)``.

    Args:
        z: the point, any shape.
        rel_step: the step relative to ``max(1, |z|)``; ``cbrt(eps)`` of
            float64 when omitted.

    Raises:
        InvalidArgumentError: ``rel_step`` is not a positive finite number.
    """
    if rel_step is None:
        rel_step = EPS ** (1.0 / 3.0)
    _check_step(rel_step)
    return rel_step * np.maximum(1.0, np.abs(z))


def _check_step(rel_step: float) -> None:
    if isinstance(rel_step, bool) or not isinstance(rel_step, (int, float)):
        raise InvalidTypeError(
            f"the finite-difference step must be a float, got rel_step={rel_step!r}",
            name="rel_step",
            value=rel_step,
        )
    if not (np.isfinite(rel_step) and rel_step > 0):
        raise InvalidArgumentError(
            "the finite-difference step must be a positive float, "
            f"got rel_step={rel_step!r}",
            name="rel_step",
            value=rel_step,
        )


def _combine(
    f_plus: tuple[Array, Array],
    f_minus: tuple[Array, Array],
    span: tuple[Array, Array],
    noise: Array | float = 0.0,
) -> tuple[Array, Array]:
    """Combine the central differences at steps h and h/2.

    Args:
        f_plus: ``f(z + h)`` and ``f(z + h/2)``.
        f_minus: ``f(z - h)`` and ``f(z - h/2)``.
        span: the represented distances ``(z + h) - (z - h)`` and the same
            for h/2; broadcastable against the values.
        noise: how far one evaluation of f may be off, broadcastable.

    Returns:
        ``(value, error)``.
    """
    d1 = (f_plus[0] - f_minus[0]) / span[0]
    d2 = (f_plus[1] - f_minus[1]) / span[1]
    value = d2 + (d2 - d1) / 3.0
    scale = np.maximum.reduce([np.abs(f) for f in (*f_plus, *f_minus)])
    noise = np.maximum(noise, ULP_FACTOR * EPS * scale)
    # (4 D(h/2) - D(h)) / 3 with each f off by up to `noise`: at most
    # (4 * 2 / span_2 + 2 / span_1) * noise / 3 = 3 * noise / span_2.
    rounding = 4.0 * noise / span[1]
    return value, np.abs(d2 - d1) + rounding


def central_differences(
    evaluate_shifted: Callable[[NDArray[np.int64], Array], Array],
    z: Array,
    steps: Array,
    noise: Array | float = 0.0,
    chunk: int = DEFAULT_CHUNK,
) -> NumericEstimate:
    """Differentiate by central differences along every coordinate of ``z``.

    The perturbed points are never materialised here: ``evaluate_shifted``
    receives, for a chunk of K rows, the coordinate ``index[k]`` and the
    amount ``delta[k]`` to add to it, and evaluates all K points in one
    vectorised call. Chunks have a fixed length (the last one is padded with
    zero shifts), so a compiled ``evaluate_shifted`` compiles once.

    Args:
        evaluate_shifted: ``(index (K,), delta (K,)) -> values (K, ...)``:
            the function at ``z + delta[k] * e_index[k]`` for each row k.
            Trailing axes are separate outputs (for example one loss per
            example), each differentiated on its own.
        z: the point, shape ``(P,)``.
        steps: the step per coordinate, shape ``(P,)``, positive.
        noise: how far one evaluation may be off, per output (shape of the
            trailing axes) or one number for all.
        chunk: rows per call to ``evaluate_shifted``.

    Returns:
        The derivative of every output with respect to every coordinate,
        shape ``(P, ...)``.
    """
    rows = ShiftedRows.along(z, steps)
    index, delta = rows.padded(chunk)
    chunk = max(1, min(chunk, len(rows)))
    values = np.concatenate(
        [
            np.asarray(evaluate_shifted(index[i : i + chunk], delta[i : i + chunk]))
            for i in range(0, index.size, chunk)
        ]
    )
    return rows.combine(values, noise)


@dataclass(frozen=True)
class ShiftedRows:
    """The shifted points of a central difference, one row per point.

    Row ``k`` is ``z + delta[k] * e_index[k]``. The rows are, in order,
    ``+h``, ``-h``, ``+h/2`` and ``-h/2`` along every coordinate, so that a
    caller may evaluate them in any vectorised way (in chunks, or together
    with other work in one compiled call) and hand the values to
    :meth:`combine`.

    Attributes:
        index: the coordinate shifted per row, shape ``(4 P,)``.
        delta: the represented shift per row, ``(z + h) - z``, shape
            ``(4 P,)``.
        steps: the step per coordinate, shape ``(P,)``.
    """

    index: NDArray[np.int64]
    delta: Array
    steps: Array

    @classmethod
    def along(cls, z: Array, steps: Array) -> ShiftedRows:
        """Return the rows for central differences of ``z`` (shape ``(P,)``).

        Raises:
            InvalidArgumentError: a step is not positive, or so small that
                ``z + h`` rounds back to ``z``.
        """
        z = np.asarray(z, dtype=np.float64)
        steps = np.asarray(steps, dtype=np.float64)
        if not (steps > 0).all():
            raise InvalidArgumentError(
                f"every finite-difference step must be positive, got {steps.min()!r}",
                name="steps",
                value=steps,
            )
        # Represented shifts: (z + h) - z is what the evaluation really sees.
        shifts = []
        for h in (steps, steps / 2.0):
            shifts += [(z + h) - z, (z - h) - z]
        _check_resolvable(z, shifts[2] - shifts[3])
        index = np.tile(np.arange(z.size), 4)
        return cls(index, np.concatenate(shifts), steps)

    def __len__(self) -> int:
        return int(self.index.size)

    def padded(self, multiple: int) -> tuple[NDArray[np.int64], Array]:
        """Return ``(index, delta)`` padded with zero shifts of coordinate 0.

        The length becomes a multiple of ``multiple`` (at least one), so a
        compiled evaluation sees few distinct shapes; the padding rows
        evaluate the unshifted point and are dropped by :meth:`combine`.
        """
        rows = len(self)
        multiple = max(1, min(multiple, rows))
        extra = -(-rows // multiple) * multiple - rows
        index = np.concatenate([self.index, np.zeros(extra, dtype=self.index.dtype)])
        return index, np.concatenate([self.delta, np.zeros(extra)])

    def combine(self, values: Array, noise: Array | float = 0.0) -> NumericEstimate:
        """Turn the values at the rows into derivatives with error estimates.

        Args:
            values: the function at each row, shape ``(R, ...)`` with
                ``R >= len(self)``; rows past ``len(self)`` (padding) are
                ignored. Trailing axes are separate outputs.
            noise: how far one evaluation may be off, broadcastable to the
                trailing axes.

        Returns:
            The derivatives, shape ``(P, ...)``.
        """
        values = np.asarray(values)[: len(self)]
        n = self.steps.size
        f = values.reshape((4, n) + values.shape[1:])
        extra = (1,) * (values.ndim - 1)
        shifts = self.delta.reshape(4, n)
        span_h = (shifts[0] - shifts[1]).reshape((n,) + extra)
        span_h2 = (shifts[2] - shifts[3]).reshape((n,) + extra)
        value, error = _combine((f[0], f[2]), (f[1], f[3]), (span_h, span_h2), noise)
        step = np.broadcast_to(self.steps.reshape((n,) + extra), value.shape).copy()
        return NumericEstimate(value, error, step)


def _check_resolvable(z: Array, span: Array) -> None:
    """Refuse steps so small that ``z + h`` rounds back to ``z``."""
    if (span > 0).all():
        return
    k = int(np.argmin(span))
    raise InvalidArgumentError(
        f"the finite-difference step is below the resolution of float64 at "
        f"{z.flat[k]!r}: z + h == z; use a larger rel_step",
        name="rel_step",
        value=float(z.flat[k]),
    )


def elementwise_central_differences(
    f: Callable[[Array], Array],
    s: Array,
    steps: Array,
    noise: Array | float = 0.0,
) -> NumericEstimate:
    """Differentiate an elementwise function, such as an activation, at ``s``.

    Args:
        f: an elementwise function, evaluated on arrays shaped like ``s``.
        s: the points, any shape.
        steps: the step per point, shaped like ``s``.
        noise: how far one evaluation may be off, broadcastable to ``s``.

    Returns:
        ``f'(s)`` per entry, shaped like ``s``.
    """
    points = elementwise_points(s, steps)
    values = tuple(np.asarray(f(p), dtype=np.float64) for p in points)
    return combine_elementwise(values, points, steps, noise)


def elementwise_points(s: Array, steps: Array) -> tuple[Array, Array, Array, Array]:
    """Return the points ``s + h``, ``s - h``, ``s + h/2``, ``s - h/2``.

    Raises:
        InvalidArgumentError: a step so small that ``s + h`` rounds to ``s``.
    """
    s = np.asarray(s, dtype=np.float64)
    points = (s + steps, s - steps, s + steps / 2.0, s - steps / 2.0)
    _check_resolvable(s, points[2] - points[3])
    return points


def combine_elementwise(
    values: tuple[Array, Array, Array, Array],
    points: tuple[Array, Array, Array, Array],
    steps: Array,
    noise: Array | float = 0.0,
) -> NumericEstimate:
    """Turn f at the :func:`elementwise_points` into ``f'`` per entry."""
    values = tuple(np.asarray(v, dtype=np.float64) for v in values)
    span = (points[0] - points[1], points[2] - points[3])
    value, error = _combine((values[0], values[2]), (values[1], values[3]), span, noise)
    return NumericEstimate(value, error, np.asarray(steps, dtype=np.float64))
