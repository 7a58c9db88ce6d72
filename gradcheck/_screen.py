# SPDX-License-Identifier: MIT
"""Directional screening of a delta-rule derivation.

A full check takes finite differences along every parameter and probe
column. A screen compares projections instead. Along ``k`` random
directions ``r`` per named tensor::

    <analytic, r>   against   <autodiff, r>

held to the rounding allowance of the projection (see
:func:`_project`) and to how far a right computation of the
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
sum; they come from ``numpy.random.default_rng(seed)``, direction by
direction (the first of every tensor, in the order of
:func:`gradcheck.quantity_names`' tensors, then the second, ...), so a
screen is repeatable and its first ``k`` directions are those of a
screen of ``k``.

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
and this miss probability at ``rho`` = 1e-2, 1e-4 and 1e-6, and passes
only if the first is at most ``MAX_MISS``. The band is relative to the
tensor, so an error far below it goes unseen whatever the directions: a
0.1% error in one entry a billion times smaller than the tensor's
largest is below the rounding of the projection. The full check holds
each entry to its own rounding.

``dy/ds[v]`` is no derivative of E: it is projected on the directions of
``s[v]``, its shape, against autodiff's slopes, and against the sigmoid's
own finite differences, taken entry by entry (cheaply: they are a few
sigmoids per net input) and projected on every direction.

A screen is made to be cheap next to the derivation it checks, so its
work is arrays, not Python objects per entry or direction: every layer's
differenced directions run through the network together (see
:meth:`gradcheck._structured.Point.directional_losses`), and every
quantity's directions are triaged in one pass (:func:`_triage`). The
directions of the last two (seed, count, shapes) are kept, read-only,
and reused while they fit in ``KEPT_DIRECTIONS`` floats: drawing them costs
more than the rest of a screen of a large network, and a check repeated
at other points of the same network (each step of a training run, say)
draws the same ones.
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
)
from gradcheck._delta_rule import quantity_names
from gradcheck._networks import Network
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
from gradcheck._rounding import delta_rule_error_totals, net_input_magnitudes
from gradcheck._structured import Point, _one_blas_thread, sigmoid, workspace

__all__ = ["MISS_SIZES", "ScreenOutcome", "screen_delta_rule"]

Array = NDArray[np.float64]

# Relative sizes of an error at which the miss probability is recorded.
MISS_SIZES = (1e-2, 1e-4, 1e-6)

# A screen passes a quantity only if an error of 1% of it would have
# slipped past its directions with at most this probability; a wider band
# (a lower precision at saturated units, say, whose rounding bounds drown
# the projection) sends the quantity to the full check, which holds each
# entry to its own bound. One direction meets it up to a relative band of
# 1.6e-6, four up to 1.6e-3; float64 bands measured 1.2e-13 to 4.6e-10
# (540 quantities of 32 networks).
MAX_MISS = 1e-4

# How many standard deviations of the first-order change of the loss under
# the perturbation trials the screen's a-priori noise bound takes.
NOISE_SPREADS = 3.0

# Directions per tensor along which autodiff is checked against finite
# differences. One is enough to catch a wrong reference, whose errors are
# not small; the analytic value is held to autodiff along all of them.
NUMERIC_DIRECTIONS = 1

# The most directions kept for reuse per set, in floats: 64 MiB, four
# directions per parameter of a network of two million.
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


# A screen's products are small; BLAS threads cost more than they save
# here, and far more when other work holds the cores (measured under load:
# 7.8 ms for the directional pass of a 64-128-128-10 network on two
# threads, 0.3 ms on one).
@_one_blas_thread()
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
    adaptive: bool = False,
) -> ScreenOutcome:
    """Screen every quantity of ``analytic`` along random directions.

    Args:
        network: the architecture.
        params: validated float64 parameters.
        x: validated inputs, ``(batch, n_0)``.
        d: validated targets, ``(batch, n_out)``.
        eta: the learning rate.
        analytic: the derivation's quantities, by name.
        directions: directions per tensor, at least 1; with ``adaptive``,
            the most.
        seed: seeds the directions.
        rel_step: the finite-difference step relative to ``max(1, max |z|)``
            of each tensor; ``cbrt(eps)`` when omitted.
        adaptive: screen along the first direction of each tensor, and
            along all ``directions`` only the quantities that one leaves
            unresolved.

    Returns:
        The :class:`ScreenOutcome`.
    """
    batch = x.shape[0]
    shapes = network.param_shapes()
    z = np.concatenate([np.ravel(params[name]) for name in shapes])
    with jax.enable_x64(True):
        base = _autodiff_at_point(network, z, x, d)
    moved = _rounding_bounds(
        base, z, net_input_magnitudes(network, params, base["sigma"], x)
    )
    tensors = _tensors(network, base, batch)
    shapes = tuple((key, t.shape) for key, t in tensors.items())
    # With ``adaptive``, every tensor is screened along its first direction,
    # and only a quantity that one leaves unresolved (an error of 1% more
    # likely to slip through than MAX_MISS, with nothing else amiss) along
    # all of them: directions are independent, so stopping at the first is
    # held to the same miss probability. The first of a draw of several is
    # the draw of one, so only that one is drawn unless more are needed.
    first = 1 if adaptive else directions
    drawn = _draw_directions(shapes, first, seed)
    # Which tensor and source each returned quantity is screened along.
    plan: list[tuple[str, str, float]] = []
    for name in quantity_names(network):
        if name in analytic:
            key, factor = _tensor_of(name, eta)
            plan.append((name, key, factor))
    # Finite differences along the tensors some quantity is a derivative
    # along, in the order of the tensors. A direction moves each entry of a
    # tensor by t r: its step is that of the tensor's largest entry, and a
    # probe's that of zero.
    used = {key for name, key, _ in plan if not name.startswith("dy/ds")}
    differenced = {key: tensor for key, tensor in tensors.items() if key in used}
    scales = [
        max(float(params[key].max()), -float(params[key].min()))
        if key in params
        else 0.0
        for key in differenced
    ]
    steps = default_steps(np.array(scales), rel_step).tolist()
    numeric = _directional_differences(
        Point.at(network, params, x, d),
        differenced,
        drawn,
        moved["loss"],
        dict(zip(differenced, steps, strict=True)),
    )

    references = _References(network, params, x, d, eta, base, moved, rel_step)
    found, facts = _screen_along(
        plan, analytic, tensors, drawn, numeric, references, first
    )
    if first < directions:
        # All directions only where they can settle it: about the first's
        # miss probability to the power of their number. A wide band (a
        # lower precision's) goes to the full check without them.
        again = [
            entry
            for entry in plan
            if _unresolved(found[entry[0]])
            and facts[entry[0]]["miss_probability"]["0.01"] ** directions <= MAX_MISS
        ]
        if again:
            every = _draw_directions(shapes, directions, seed)
            more, more_facts = _screen_along(
                again, analytic, tensors, every, numeric, references, directions
            )
            found.update(more)
            facts.update(more_facts)
    comparisons = tuple(
        found[name] for name in quantity_names(network) if name in found
    )
    details = {c.name: facts[c.name] for c in comparisons if c.name in facts}
    suspicious = tuple(c.name for c in comparisons if c.verdict is not Verdict.PASS)
    return ScreenOutcome(comparisons, details, suspicious)


class _References:
    """What the passes of one screen share, each part taken once when needed.

    Attributes:
        base: autodiff at the point (see :func:`_autodiff_at_point`).
    """

    def __init__(
        self,
        network: Network,
        params: Mapping[str, Array],
        x: Array,
        d: Array,
        eta: float,
        base: Mapping[str, object],
        moved: Mapping[str, object],
        rel_step: float | None,
    ) -> None:
        self.base = base
        self._point = (network, params, x, d, eta)
        self._moved = moved
        self._rel_step = rel_step
        self._slopes: list[NumericEstimate] | None = None
        self._totals: Mapping[str, float] | None = None

    def slopes(self) -> list[NumericEstimate]:
        """The sigmoid's finite differences at every net input, per layer."""
        if self._slopes is None:
            self._slopes = _sigmoid_differences(
                self.base["s"], self._moved, self._rel_step
            )
        return self._slopes

    def totals(self) -> Mapping[str, float]:
        """The sums of each quantity's running error bounds (see :func:`_triage`)."""
        if self._totals is None:
            # At the edge of the float range the bounds overflow; an
            # infinite band passes nothing (see MAX_MISS).
            with np.errstate(over="ignore", invalid="ignore"):
                self._totals = delta_rule_error_totals(*self._point, self.base["sigma"])
        return self._totals


