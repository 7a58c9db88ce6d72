# SPDX-License-Identifier: MIT
"""Directional screening of a delta-rule derivation.

A full check takes finite differences along every parameter and probe
column. A screen compares projections instead. Along ``k`` random
directions ``r`` per named tensor::

    <analytic, r>   against   <autodiff, r>

held to the rounding allowance of the projection (see
:func:`_project_autodiff`) and to how far a right computation of the
quantity may be off (a running error bound,
:func:`gradcheck._rounding.delta_rule_error_totals`); and along the first
``NUMERIC_DIRECTIONS`` of them::

    <autodiff, r>   against   numeric d/dt E(z + t r)

with the central differences at ``h`` and ``h / 2``, Richardson
extrapolation and error estimate of a full check. The first comparison is
the sharp one: a right derivation follows autodiff to rounding, so its
band is some ulps of the projection's terms rather than the finite
differences' error, which is orders of magnitude wider. The second
confirms autodiff itself at this point, tensor by tensor: references that
disagree make the tensor inconclusive, never a failure. Autodiff is
evaluated once, at the point; where a full check measures how far
rounding moves each reference (the perturbation trials), a screen bounds
it a priori. Whatever does not pass the screen is checked in full, with
the three-way triage of :mod:`gradcheck._compare`, so the screen decides
no failure and no inconclusive verdict on its own: it only decides what
is left out of the full check. An analytic value off autodiff by more
than rounding but less than finite differences resolve is checked in
full too, and judged there.

Directions are drawn per tensor (``dE/dW[u->v]`` and ``Delta W[u->v]``
share those of ``W[u->v]``; ``theta[v]`` and ``dE/dy[o]`` get directions
in the space of their probes), so a small wrong tensor is not drowned by
large right ones. Their entries are independent standard normal draws, so
they have random signs and an error cannot cancel behind an all-positive
sum; they come from ``numpy.random.default_rng(seed)``, in the order of
:func:`gradcheck.quantity_names`' tensors, so a screen is repeatable.

What a screen can miss. Write the analytic value as ``g + e`` with ``g``
the true gradient of a tensor. For an error ``e`` orthogonal to ``g`` of
relative size ``rho = |e| / |g|``, the ratio ``<e, r> / <g, r>`` over
Gaussian directions is Cauchy distributed with scale ``rho``, so one
direction lets the error through (``|<e, r>|`` within the band ``beta
|<g, r>|``) with probability ``(2 / pi) arctan(beta / rho)``, and ``k``
independent directions with the product of theirs. ``beta`` is the
achieved relative band of each direction, ``band / |<autodiff, r>|``. An
error with a component along ``g`` is caught at least as surely once it
is larger than the band. Each screened tensor records its relative band
and this miss probability at ``rho`` = 1e-2, 1e-4 and 1e-6.

``dy/ds[v]`` is elementwise and cheap, so every entry of it is compared,
with the rules and bands of a full check.

A screen is made to be cheap next to the derivation it checks, so its
work is arrays, not Python objects per entry or direction: every layer's
differenced directions run through the network together (see
:meth:`gradcheck._structured.Point.directional_losses`), and every
quantity's directions and every ``dy/ds`` entry are triaged in one pass
(:func:`_triage`). The directions of the last (seed, count, shapes) are
kept, read-only, and reused while they fit in ``KEPT_DIRECTIONS`` floats:
drawing them costs more than the rest of a screen of a large network,
and a check repeated at other points of the same network (each step of a
training run, say) draws the same ones.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import numpy as np
from numpy.typing import NDArray

from gradcheck._compare import (
    DEFAULT_WORST,
    SAFETY_FACTOR,
    Discrepancy,
    QuantityComparison,
    Verdict,
    _ratio,
    entry_name,
)
from gradcheck._delta_rule import quantity_names
from gradcheck._networks import Network, bias_name, weight_name
from gradcheck._numeric import (
    EPS,
    JITTER,
    ROUNDING_FACTOR,
    NumericEstimate,
    combine_elementwise,
    default_steps,
    elementwise_points,
)
from gradcheck._precision import dtype_name, float_eps, float_tiny, is_float_dtype
from gradcheck._references import _compiled
from gradcheck._rounding import delta_rule_error_totals
from gradcheck._structured import Point, sigmoid, workspace

__all__ = ["MISS_SIZES", "ScreenOutcome", "screen_delta_rule"]

Array = NDArray[np.float64]

# Relative sizes of an error at which the miss probability is recorded.
MISS_SIZES = (1e-2, 1e-4, 1e-6)

# How many standard deviations of the first-order change of the loss under
# the perturbation trials the screen's a-priori noise bound takes.
NOISE_SPREADS = 3.0

# Directions per tensor along which autodiff is checked against finite
# differences. One is enough to catch a wrong reference, whose errors are
# not small; the analytic value is held to autodiff along all of them.
NUMERIC_DIRECTIONS = 1

# The most directions kept for reuse, in floats: 64 MiB, four directions
# per parameter of a network of two million.
KEPT_DIRECTIONS = 1 << 23


@dataclass(frozen=True)
class _Tensor:
    """One tensor that directions are drawn in.

    Attributes:
        key: ``"W[u->v]"``, ``"b[v]"``, ``"s[v]"`` (the probe on a net
            input) or ``"y[o]"`` (the probe on the outputs).
        layer: the layer whose net input (or, for ``y``, output) it moves.
        shape: its shape.
        autodiff: dE with respect to it, by JAX, shaped like it.
    """

    key: str
    layer: int
    shape: tuple[int, ...]
    autodiff: Array


@dataclass(frozen=True)
class ScreenOutcome:
    """What a screen found.

    Attributes:
        comparisons: one comparison per named quantity the derivation
            returned, in the document's order; the entries of a screened
            quantity are its directions.
        details: per screened quantity, its directions, relative bands and
            miss probabilities (see the module docstring).
        suspicious: the quantities that did not pass, or whose analytic
            value could not be projected (a wrong shape): the ones to check
            in full.
    """

    comparisons: tuple[QuantityComparison, ...]
    details: dict[str, dict[str, object]]
    suspicious: tuple[str, ...]


def screen_delta_rule(
    network: Network,
    params: Mapping[str, Array],
    x: Array,
    d: Array,
    eta: float,
    analytic: Mapping[str, object],
    *,
    directions: int,
    seed: int,
    rel_step: float | None = None,
) -> ScreenOutcome:
    """Screen every quantity of ``analytic`` along random directions.

    Args:
        network: the architecture.
        params: validated float64 parameters.
        x: validated inputs, ``(batch, n_0)``.
        d: validated targets, ``(batch, n_out)``.
        eta: the learning rate.
        analytic: the derivation's quantities, by name.
        directions: directions per tensor, at least 1.
        seed: seeds the directions.
        rel_step: the finite-difference step relative to ``max(1, max |z|)``
            of each tensor; ``cbrt(eps)`` when omitted.

    Returns:
        The :class:`ScreenOutcome`.
    """
    batch = x.shape[0]
    shapes = network.param_shapes()
    z = np.concatenate([np.ravel(params[name]) for name in shapes])
    with jax.enable_x64(True):
        base = _autodiff_at_point(network, z, x, d)
    moved = _rounding_bounds(network, base, z, params, x)
    tensors = _tensors(network, base, batch)
    drawn = _draw_directions(
        tuple((key, t.shape) for key, t in tensors.items()), directions, seed
    )
    point = Point.at(network, params, x, d)
    numeric = _directional_differences(point, tensors, drawn, moved["loss"], rel_step)

    segments = _Segments()
    found: dict[str, QuantityComparison] = {}
    projections: dict[str, tuple[Array, Array, Array]] = {}
    slopes: list[NumericEstimate] | None = None
    totals: dict[str, float] | None = None
    for name in quantity_names(network):
        if name not in analytic:
            continue
        value = np.asarray(analytic[name])
        if name.startswith("dy/ds"):
            v = int(name[6:-1])
            expected = base["slopes"][v - 1]
            if value.shape != expected.shape:
                found[name] = _unscreenable(name, expected.shape, value)
                continue
            if slopes is None:
                slopes = _sigmoid_differences(base["s"], moved, rel_step)
            segments.add(
                name,
                value,
                np.asarray(value, dtype=np.float64).ravel(),
                slopes[v - 1],
                expected.ravel(),
                moved["slopes"][v - 1].ravel(),
            )
            continue
        key, factor = _tensor_of(name, eta)
        tensor = tensors[key]
        if value.shape != tensor.shape:
            found[name] = _unscreenable(name, tensor.shape, value)
            continue
        r = drawn.rows[key]
        projected = r @ np.asarray(value, dtype=np.float64).reshape(-1)
        # A NaN or infinity anywhere in the value shows in every direction.
        if not np.isfinite(projected).all():
            found[name] = _unscreenable(name, tensor.shape, value)
            continue
        if key not in projections:
            projections[key] = (
                *_project_autodiff(tensor, r, drawn.abs_sums[key], drawn.abs_max[key]),
                numeric[key],
            )
        autodiff, rounding, estimate = projections[key]
        if totals is None:
            totals = delta_rule_error_totals(network, params, x, d, eta)
        # How far a right computation of the value, and autodiff's own, may
        # be off along each direction: max |r| times the sum of the
        # per-entry bounds, each in its own unit roundoff.
        # In a lower precision, an entry below its smallest normal number
        # may also be off by up to that number (rounded to zero, say).
        dtype = value.dtype if is_float_dtype(value.dtype) else np.dtype(np.float64)
        u = 0.5 * (float_eps(dtype) + EPS)
        tiny = float_tiny(dtype) if float_eps(dtype) > EPS else 0.0
        segments.add(
            name,
            value,
            projected,
            estimate.scaled(factor),
            factor * autodiff,
            abs(factor) * rounding,
            bound=u * drawn.abs_max[key] * totals[name] + tiny * drawn.abs_sums[key],
        )

    comparisons_found, details = _triage(segments, batch)
    found.update(comparisons_found)
    comparisons = tuple(
        found[name] for name in quantity_names(network) if name in found
    )
    suspicious = tuple(c.name for c in comparisons if c.verdict is not Verdict.PASS)
    return ScreenOutcome(comparisons, details, suspicious)


def _autodiff_at_point(
    network: Network, z: Array, x: Array, d: Array
) -> dict[str, object]:
    """Evaluate autodiff at the point alone, in one compiled call.

    A full check also evaluates it at perturbation trials, to measure how
    far rounding moves each entry. A screen takes an a-priori bound
    instead (:func:`_rounding_bounds`): an estimate that is too tight only
    sends a quantity to the full check, which measures.
    """
    outputs = _compiled(network, x.shape[0])["autodiff_point"](z, x, d)
    g_z, g_cols, s, sigma, slopes, losses = jax.tree_util.tree_map(np.asarray, outputs)
    return {
        "g_z": g_z,
        "g_cols": g_cols,
        "s": s,
        "sigma": sigma,
        "slopes": slopes,
        "losses": losses,
    }


def _rounding_bounds(
    network: Network,
    base: Mapping[str, object],
    z: Array,
    params: Mapping[str, Array],
    x: Array,
) -> dict[str, object]:
    """Estimate, a priori, what the perturbation trials of a full check measure.

    The trials move every parameter, net input and output ``a`` by
    ``JITTER * u * |a|``, ``u`` uniform in [-1, 1] and independent per
    entry, which moves the loss by ``JITTER * sum(u * c)`` to first order,
    with ``c = |dE/da * a|``. That sum has the standard deviation
    ``sqrt(sum(c^2) / 3)``, and the largest of six trials is rarely over
    three of those, and the estimate takes ``NOISE_SPREADS`` of them, plus
    ``JITTER`` of the loss itself. The trials move a net input ``s`` by
    ``JITTER`` times ``m``, the sum of ``|s|`` and the magnitudes of the
    terms that make it, so the sigmoid by ``JITTER m y (1 - y)`` plus an
    ulp of ``y``; and a slope ``y (1 - y)`` computed from a rounded
    ``y`` is off by ``|1 - 2y|`` ulps of ``y``. Per-entry gradients get no
    measured part: :func:`_project_autodiff` floors them at the tensor's
    scale.
    """
    s, y = base["s"], base["sigma"]
    columns = np.concatenate([*s, y[-1]], axis=1)
    loss = float(np.sum(base["losses"]))
    moves = [base["g_z"] * z, np.ravel(base["g_cols"] * columns)]
    spread = math.sqrt(sum(float(c @ c) for c in moves) / 3.0)
    bounds: dict[str, object] = {
        "loss": JITTER * (abs(loss) + NOISE_SPREADS * spread),
        "slopes": [],
    }
    outputs = [x, *y]
    for v, (s_v, y_v) in enumerate(zip(s, y, strict=True), start=1):
        # How far the trials move s_v: its own probe, and every term of
        # the sum that makes it.
        moved = np.abs(s_v)
        for u in network.predecessors(v):
            moved = moved + np.abs(outputs[u]) @ np.abs(params[weight_name(u, v)])
        if network.bias:
            moved = moved + np.abs(params[bias_name(v)])
        slope = y_v * (1.0 - y_v)
        bounds[f"sigma[{v}]"] = JITTER * (moved * slope + y_v)
        bounds["slopes"].append(
            JITTER * (np.abs(1.0 - 2.0 * y_v) * (y_v + slope * moved) + slope)
        )
    return bounds


def _sigmoid_differences(
    s: list[Array], moved: Mapping[str, object], rel_step: float | None
) -> list[NumericEstimate]:
    """Differentiate the sigmoid at every net input, all layers at once."""
    flat = np.concatenate([s_v.ravel() for s_v in s])
    noise = np.concatenate([moved[f"sigma[{v}]"].ravel() for v in range(1, len(s) + 1)])
    h = default_steps(flat, rel_step)
    points = elementwise_points(flat, h)
    values = tuple(sigmoid(p) for p in points)
    estimate = combine_elementwise(values, points, h, noise=noise)
    estimates, start = [], 0
    for s_v in s:
        part = slice(start, start + s_v.size)
        estimates.append(
            NumericEstimate(
                estimate.value[part], estimate.error[part], estimate.step[part]
            )
        )
        start = part.stop
    return estimates


@dataclass(frozen=True)
class _Directions:
    """The drawn directions, per tensor.

    Attributes:
        rows: read-only, ``(directions, size)``: one flattened direction per
            row.
        abs_sums: ``sum |r|`` per direction, ``(directions,)``.
        abs_max: ``max |r|`` per direction, ``(directions,)``.
    """

    rows: dict[str, Array]
    abs_sums: dict[str, Array]
    abs_max: dict[str, Array]


def _draw_directions(
    shapes: tuple[tuple[str, tuple[int, ...]], ...], directions: int, seed: int
) -> _Directions:
    """Draw ``directions`` standard normal directions per tensor.

    Args:
        shapes: ``(key, shape)`` per tensor, in the order they are drawn.
        directions: directions per tensor.
        seed: seeds ``numpy.random.default_rng``.

    Returns:
        The directions. The last set that fits in ``KEPT_DIRECTIONS``
        floats is kept and returned again for the same arguments.
    """
    total = directions * sum(math.prod(shape) for _, shape in shapes)
    if total <= KEPT_DIRECTIONS:
        return _kept_directions(shapes, directions, seed)
    return _drawn(shapes, directions, seed)


@functools.lru_cache(maxsize=1)
def _kept_directions(
    shapes: tuple[tuple[str, tuple[int, ...]], ...], directions: int, seed: int
) -> _Directions:
    return _drawn(shapes, directions, seed)


def _drawn(
    shapes: tuple[tuple[str, tuple[int, ...]], ...], directions: int, seed: int
) -> _Directions:
    rng = np.random.default_rng(seed)
    sizes = [directions * math.prod(shape) for _, shape in shapes]
    flat = rng.standard_normal(sum(sizes))
    flat.flags.writeable = False
    drawn = _Directions({}, {}, {})
    start = 0
    for (key, _), size in zip(shapes, sizes, strict=True):
        rows = flat[start : start + size].reshape(directions, -1)
        drawn.rows[key] = rows
        drawn.abs_sums[key] = np.abs(rows).sum(axis=1)
        drawn.abs_max[key] = np.abs(rows).max(axis=1)
        start += size
    return drawn


def _tensor_of(name: str, eta: float) -> tuple[str, float]:
    """Return the tensor a quantity is a derivative along, and its factor.

    The factor turns dE along the tensor into the quantity: 1 for
    ``dE/dW``, ``-eta`` for ``Delta W``, -1 for ``theta`` (``-dE/ds``).
    """
    if name.startswith("dE/dy"):
        return name[4:], 1.0
    if name.startswith("theta"):
        return "s" + name[5:], -1.0
    if name.startswith("Delta "):
        return name[6:], -eta
    return name.removeprefix("dE/d"), 1.0


def _tensors(
    network: Network, base: Mapping[str, object], batch: int
) -> dict[str, _Tensor]:
    """Cut autodiff into the tensors directions live in."""
    tensors: dict[str, _Tensor] = {}
    g_z = base["g_z"]
    start = 0
    for name, shape in network.param_shapes().items():
        part = slice(start, start + math.prod(shape))
        layer = int(name[2:-1].split("->")[-1])
        tensors[name] = _Tensor(name, layer, shape, g_z[part].reshape(shape))
        start = part.stop
    g_cols = base["g_cols"]
    start = 0
    for v in range(1, network.n_layers + 1):
        layer = min(v, network.output_layer)
        part = slice(start, start + network.sizes[layer])
        key = f"y[{layer}]" if v == network.n_layers else f"s[{v}]"
        tensors[key] = _Tensor(
            key, layer, (batch, network.sizes[layer]), g_cols[:, part]
        )
        start = part.stop
    return tensors


def _directional_differences(
    point: Point,
    tensors: Mapping[str, _Tensor],
    drawn: _Directions,
    noise: float,
    rel_step: float | None,
) -> dict[str, NumericEstimate]:
    """Differentiate E along the first directions of every tensor, in one pass.

    A direction ``r`` of ``W[u->v]`` moves ``s_v`` by ``t * y_u @ r``, one of
    ``b[v]`` or of the probe on ``s_v`` by ``t * r``: every direction of
    every tensor into layer ``v`` is a change of ``s_v``, and every layer's
    directions, at their four steps, run through the network together
    (:meth:`gradcheck._structured.Point.directional_losses`). The output
    probe moves ``y_o`` itself.
    """
    batch = point.batch
    per_layer: dict[int, list[tuple[str, int, float]]] = {}
    for key, tensor in tensors.items():
        params = point.params.get(key)
        scale = (
            0.0 if params is None else max(float(params.max()), -float(params.min()))
        )
        h = float(default_steps(np.array([scale]), rel_step)[0])
        layer = -1 if key.startswith("y") else tensor.layer
        n = min(NUMERIC_DIRECTIONS, drawn.rows[key].shape[0])
        per_layer.setdefault(layer, []).append((key, n, h))

    moves: dict[int, tuple[Array, Array]] = {}
    steps: dict[int, Array] = {}
    for layer, items in per_layer.items():
        width = point.network.sizes[layer]
        q = workspace(f"q{layer}", (sum(n for _, n, _ in items), batch, width))
        start = 0
        for key, n, _ in items:
            r = drawn.rows[key][:n].reshape(n, *tensors[key].shape)
            part = q[start : start + n]
            if key.startswith("W"):
                u = int(key[2:-1].split("->")[0])
                np.matmul(point.y[u], r, out=part)
            elif key.startswith("b"):
                part[...] = r[:, None, :]
            else:
                part[...] = r
            start += n
        steps[layer] = np.concatenate([np.full(n, step) for _, n, step in items])
        moves[layer] = (q, steps[layer])
    losses: dict[int, Array] = {}
    if -1 in moves:
        q, h = moves.pop(-1)
        shifts = np.concatenate([h, -h, h / 2.0, -h / 2.0])
        dy = shifts[:, None, None] * np.concatenate([q] * 4)
        losses[-1] = point.output_shift_losses(dy).sum(axis=1).reshape(4, -1)
    if moves:
        flat = point.directional_losses(moves)
        start = 0
        for layer in sorted(moves):
            n = moves[layer][0].shape[0]
            losses[layer] = flat[:, start : start + n]
            start += n

    order = list(per_layer)
    f = np.concatenate([losses[layer] for layer in order], axis=1)
    h = np.concatenate(
        [
            np.array([step for _, n, step in per_layer[layer] for _ in range(n)])
            for layer in order
        ]
    )
    points = (h, -h, h / 2.0, -h / 2.0)
    estimate = combine_elementwise(tuple(f), points, h, noise=noise)
    estimates: dict[str, NumericEstimate] = {}
    start = 0
    for layer in order:
        for key, n, _ in per_layer[layer]:
            part = slice(start, start + n)
            estimates[key] = NumericEstimate(
                estimate.value[part], estimate.error[part], estimate.step[part]
            )
            start = part.stop
    return estimates


def _project_autodiff(
    tensor: _Tensor, r: Array, abs_sums: Array, abs_max: Array
) -> tuple[Array, Array]:
    """Return ``<autodiff, r>`` per direction and the rounding allowance of it.

    A right analytic value follows autodiff to its rounding allowance per
    entry (see :mod:`gradcheck._compare`), here the floor at the tensor's
    scale; projected, those allowances add up with the weights ``|r|``
    (``abs_sums`` per direction). The projection's own summation adds a
    few ulps of the sum of the terms' magnitudes, at most ``max |r|`` times
    ``sum |g|`` (``abs_max`` per direction).
    """
    g = tensor.autodiff.reshape(-1)
    magnitudes = np.abs(g)
    floor = ROUNDING_FACTOR * EPS * float(np.max(magnitudes, initial=0.0))
    magnitude = abs_max * float(np.sum(magnitudes))
    rounding = floor * abs_sums
    return r @ g, rounding + (math.log2(g.size) + 2.0) * EPS * magnitude


class _Segments:
    """Every compared quantity, its entries laid end to end.

    The entries of a screened quantity are its directions, the first
    ``NUMERIC_DIRECTIONS`` of which have a finite difference; those of
    ``dy/ds`` are its entries, each with one. Each of ``analytic``,
    ``autodiff`` and ``rounding`` gets one flat array per quantity;
    ``numeric`` and ``error`` cover the differenced entries only.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.shapes: list[tuple[int, ...]] = []
        self.dtypes: list[np.dtype] = []
        self.screened: list[bool] = []
        self.differenced: list[int] = []
        self.columns: dict[str, list[Array]] = {
            key: []
            for key in ("analytic", "numeric", "error", "autodiff", "rounding", "bound")
        }

    def add(
        self,
        name: str,
        value: NDArray,
        analytic: Array,
        numeric: NumericEstimate,
        autodiff: Array,
        rounding: Array,
        bound: Array | None = None,
    ) -> None:
        """Add one quantity: its flat values against its flat references.

        ``numeric`` may cover only the leading entries of the others. A
        quantity with an error ``bound`` (its directions') is screened, and
        held to autodiff within rounding and that bound; one without is
        elementwise, held to the rules of a full check.
        """
        screened = bound is not None
        self.names.append(name)
        self.shapes.append(tuple(value.shape))
        self.dtypes.append(
            value.dtype if is_float_dtype(value.dtype) else np.dtype(np.float64)
        )
        self.screened.append(screened)
        self.differenced.append(numeric.value.size)
        for key, array in (
            ("analytic", analytic),
            ("numeric", numeric.value),
            ("error", numeric.error),
            ("autodiff", autodiff),
            ("rounding", rounding),
            ("bound", np.zeros_like(analytic) if bound is None else bound),
        ):
            self.columns[key].append(np.ravel(array))

    def flat(self, key: str) -> Array:
        """Return one of the columns, every quantity end to end."""
        return np.concatenate(self.columns[key])


