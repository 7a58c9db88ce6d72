# SPDX-License-Identifier: MIT
"""How far a lower-precision computation of the delta rule may be off.

A derivation computed in float32 (or bfloat16) is held to its own
precision. Scaling the float64 rounding allowance by the ratio of the
epsilons misses what makes low precision lose most: cancellation between
terms much larger than their result. A sigmoid output ``y`` near 1 is
rounded to ``eps * |y|``, so ``1 - y``, and with it the slope
``y (1 - y)``, is known only to ``eps * |y|``, not to ``eps * |1 - y|``:
in float32 a unit at ``s = 17`` has slope 4e-8 but ``1 - y`` rounds to 0.

This module bounds the error of a computation with unit roundoff ``u``
(half the dtype's epsilon: ``|fl(a op b) - a op b| <= u |a op b|``) entry
by entry, to first order, by running error analysis over the delta
rule's own steps: each rounded operation adds ``u`` times the magnitude
of its result, a sum of ``n`` terms adds ``sqrt(n) * u`` times the sum
of the terms' magnitudes, and errors already present propagate through
the same operations with absolute values. The ``sqrt(n)`` is the
probabilistic model of rounding (Higham and Mary, 2019): independent
rounding errors of a sum grow like ``sqrt(n) u`` except with a
probability that falls exponentially in the safety factor; the worst case
``n u`` is reached only by errors that all round the same way, and would
widen a bfloat16 band past any mistake worth finding. The bounds come
out in units of ``u`` (they are linear in it), so one computation serves
every dtype: the band
of a quantity computed in a dtype adds that dtype's ``u`` times its bound
(see :func:`gradcheck._compare.compare_quantity`).

The count of operations is the only constant: the sigmoid costs three
(an exponential, an addition and a division).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gradcheck._delta_rule import _sigmoid, quantity_names
from gradcheck._networks import Network, bias_name, weight_name
from gradcheck._structured import workspace

__all__ = ["delta_rule_error_bounds", "delta_rule_error_totals", "net_input_magnitudes"]

Array = NDArray[np.float64]

# Rounded operations in one evaluation of the sigmoid: exp, 1 + e, divide.
SIGMOID_OPERATIONS = 3


def delta_rule_error_bounds(
    network: Network,
    params: Mapping[str, Array],
    x: Array,
    d: Array,
    eta: float,
) -> dict[str, Array]:
    """Bound the error of every named quantity computed with unit roundoff ``u``.

    The inputs, parameters and targets are taken as rounded to the
    precision too (each off by ``u`` of itself).

    Args:
        network, params, x, d, eta: as for
            :func:`gradcheck.compare_delta_rule`, in float64.

    Returns:
        Per quantity name, an array of its shape: the first-order error
        bound in units of ``u``.
    """
    run = _RunningErrors.of(network, params, x, d)
    bounds = dict(run.elementwise)
    batch = x.shape[0]
    for v in range(network.output_layer, 0, -1):
        theta, err_theta = run.theta[v], run.err_theta[v]
        for u in network.predecessors(v):
            name = weight_name(u, v)
            grad = np.abs(run.y[u]).T @ np.abs(theta)
            err = (
                run.err_y[u].T @ np.abs(theta)
                + np.abs(run.y[u]).T @ err_theta
                + np.sqrt(batch + 1) * grad
            )
            bounds[f"dE/d{name}"] = err
            bounds[f"Delta {name}"] = eta * err + 2.0 * eta * grad
        if network.bias:
            name = bias_name(v)
            total = np.abs(theta).sum(axis=0)
            err = err_theta.sum(axis=0) + np.sqrt(batch) * total
            bounds[f"dE/d{name}"] = err
            bounds[f"Delta {name}"] = eta * err + 2.0 * eta * total
    return {name: bounds[name] for name in quantity_names(network)}


def delta_rule_error_totals(
    network: Network,
    params: Mapping[str, Array],
    x: Array,
    d: Array,
    eta: float,
    outputs: list[Array] | None = None,
) -> dict[str, float]:
    """Sum the bounds of :func:`delta_rule_error_bounds` over each quantity.

    A projection ``<r, q>`` of a quantity computed with unit roundoff
    ``u`` is off by at most ``u * max |r| * total``. The totals of the
    weight gradients come from row sums, ``sum_ij (|a|^T |b|)_ij = sum_k
    (sum_i |a_ki|) (sum_j |b_kj|)``, without forming their matrices, so
    they cost a fraction of the derivation.

    Args:
        network, params, x, d, eta: as for
            :func:`delta_rule_error_bounds`.
        outputs: each non-input layer's output at the point, when known.

    Returns:
        The total per quantity name.
    """
    run = _RunningErrors.of(network, params, x, d, outputs)
    totals = {name: float(np.sum(b)) for name, b in run.elementwise.items()}
    batch = x.shape[0]
    sums_y = {u: np.abs(y).sum(axis=1) for u, y in run.y.items()}
    sums_err_y = {u: e.sum(axis=1) for u, e in run.err_y.items()}
    for v in range(network.output_layer, 0, -1):
        theta_sums = np.abs(run.theta[v]).sum(axis=1)
        err_theta_sums = run.err_theta[v].sum(axis=1)
        for u in network.predecessors(v):
            name = weight_name(u, v)
            grad = float(sums_y[u] @ theta_sums)
            err = (
                float(sums_err_y[u] @ theta_sums)
                + float(sums_y[u] @ err_theta_sums)
                + np.sqrt(batch + 1) * grad
            )
            totals[f"dE/d{name}"] = err
            totals[f"Delta {name}"] = eta * err + 2.0 * eta * grad
        if network.bias:
            name = bias_name(v)
            total = float(theta_sums.sum())
            err = float(err_theta_sums.sum()) + np.sqrt(batch) * total
            totals[f"dE/d{name}"] = err
            totals[f"Delta {name}"] = eta * err + 2.0 * eta * total
    return {name: totals[name] for name in quantity_names(network)}


@dataclass(frozen=True)
class _RunningErrors:
    """The delta rule's forward and backward pass with the bound of each step.

    Attributes:
        y: output per layer, ``y[0]`` the input.
        err_y: the error bound of each output, in units of ``u``.
        theta: the error signal per non-input layer.
        err_theta: its error bound.
        elementwise: the bounds of ``dE/dy``, ``dy/ds`` and ``theta``, by
            name.
    """

    y: dict[int, Array]
    err_y: dict[int, Array]
    theta: dict[int, Array]
    err_theta: dict[int, Array]
    elementwise: dict[str, Array]

    @classmethod
    def of(
        cls,
        network: Network,
        params: Mapping[str, Array],
        x: Array,
        d: Array,
        outputs: list[Array] | None = None,
    ) -> _RunningErrors:
        """Run the bounds; ``outputs`` are each non-input layer's, if known."""
        absw = _magnitudes_of(params)
        out = network.output_layer
        y: dict[int, Array] = {0: x}
        for v in range(1, network.n_layers):
            if outputs is None:
                preds = network.predecessors(v)
                s = sum(y[u] @ params[weight_name(u, v)] for u in preds)
                if network.bias:
                    s = s + params[bias_name(v)]
                y[v] = _sigmoid(s)
            else:
                y[v] = outputs[v - 1]
        magnitudes = _net_input_magnitudes(network, absw, y)

        # Forward pass, with the error of each net input and output.
        err_y: dict[int, Array] = {0: np.abs(x)}
        for v in range(1, network.n_layers):
            preds = network.predecessors(v)
            n_terms = sum(network.sizes[u] for u in preds) + int(network.bias)
            # Each product and each addition rounds (n_terms of each), and
            # the weights themselves are rounded: sqrt(n_terms + 1) u per
            # magnitude.
            err_s = np.sqrt(n_terms + 1) * magnitudes[v] + sum(
                err_y[u] @ absw[weight_name(u, v)] for u in preds
            )
            slope = y[v] * (1.0 - y[v])
            err_y[v] = slope * err_s + SIGMOID_OPERATIONS * np.abs(y[v])

        elementwise: dict[str, Array] = {}
        theta: dict[int, Array] = {}
        err_theta: dict[int, Array] = {}

        # dE/dy = y - d; the target is rounded too.
        dedy = y[out] - d
        err_dedy = err_y[out] + np.abs(d) + np.abs(dedy)
        elementwise[f"dE/dy[{out}]"] = err_dedy
        for v in range(out, 0, -1):
            yv = y[v]
            one_minus = 1.0 - yv
            slope = yv * one_minus
            # 1 - y cancels: its error is y's error, whatever its own size.
            err_one_minus = err_y[v] + np.abs(one_minus)
            err_slope = (
                np.abs(yv) * err_one_minus
                + np.abs(one_minus) * err_y[v]
                + np.abs(slope)
            )
            elementwise[f"dy/ds[{v}]"] = err_slope
            if v == out:
                theta[v] = -dedy * slope
                err_theta[v] = (
                    np.abs(dedy) * err_slope
                    + np.abs(slope) * err_dedy
                    + np.abs(theta[v])
                )
            else:
                succs = network.successors(v)
                back = sum(theta[o] @ params[weight_name(v, o)].T for o in succs)
                magnitude = sum(
                    np.abs(theta[o]) @ absw[weight_name(v, o)].T for o in succs
                )
                n_terms = sum(network.sizes[o] for o in succs)
                err_back = np.sqrt(n_terms + 1) * magnitude + sum(
                    err_theta[o] @ absw[weight_name(v, o)].T for o in succs
                )
                theta[v] = slope * back
                err_theta[v] = (
                    np.abs(slope) * err_back
                    + np.abs(back) * err_slope
                    + np.abs(theta[v])
                )
            elementwise[f"theta[{v}]"] = err_theta[v]
        return cls(y, err_y, theta, err_theta, elementwise)