def _screen_along(
    plan: list[tuple[str, str, float]],
    analytic: Mapping[str, object],
    tensors: Mapping[str, _Tensor],
    drawn: _Directions,
    numeric: Mapping[str, NumericEstimate],
    references: _References,
    count: int,
) -> tuple[dict[str, QuantityComparison], dict[str, dict[str, object]]]:
    """Screen the quantities of ``plan`` along the first ``count`` directions.

    Args:
        plan: ``(name, tensor key, factor)`` per quantity (see
            :func:`_tensor_of`).
        analytic: the derivation's quantities, by name.
        tensors: the tensors directions live in.
        drawn: the directions, at least ``count`` per tensor.
        numeric: the finite differences along the first direction(s).
        references: autodiff and what is taken from it once.
        count: how many of each tensor's directions to project on.

    Returns:
        The comparison of each quantity, and each screened quantity's facts.
    """
    # One row per source of references (a tensor's dE, or a layer's
    # slopes), one per quantity; the triage joins them.
    sources = _Sources(count)
    quantities = _Quantities()
    found: dict[str, QuantityComparison] = {}
    base = references.base
    # NaN shows in the projections, and is checked in full.
    with np.errstate(invalid="ignore", over="ignore"):
        for name, key, factor in plan:
            value = np.asarray(analytic[name])
            tensor = tensors[key]
            if value.shape != tensor.shape:
                found[name] = _unscreenable(name, tensor.shape, value.shape)
                continue
            r = drawn.rows[key][:count]
            abs_sums = drawn.abs_sums[key][:count]
            abs_max = drawn.abs_max[key][:count]
            # dy/ds is no derivative of E: it is projected on the directions
            # of its net input, against the slopes autodiff gives and the
            # sigmoid's own finite differences, entry by entry, projected too.
            slope = name.startswith("dy/ds")
            which = f"slopes {key}" if slope else key
            if which not in sources.index:
                if slope:
                    g = base["slopes"][tensor.layer - 1]
                    estimate = _projected_estimate(
                        references.slopes()[tensor.layer - 1], r
                    )
                else:
                    g, estimate = tensor.autodiff, numeric[key]
                sources.add(
                    which,
                    *_project(g, r, abs_sums, abs_max),
                    estimate,
                    abs_max,
                    abs_sums,
                )
            projected = r @ np.asarray(value, dtype=np.float64).reshape(-1)
            quantities.add(name, value, projected, sources.index[which], factor)

    # A right float64 derivation is nearly always within the rounding of
    # the projections alone; only what is not, and every lower precision,
    # waits for the running error bounds, which cost a fifth of a screen.
    checked = None
    if all(dtype == np.float64 for dtype in quantities.dtypes):
        checked = _triage(quantities, sources)
    if checked is None or any(c.verdict is not Verdict.PASS for c in checked.values()):
        checked = _triage(quantities, sources, references.totals())
    found.update(checked)
    return found, quantities.facts


