# SPDX-License-Identifier: MIT
"""Directional screening of a delta-rule derivation.

A full check takes finite differences along every parameter and probe
column. A screen takes them along ``k`` random directions per named
tensor instead, and compares directional derivatives::

    <analytic, r>   against   numeric d/dt E(z + t r)   and   <autodiff, r>

with the same central differences at ``h`` and ``h / 2``, Richardson
extrapolation, error estimate and three-way triage as a full check
(:mod:`gradcheck._compare`): references that disagree make the tensor
inconclusive, never a failure. Autodiff is evaluated once, at the point;
where a full check measures how far rounding moves each reference (the
perturbation trials), a screen estimates it a priori. Whatever does not
pass the screen is checked in full, so the screen decides no failure and
no inconclusive verdict on its own: it only decides what is left out of
the full check.

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

``dy/ds[v]`` is elementwise and cheap, so it is always checked in full.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import jax
import numpy as np
from numpy.typing import NDArray

from gradcheck._compare import (
    DEFAULT_WORST,
    SAFETY_FACTOR,
    Discrepancy,
    QuantityComparison,
    Reference,
    Verdict,
    compare_quantity,
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
from gradcheck._precision import float_eps, is_float_dtype
from gradcheck._references import _autodiff_rows, _Draws
from gradcheck._structured import Point, sigmoid

__all__ = ["MISS_SIZES", "ScreenOutcome", "screen_delta_rule"]

Array = NDArray[np.float64]

# Relative sizes of an error at which the miss probability is recorded.
MISS_SIZES = (1e-2, 1e-4, 1e-6)

# How many standard deviations of the first-order change of the loss under
# the perturbation trials the screen's a-priori noise bound takes.
NOISE_SPREADS = 3.0


@dataclass(frozen=True)
class _Tensor:
    """One tensor that directions are drawn in.

    Attributes:
        key: ``"W[u->v]"``, ``"b[v]"``, ``"s[v]"`` (the probe on a net
            input) or ``"y[o]"`` (the probe on the outputs).
        layer: the layer whose net input (or, for ``y``, output) it moves.
        shape: its shape.
        autodiff: dE with respect to it, by JAX, shaped like it.
        rounding: how far that moves under the perturbation trials.
        scale: the largest magnitude of its entries (0 for probes).
    """

    key: str
    layer: int
    shape: tuple[int, ...]
    autodiff: Array
    rounding: Array
    scale: float


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
    num_slopes = _sigmoid_differences(base["s"], moved, rel_step)

    tensors = _tensors(network, base, moved, batch)
    drawn = _draw_directions(tensors, directions, seed)
    point = Point.at(network, params, x, d)
    numeric = _directional_differences(point, tensors, drawn, moved["loss"], rel_step)

    projections: dict[str, tuple[Array, Array]] = {}
    found: dict[str, QuantityComparison] = {}
    details: dict[str, dict[str, object]] = {}
    screened: list[_Projected] = []
    for name in quantity_names(network):
        if name not in analytic:
            continue
        if name.startswith("dy/ds"):
            v = int(name[6:-1])
            reference = Reference(
                num_slopes[v - 1], base["slopes"][v - 1], moved["slopes"][v - 1]
            )
            found[name] = compare_quantity(
                name, analytic[name], reference, batch_size=batch
            )
            details[name] = {"screened": False}
            continue
        key, factor = _tensor_of(name, eta)
        tensor = tensors[key]
        value = np.asarray(analytic[name])
        if value.shape != tensor.shape or not np.isfinite(value.astype(float)).all():
            found[name] = _unscreenable(name, tensor.shape, value)
            continue
        if key not in projections:
            projections[key] = _project_autodiff(tensor, drawn[key])
        autodiff, rounding = projections[key]
        r = drawn[key].reshape(directions, -1)
        screened.append(
            _Projected(
                name,
                value,
                r @ value.astype(np.float64).reshape(-1),
                numeric[key].scaled(factor),
                factor * autodiff,
                abs(factor) * rounding,
            )
        )

    for item, comparison, facts in zip(
        screened, *_triage(screened, batch), strict=True
    ):
        found[item.name] = comparison
        details[item.name] = facts
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
    batch = x.shape[0]
    draws = _Draws(
        z[None],
        x[None],
        d[None],
        [np.zeros((1, batch, n)) for n in network.sizes[1:]],
        np.zeros((1, batch, network.sizes[-1])),
        np.zeros(1),
    )
    return _autodiff_rows(network, draws)[0]


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
    spread = math.sqrt(
        (
            float(np.sum((base["g_z"] * z) ** 2))
            + float(np.sum((base["g_cols"] * columns) ** 2))
        )
        / 3.0
    )
    bounds: dict[str, object] = {
        "g_z": np.zeros_like(base["g_z"]),
        "g_cols": np.zeros_like(base["g_cols"]),
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
    """Differentiate the sigmoid at every net input, with numpy."""
    estimates = []
    for v, s_v in enumerate(s, start=1):
        h = default_steps(s_v, rel_step)
        points = elementwise_points(s_v, h)
        values = tuple(sigmoid(np.array(p)) for p in points)
        estimates.append(
            combine_elementwise(values, points, h, noise=moved[f"sigma[{v}]"])
        )
    return estimates


def _draw_directions(
    tensors: Mapping[str, _Tensor], directions: int, seed: int
) -> dict[str, Array]:
    """Draw ``directions`` standard normal directions per tensor, in one call."""
    rng = np.random.default_rng(seed)
    sizes = [directions * math.prod(t.shape) for t in tensors.values()]
    flat = rng.standard_normal(sum(sizes))
    drawn, start = {}, 0
    for (key, tensor), size in zip(tensors.items(), sizes, strict=True):
        drawn[key] = flat[start : start + size].reshape(directions, *tensor.shape)
        start += size
    return drawn


@dataclass(frozen=True)
class _Projected:
    """One quantity along its directions, ``(k,)`` per array.

    ``numeric``, ``autodiff`` and ``rounding`` are already the quantity's
    (scaled by ``-eta`` for an update, by -1 for an error signal).
    """

    name: str
    value: Array
    analytic: Array
    numeric: NumericEstimate
    autodiff: Array
    rounding: Array


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
    network: Network, base: dict[str, object], moved: dict[str, object], batch: int
) -> dict[str, _Tensor]:
    """Cut autodiff and its rounding into the tensors directions live in."""
    tensors: dict[str, _Tensor] = {}
    g_z, r_z = base["g_z"], moved["g_z"]
    start = 0
    for name, shape in network.param_shapes().items():
        part = slice(start, start + math.prod(shape))
        layer = int(name[2:-1].split("->")[-1])
        tensors[name] = _Tensor(
            name, layer, shape, g_z[part].reshape(shape), r_z[part].reshape(shape), 0.0
        )
        start = part.stop
    g_cols, r_cols = base["g_cols"], moved["g_cols"]
    start = 0
    for v in range(1, network.n_layers + 1):
        layer = min(v, network.output_layer)
        part = slice(start, start + network.sizes[layer])
        key = f"y[{layer}]" if v == network.n_layers else f"s[{v}]"
        tensors[key] = _Tensor(
            key,
            layer,
            (batch, network.sizes[layer]),
            g_cols[:, part],
            r_cols[:, part],
            0.0,
        )
        start = part.stop
    return tensors


def _directional_differences(
    point: Point,
    tensors: dict[str, _Tensor],
    drawn: dict[str, Array],
    noise: float,
    rel_step: float | None,
) -> dict[str, NumericEstimate]:
    """Differentiate E along every drawn direction, all in a few batches.

    A direction ``r`` of ``W[u->v]`` moves ``s_v`` by ``t * y_u @ r``, one of
    ``b[v]`` or of the probe on ``s_v`` by ``t * r``: every direction of
    every tensor into layer ``v`` is a change of ``s_v``, so each layer's
    directions, at their four steps, go through one batched forward pass
    from ``v`` up. The output probe moves ``y_o`` itself.
    """
    batch = point.batch
    per_layer: dict[int, list[tuple[str, Array, float]]] = {}
    for key, tensor in tensors.items():
        r = drawn[key]
        params = point.params.get(key)
        scale = 0.0 if params is None else float(np.max(np.abs(params)))
        h = float(default_steps(np.array([scale]), rel_step)[0])
        if key.startswith("W"):
            u = int(key[2:-1].split("->")[0])
            q = np.matmul(point.y[u][None], r)
        elif key.startswith("b"):
            q = np.broadcast_to(r[:, None, :], (r.shape[0], batch, r.shape[1]))
        else:
            q = r
        layer = -1 if key.startswith("y") else tensor.layer
        per_layer.setdefault(layer, []).append((key, q, h))

    estimates: dict[str, NumericEstimate] = {}
    for layer, items in per_layer.items():
        q = np.concatenate([item[1] for item in items])
        h = np.concatenate([np.full(item[1].shape[0], item[2]) for item in items])
        shifts = np.concatenate([h, -h, h / 2.0, -h / 2.0])
        ds = (shifts.reshape(4, -1, 1, 1) * q[None]).reshape(-1, *q.shape[1:])
        if layer < 0:
            losses = point.output_shift_losses(ds)
        else:
            losses = point.dense_losses(layer, ds)
        f = losses.sum(axis=1).reshape(4, -1)
        points = tuple(shifts.reshape(4, -1))
        estimate = combine_elementwise(tuple(f), points, h, noise=noise)
        start = 0
        for key, q_item, _ in items:
            part = slice(start, start + q_item.shape[0])
            estimates[key] = NumericEstimate(
                estimate.value[part], estimate.error[part], estimate.step[part]
            )
            start = part.stop
    return estimates


def _project_autodiff(tensor: _Tensor, r: Array) -> tuple[Array, Array]:
    """Return ``<autodiff, r>`` per direction and the rounding allowance of it.

    A right analytic value follows autodiff to its rounding allowance per
    entry (see :mod:`gradcheck._compare`); projected, those allowances add
    up with the weights ``|r|``. The projection's own summation adds a few
    ulps of the sum of the terms' magnitudes.
    """
    k, n = r.shape[0], tensor.autodiff.size
    flat = r.reshape(k, n)
    g = tensor.autodiff.reshape(n)
    floor = ROUNDING_FACTOR * EPS * float(np.max(np.abs(g), initial=0.0))
    autodiff = flat @ g
    weights = np.abs(flat)
    rounding = floor * weights.sum(axis=1)
    if tensor.rounding.any():
        rounding += weights @ tensor.rounding.reshape(n)
    magnitude = weights @ np.abs(g)
    return autodiff, rounding + (math.log2(n) + 2.0) * EPS * magnitude


def _triage(
    items: list[_Projected], batch: int
) -> tuple[list[QuantityComparison], list[dict[str, object]]]:
    """Compare every screened quantity along its directions.

    The rules are :func:`gradcheck._compare.compare_quantity`'s, applied to
    the ``(k,)`` directional values; float64 quantities are triaged
    together in a few array operations, since one call per quantity costs
    more than the rest of a screen of a small network. A quantity in a
    lower precision goes through ``compare_quantity`` itself, which holds
    it to its own precision.
    """
    if not items:
        return [], []
    numeric = np.stack([i.numeric.value for i in items])
    error = np.stack([i.numeric.error for i in items])
    autodiff = np.stack([i.autodiff for i in items])
    rounding = np.stack([i.rounding for i in items])
    analytic = np.stack([i.analytic for i in items])
    scale = np.max(np.abs(autodiff), axis=1, keepdims=True)
    floor = rounding + ROUNDING_FACTOR * EPS * scale
    band = SAFETY_FACTOR * (error + floor)
    gap = np.abs(numeric - autodiff)
    unsettled = ~(gap <= band)
    diff = np.abs(analytic - autodiff)
    mismatched = ~unsettled & ~(diff <= band)
    unresolved = ~unsettled & ~mismatched & ~(diff <= SAFETY_FACTOR * floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap_ratio = np.where(gap == 0, 0.0, gap / band)
        diff_ratio = np.where(diff == 0, 0.0, diff / band)
        rel = np.where(diff == 0, 0.0, diff / np.maximum(np.abs(autodiff), band))
        # The band of each direction, relative to the directional derivative.
        relative = np.where(autodiff != 0, band / np.abs(autodiff), np.inf)
    gap_ratio, diff_ratio, rel = (
        np.where(np.isnan(a), np.inf, a) for a in (gap_ratio, diff_ratio, rel)
    )
    severity = np.where(unsettled, gap_ratio, diff_ratio)
    miss = {
        f"{size:g}": np.prod((2 / np.pi) * np.arctan(relative / size), axis=1)
        for size in MISS_SIZES
    }

    comparisons, facts = [], []
    for q, item in enumerate(items):
        facts.append(
            {
                "screened": True,
                "directions": int(item.analytic.size),
                "relative_band": float(np.max(relative[q])),
                "miss_probability": {k: float(v[q]) for k, v in miss.items()},
            }
        )
        dtype = item.value.dtype
        if is_float_dtype(dtype) and float_eps(dtype) > EPS:
            comparison = compare_quantity(
                item.name,
                item.analytic.astype(item.value.dtype),
                Reference(item.numeric, item.autodiff, item.rounding),
                batch_size=batch,
            )
            comparisons.append(
                replace(comparison, shape=item.value.shape, signature=None, worst=())
            )
            continue
        if mismatched[q].any():
            verdict = Verdict.FAIL
        elif unsettled[q].any() or unresolved[q].any():
            verdict = Verdict.INCONCLUSIVE
        else:
            verdict = Verdict.PASS
        order = np.argsort(-severity[q], kind="stable")[:DEFAULT_WORST]
        worst = tuple(
            Discrepancy(
                name=f"{item.name}<r{k}>",
                analytic=float(analytic[q, k]),
                numeric=float(numeric[q, k]),
                autodiff=float(autodiff[q, k]),
                band=float(band[q, k]),
            )
            for k in order
        )
        comparisons.append(
            QuantityComparison(
                name=item.name,
                verdict=verdict,
                shape=tuple(item.value.shape),
                n_mismatched=int(mismatched[q].sum()),
                n_unsettled=int((unsettled[q] | unresolved[q]).sum()),
                max_abs_discrepancy=float(diff[q].max()),
                max_rel_discrepancy=float(rel[q].max()),
                max_reference_gap=float(gap[q].max()),
                max_band=float(band[q].max()),
                max_band_ratio=float(diff_ratio[q].max()),
                max_reference_ratio=float(gap_ratio[q].max()),
                worst=worst,
                note=(
                    f"screened along {item.analytic.size} random directions; "
                    "entries are directions"
                ),
            )
        )
    return comparisons, facts


def _unscreenable(
    name: str, shape: tuple[int, ...], value: Array
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