def _magnitudes_of(params: Mapping[str, Array]) -> dict[str, Array]:
    # Kept working arrays: the magnitudes of a large network's weights are
    # megabytes, freshly faulted in on every call otherwise.
    return {
        name: np.abs(w, out=workspace(f"abs {name}", w.shape))
        for name, w in params.items()
    }


def _net_input_magnitudes(
    network: Network, absw: Mapping[str, Array], y: Mapping[int, Array]
) -> dict[int, Array]:
    """Return ``sum_u |y_u| @ |W[u->v]| + |b[v]|`` per non-input layer ``v``."""
    magnitudes = {}
    for v in range(1, network.n_layers):
        magnitude = sum(
            np.abs(y[u]) @ absw[weight_name(u, v)] for u in network.predecessors(v)
        )
        if network.bias:
            magnitude = magnitude + absw[bias_name(v)]
        magnitudes[v] = magnitude
    return magnitudes


def net_input_magnitudes(
    network: Network, params: Mapping[str, Array], outputs: list[Array], x: Array
) -> dict[int, Array]:
    """Sum the magnitudes of the terms of each net input.

    Args:
        network: the architecture.
        params: its parameters.
        outputs: each non-input layer's output at the point.
        x: the inputs.

    Returns:
        Per non-input layer ``v``, ``sum_u |y_u| @ |W[u->v]| + |b[v]|``:
        how far rounding may move ``s_v``, in units of the unit roundoff,
        before its own.
    """
    y = {0: x, **{v: out for v, out in enumerate(outputs, start=1)}}
    return _net_input_magnitudes(network, _magnitudes_of(params), y)