def _unresolved(comparison: QuantityComparison) -> bool:
    """Whether a screened quantity passed all but the miss probability."""
    return (
        comparison.verdict is Verdict.INCONCLUSIVE
        and comparison.n_unsettled == 0
        and comparison.n_mismatched == 0
    )


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
    base: Mapping[str, object], z: Array, magnitude: Mapping[int, Array]
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
    ulp of ``y``: the noise of its finite differences. Per-entry
    gradients get no measured part: :func:`_project` floors them at the
    tensor's scale, and a running error bound covers the rest.
    """
    s, y = base["s"], base["sigma"]
    columns = np.concatenate([*s, y[-1]], axis=1)
    loss = float(np.sum(base["losses"]))
    # Sums of squares by numpy's own loops: BLAS would split a dot product
    # this size across threads, and wait on them when the cores are busy.
    moves = [
        np.multiply(base["g_z"], z, out=workspace("moves", z.shape)),
        np.ravel(base["g_cols"] * columns),
    ]
    spread = math.sqrt(sum(float(np.sum(np.square(c, out=c))) for c in moves) / 3.0)
    bounds: dict[str, object] = {
        "loss": JITTER * (abs(loss) + NOISE_SPREADS * spread),
    }
    for v, (s_v, y_v) in enumerate(zip(s, y, strict=True), start=1):
        # How far the trials move s_v: its own probe, and every term of
        # the sum that makes it (``magnitude``, see
        # :func:`gradcheck._rounding.delta_rule_error_totals`).
        moved = np.abs(s_v) + magnitude[v]
        slope = y_v * (1.0 - y_v)
        bounds[f"sigma[{v}]"] = JITTER * (moved * slope + y_v)
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


def _projected_estimate(estimate: NumericEstimate, r: Array) -> NumericEstimate:
    """Project per-entry finite differences on directions ``r``, ``(k, n)``.

    The error of each entry's estimate adds up with the weights ``|r|``.
    """
    return NumericEstimate(
        r @ estimate.value,
        np.abs(r) @ estimate.error,
        np.full(r.shape[0], float(np.max(estimate.step))),
    )


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
        The directions. The last two sets that fit in ``KEPT_DIRECTIONS``
        floats are kept and returned again for the same arguments. The
        first ``k`` directions of a draw are those of a draw of ``k``.
    """
    total = directions * sum(math.prod(shape) for _, shape in shapes)
    if total <= KEPT_DIRECTIONS:
        return _kept_directions(shapes, directions, seed)
    return _drawn(shapes, directions, seed)