def _triage(
    segments: _Segments, batch: int
) -> tuple[dict[str, QuantityComparison], dict[str, dict[str, object]]]:
    """Compare every quantity, all entries and directions in one pass.

    An entry of ``dy/ds`` is held to the rules and bands of
    :func:`gradcheck._compare.compare_quantity`, an analytic value in a
    lower precision to its own as there. A screened direction is held to
    autodiff within the rounding part of that band and the error bound of
    a right computation, and autodiff to finite differences where it has
    one (see the module docstring). All
    entries are compared at once and reduced per quantity: one call per
    quantity costs more than the rest of a screen of a small network. A
    screened quantity's entries are its directions, named ``<r0>``,
    ``<r1>``, ...
    """
    if not segments.names:
        return {}, {}
    sizes = np.array([len(a) for a in segments.columns["analytic"]])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    quantity = np.repeat(np.arange(sizes.size), sizes)
    analytic, autodiff, rounding, bound = (
        segments.flat(key) for key in ("analytic", "autodiff", "rounding", "bound")
    )
    # The differenced entries lead each quantity: lay the finite
    # differences out like the rest, NaN (and no error) where there is none.
    differenced = (
        np.arange(quantity.size) - starts[quantity]
        < np.array(segments.differenced)[quantity]
    )
    numeric = np.full(quantity.size, np.nan)
    numeric[differenced] = segments.flat("numeric")
    error = np.zeros(quantity.size)
    error[differenced] = segments.flat("error")
    elementwise = ~np.array(segments.screened)[quantity]
    ratios = {dtype: float_eps(dtype) / EPS for dtype in set(segments.dtypes)}
    eps_ratio = np.array([ratios[dtype] for dtype in segments.dtypes])

    scale = np.maximum.reduceat(np.abs(autodiff), starts)[quantity]
    floor = rounding + ROUNDING_FACTOR * EPS * scale
    reference_band = SAFETY_FACTOR * (error + floor)
    # An elementwise quantity in a lower precision has its rounding scaled
    # by the ratio of the epsilons; a screened one has an error bound in
    # its own precision instead, as compare_quantity's error_bound.
    tinies = {dtype: float_tiny(dtype) for dtype in ratios if ratios[dtype] > 1.0}
    tiny = np.array([tinies.get(dtype, 0.0) for dtype in segments.dtypes])
    rounding_band = SAFETY_FACTOR * (
        np.where(elementwise, eps_ratio[quantity] * floor + tiny[quantity], floor)
        + bound
    )
    band = np.where(elementwise, SAFETY_FACTOR * error, 0.0) + rounding_band
    gap = np.where(differenced, np.abs(numeric - autodiff), 0.0)
    unsettled = ~(gap <= reference_band)
    diff = np.abs(analytic - autodiff)
    mismatched = ~unsettled & ~(diff <= band)
    unresolved = ~unsettled & ~mismatched & ~(diff <= rounding_band)
    gap_ratio = _ratio(gap, reference_band)
    diff_ratio = _ratio(diff, band)
    rel = _ratio(diff, np.maximum(np.abs(autodiff), band))
    severity = np.where(unsettled, gap_ratio, diff_ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        # The band of each direction, relative to the directional derivative.
        relative = np.where(autodiff != 0, band / np.abs(autodiff), np.inf)
    miss = np.stack(
        [
            np.multiply.reduceat((2 / np.pi) * np.arctan(relative / size), starts)
            for size in MISS_SIZES
        ],
        axis=1,
    ).tolist()

    def per_quantity(ufunc: np.ufunc, a: NDArray) -> list:
        return ufunc.reduceat(a, starts).tolist()

    n_mismatched = per_quantity(np.add, mismatched.astype(np.int64))
    n_unsettled = per_quantity(np.add, (unsettled | unresolved).astype(np.int64))
    stats = {
        "max_abs_discrepancy": per_quantity(np.maximum, diff),
        "max_rel_discrepancy": per_quantity(np.maximum, rel),
        "max_reference_gap": per_quantity(np.maximum, gap),
        "max_band": per_quantity(np.maximum, band),
        "max_band_ratio": per_quantity(np.maximum, diff_ratio),
        "max_reference_ratio": per_quantity(np.maximum, gap_ratio),
    }
    relative_band = per_quantity(np.maximum, relative)
    # Worst first within each quantity; the sort is stable, so ties keep
    # their order, as in compare_quantity. Only those entries become Python
    # floats.
    order = np.lexsort((-severity, quantity))
    kept = np.minimum(sizes, DEFAULT_WORST)
    picked = order[
        np.concatenate([np.arange(a, a + n) for a, n in zip(starts, kept, strict=True)])
    ]
    worst_values = [
        array[picked].tolist() for array in (analytic, numeric, autodiff, band)
    ]
    worst_local = (picked - starts[quantity[picked]]).tolist()
    names = {dtype: dtype_name(dtype) for dtype in set(segments.dtypes)}

    comparisons: dict[str, QuantityComparison] = {}
    details: dict[str, dict[str, object]] = {}
    first = 0
    for q, name in enumerate(segments.names):
        screened, shape, size = segments.screened[q], segments.shapes[q], int(sizes[q])
        worst = []
        for i in range(first, first + int(kept[q])):
            local = worst_local[i]
            worst.append(
                Discrepancy(
                    name=f"{name}<r{local}>"
                    if screened
                    else entry_name(name, np.unravel_index(local, shape)),
                    analytic=worst_values[0][i],
                    numeric=worst_values[1][i],
                    autodiff=worst_values[2][i],
                    band=worst_values[3][i],
                )
            )
        first += int(kept[q])
        if n_mismatched[q]:
            verdict = Verdict.FAIL
        elif n_unsettled[q]:
            verdict = Verdict.INCONCLUSIVE
        else:
            verdict = Verdict.PASS
        comparisons[name] = QuantityComparison(
            name=name,
            verdict=verdict,
            shape=shape,
            n_mismatched=n_mismatched[q],
            n_unsettled=n_unsettled[q],
            **{key: column[q] for key, column in stats.items()},
            worst=tuple(worst),
            note=(
                f"screened along {size} random directions; entries are directions"
                if screened
                else ""
            ),
            precision=names[segments.dtypes[q]],
        )
        details[name] = (
            {
                "screened": True,
                "directions": size,
                "differenced": segments.differenced[q],
                "relative_band": relative_band[q],
                "miss_probability": {
                    f"{s:g}": p for s, p in zip(MISS_SIZES, miss[q], strict=True)
                },
            }
            if screened
            else {"screened": False}
        )
    return comparisons, details


def _unscreenable(
    name: str, shape: tuple[int, ...], value: NDArray
) -> QuantityComparison:
    """A placeholder for a quantity that must be checked in full."""
    return QuantityComparison(
        name=name,
        verdict=Verdict.FAIL,
        shape=shape,
        n_mismatched=math.prod(shape),
        n_unsettled=0,
        max_abs_discrepancy=float("inf"),
        max_rel_discrepancy=float("inf"),
        max_reference_gap=0.0,
        max_band=0.0,
        max_band_ratio=float("inf"),
        max_reference_ratio=0.0,
        note=f"shape {value.shape} or non-finite entries: not screened",
    )