# Two sets: an adaptive screen's first directions, and all of them where
# it needs more.
@functools.lru_cache(maxsize=2)
def _kept_directions(
    shapes: tuple[tuple[str, tuple[int, ...]], ...], directions: int, seed: int
) -> _Directions:
    return _drawn(shapes, directions, seed)


def _drawn(
    shapes: tuple[tuple[str, tuple[int, ...]], ...], directions: int, seed: int
) -> _Directions:
    rng = np.random.default_rng(seed)
    sizes = [math.prod(shape) for _, shape in shapes]
    # Direction by direction: the first of every tensor, then the second,
    # so that a draw of k is the first k of a larger one.
    flat = rng.standard_normal((directions, sum(sizes)))
    drawn = _Directions({}, {}, {})
    start = 0
    for (key, _), size in zip(shapes, sizes, strict=True):
        rows = np.ascontiguousarray(flat[:, start : start + size])
        rows.flags.writeable = False
        drawn.rows[key] = rows
        drawn.abs_sums[key] = np.abs(rows).sum(axis=1)
        drawn.abs_max[key] = np.abs(rows).max(axis=1)
        start += size
    return drawn


def _tensor_of(name: str, eta: float) -> tuple[str, float]:
    """Return the tensor a quantity is a derivative along, and its factor.

    The factor turns dE along the tensor into the quantity: 1 for
    ``dE/dW``, ``-eta`` for ``Delta W``, -1 for ``theta`` (``-dE/ds``).
    ``dy/ds[v]`` is projected on the directions of ``s[v]``, its own
    shape, against the slopes rather than dE.
    """
    if name.startswith("dE/dy"):
        return name[4:], 1.0
    if name.startswith("dy/ds"):
        return "s" + name[5:], 1.0
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
    steps: Mapping[str, float],
) -> dict[str, NumericEstimate]:
    """Differentiate E along the first directions of every tensor, in one pass.

    A direction ``r`` of ``W[u->v]`` moves ``s_v`` by ``t * y_u @ r``, one of
    ``b[v]`` or of the probe on ``s_v`` by ``t * r``: every direction of
    every tensor into layer ``v`` is a change of ``s_v``, and every layer's
    directions, at their four steps, run through the network together
    (:meth:`gradcheck._structured.Point.directional_losses`). The output
    probe moves ``y_o`` itself. ``steps`` holds the step of each tensor.
    """
    batch = point.batch
    per_layer: dict[int, list[tuple[str, int, float]]] = {}
    for key, tensor in tensors.items():
        layer = -1 if key.startswith("y") else tensor.layer
        n = min(NUMERIC_DIRECTIONS, drawn.rows[key].shape[0])
        per_layer.setdefault(layer, []).append((key, n, steps[key]))
    if not per_layer:
        return {}

    moves: dict[int, tuple[Array, Array]] = {}
    hs: dict[int, Array] = {}
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
        hs[layer] = np.array([step for _, n, step in items for _ in range(n)])
        moves[layer] = (q, hs[layer])
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
    h = np.concatenate([hs[layer] for layer in order])
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


def _project(
    g: Array, r: Array, abs_sums: Array, abs_max: Array
) -> tuple[Array, Array]:
    """Return ``<g, r>`` per direction and the rounding allowance of it.

    ``g`` is autodiff's value of a quantity, of any shape.

    A right analytic value follows autodiff to its rounding allowance per
    entry (see :mod:`gradcheck._compare`), here the floor at the tensor's
    scale; projected, those allowances add up with the weights ``|r|``
    (``abs_sums`` per direction). The projection's own summation adds a
    few ulps of the sum of the terms' magnitudes, at most ``max |r|`` times
    ``sum |g|`` (``abs_max`` per direction).
    """
    g = g.reshape(-1)
    magnitudes = np.abs(g, out=workspace("abs g", g.shape))
    floor = ROUNDING_FACTOR * EPS * float(np.max(magnitudes, initial=0.0))
    magnitude = abs_max * float(np.sum(magnitudes))
    rounding = floor * abs_sums
    return r @ g, rounding + (math.log2(g.size) + 2.0) * EPS * magnitude


class _Sources:
    """The references per direction, one row per source.

    A source is a tensor's autodiff (for ``dE/dW``, ``Delta W``, ``theta``,
    ...) or a layer's slopes (for ``dy/ds``). ``numeric`` and ``error`` are
    NaN and 0 past the directions that have a finite difference.
    """

    def __init__(self, directions: int) -> None:
        self.directions = directions
        self.index: dict[str, int] = {}
        self.rows: dict[str, list[Array]] = {
            key: []
            for key in (
                "autodiff",
                "rounding",
                "numeric",
                "error",
                "abs_max",
                "abs_sums",
            )
        }

    def add(
        self,
        name: str,
        autodiff: Array,
        rounding: Array,
        numeric: NumericEstimate,
        abs_max: Array,
        abs_sums: Array,
    ) -> None:
        """Add one source; ``numeric`` may cover the leading directions only."""
        self.index[name] = len(self.index)
        value = np.full(self.directions, np.nan)
        error = np.zeros(self.directions)
        value[: numeric.value.size] = numeric.value
        error[: numeric.value.size] = numeric.error
        for key, row in (
            ("autodiff", autodiff),
            ("rounding", rounding),
            ("numeric", value),
            ("error", error),
            ("abs_max", abs_max),
            ("abs_sums", abs_sums),
        ):
            self.rows[key].append(row)

    def stacked(self, key: str) -> Array:
        """Return one of the rows of every source, ``(sources, k)``."""
        return np.stack(self.rows[key])


class _Quantities:
    """Every screened quantity: its projections and where its references are.

    Attributes:
        facts: after :func:`_triage`, per quantity, its directions,
            relative band and miss probabilities.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.shapes: list[tuple[int, ...]] = []
        self.dtypes: list[np.dtype] = []
        self.projected: list[Array] = []
        self.source: list[int] = []
        self.factor: list[float] = []
        self.facts: dict[str, dict[str, object]] = {}

    def add(
        self,
        name: str,
        value: NDArray,
        projected: Array,
        source: int,
        factor: float,
    ) -> None:
        """Add one quantity.

        Args:
            name: its name.
            value: the derivation's array for it.
            projected: ``<value, r>`` per direction.
            source: the row of its references.
            factor: what turns the source into it (``-eta`` for an update).
        """
        self.names.append(name)
        self.shapes.append(tuple(value.shape))
        self.dtypes.append(
            value.dtype if is_float_dtype(value.dtype) else np.dtype(np.float64)
        )
        self.projected.append(projected)
        self.source.append(source)
        self.factor.append(factor)


@functools.cache
def _precision_of(dtype: np.dtype) -> tuple[float, float, str]:
    """Return a dtype's unit roundoff, its underflow allowance and its name.

    In a lower precision than float64, an entry below the smallest normal
    number may be off by up to that number (rounded to zero, say).
    """
    eps = float_eps(dtype)
    return 0.5 * eps, float_tiny(dtype) if eps > EPS else 0.0, dtype_name(dtype)


def _triage(
    quantities: _Quantities,
    sources: _Sources,
    totals: Mapping[str, float] | None = None,
) -> dict[str, QuantityComparison]:
    """Compare every quantity along its directions, all in one pass.

    A direction is held to autodiff within the rounding part of
    :func:`gradcheck._compare.compare_quantity`'s band and the running
    error bound of a right computation, in the value's own precision,
    and autodiff to finite differences where it has one (see the module
    docstring). All quantities are compared at once, a row each: one call
    per quantity costs more than the rest of a screen of a small network.
    A quantity's entries are its directions, named ``<r0>``, ``<r1>``, ...
    Records each quantity's facts in ``quantities.facts``.

    ``totals`` are the sums of each quantity's running error bounds, in
    units of the unit roundoff (see
    :func:`gradcheck._rounding.delta_rule_error_totals`); without them,
    the band is the rounding of the projections alone.
    """
    if not quantities.names:
        return {}
    rows = np.array(quantities.source)
    factor = np.array(quantities.factor)[:, None]
    precision = [_precision_of(dtype) for dtype in quantities.dtypes]
    u = np.array([p[0] for p in precision])[:, None]
    tiny = np.array([p[1] for p in precision])[:, None]
    analytic = np.stack(quantities.projected)
    autodiff = factor * sources.stacked("autodiff")[rows]
    numeric = factor * sources.stacked("numeric")[rows]
    error = np.abs(factor) * sources.stacked("error")[rows]
    rounding = np.abs(factor) * sources.stacked("rounding")[rows]
    # How far a right computation of the value, and autodiff's own, may be
    # off along each direction: max |r| times the sum of the per-entry
    # bounds, each in its own unit roundoff.
    with np.errstate(over="ignore", invalid="ignore"):
        # Autodiff's own error: a finite difference differs from it by that
        # too (near convergence, y - d is known only to ulps of y).
        total = np.array(
            [0.0 if totals is None else totals[n] for n in quantities.names]
        )
        own = 0.5 * EPS * sources.stacked("abs_max")[rows] * total[:, None]
        bound = own + u / (0.5 * EPS) * own + tiny * sources.stacked("abs_sums")[rows]
    differenced = ~np.isnan(numeric)

    scale = np.max(np.abs(autodiff), axis=1, keepdims=True)
    floor = rounding + ROUNDING_FACTOR * EPS * scale
    reference_band = SAFETY_FACTOR * (error + floor + own)
    band = SAFETY_FACTOR * (floor + bound)
    gap = np.where(differenced, np.abs(numeric - autodiff), 0.0)
    unsettled = ~(gap <= reference_band)
    diff = np.abs(analytic - autodiff)
    # NaN or infinity anywhere in a value shows in every direction: such a
    # quantity is not screened but checked in full.
    finite = np.isfinite(analytic).all(axis=1).tolist()
    mismatched = ~unsettled & ~(diff <= band)
    gap_ratio = _ratio(gap, reference_band)
    diff_ratio = _ratio(diff, band)
    rel = _ratio(diff, np.maximum(np.abs(autodiff), band))
    severity = np.where(unsettled, gap_ratio, diff_ratio)
    # The band of each direction, relative to the directional derivative,
    # and the chance that it lets an error through.
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(autodiff != 0, band / np.abs(autodiff), np.inf)
    miss = np.prod(
        (2 / np.pi) * np.arctan(relative[:, :, None] / np.array(MISS_SIZES)), axis=1
    ).tolist()
    n_mismatched = mismatched.sum(axis=1).tolist()
    n_unsettled = unsettled.sum(axis=1).tolist()
    stats = {
        key: np.max(array, axis=1).tolist()
        for key, array in (
            ("max_abs_discrepancy", diff),
            ("max_rel_discrepancy", rel),
            ("max_reference_gap", gap),
            ("max_band", band),
            ("max_band_ratio", diff_ratio),
            ("max_reference_ratio", gap_ratio),
        )
    }
    relative_band = np.max(relative, axis=1).tolist()
    # Worst first, ties in direction order, as in compare_quantity.
    worst = np.argsort(-severity, axis=1, kind="stable")[:, :DEFAULT_WORST]
    worst_values = [
        np.take_along_axis(array, worst, axis=1).tolist()
        for array in (analytic, numeric, autodiff, band)
    ]
    worst_index = worst.tolist()
    k = analytic.shape[1]
    differences = np.sum(differenced, axis=1).tolist()
    note = f"screened along {k} random directions; entries are directions"

    comparisons: dict[str, QuantityComparison] = {}
    for q, name in enumerate(quantities.names):
        shape = quantities.shapes[q]
        if not finite[q]:
            comparisons[name] = _unscreenable(name, shape, shape)
            continue
        resolved = miss[q][0] <= MAX_MISS
        if n_mismatched[q]:
            verdict = Verdict.FAIL
        elif n_unsettled[q] or not resolved:
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
            worst=tuple(
                Discrepancy(f"{name}<r{i}>", a, n, g, b)
                for i, a, n, g, b in zip(
                    worst_index[q], *(v[q] for v in worst_values), strict=True
                )
            ),
            note=note
            if resolved
            else (
                f"{note}; an error of 1% would slip past them with probability "
                f"{miss[q][0]:.2g}, so it is checked in full"
            ),
            precision=precision[q][2],
        )
        quantities.facts[name] = {
            "screened": True,
            # The screen's own verdict: anything but a pass sends the
            # quantity to the full check, whose verdict is the result's.
            "verdict": str(verdict),
            "directions": k,
            "differenced": differences[q],
            "relative_band": relative_band[q],
            "miss_probability": {
                f"{size:g}": p for size, p in zip(MISS_SIZES, miss[q], strict=True)
            },
        }
    return comparisons


def _unscreenable(
    name: str, shape: tuple[int, ...], given: tuple[int, ...]
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
        note=f"shape {given} or non-finite entries: not screened",
    )
