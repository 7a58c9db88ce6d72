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

import numpy as np
from numpy.typing import NDArray

from gradcheck._delta_rule import _sigmoid, quantity_names
from gradcheck._networks import Network, bias_name, weight_name

__all__ = ["delta_rule_error_bounds"]

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
    absw = {name: np.abs(w) for name, w in params.items()}
    out = network.output_layer

    # Forward pass, with the error of each net input and output.
    y: dict[int, Array] = {0: x}
    err_y: dict[int, Array] = {0: np.abs(x)}
    for v in range(1, network.n_layers):
        preds = network.predecessors(v)
        s = sum(y[u] @ params[weight_name(u, v)] for u in preds)
        magnitude = sum(np.abs(y[u]) @ absw[weight_name(u, v)] for u in preds)
        n_terms = sum(network.sizes[u] for u in preds)
        if network.bias:
            s = s + params[bias_name(v)]
            magnitude = magnitude + absw[bias_name(v)]
            n_terms += 1
        # Each product and each addition rounds (n_terms of each), and the
        # weights themselves are rounded: sqrt(n_terms + 1) u per magnitude.
        err_s = np.sqrt(n_terms + 1) * magnitude + sum(
            err_y[u] @ absw[weight_name(u, v)] for u in preds
        )
        y[v] = _sigmoid(s)
        slope = y[v] * (1.0 - y[v])
        err_y[v] = slope * err_s + SIGMOID_OPERATIONS * np.abs(y[v])

    bounds: dict[str, Array] = {}
    theta: dict[int, Array] = {}
    err_theta: dict[int, Array] = {}

    # dE/dy = y - d; the target is rounded too.
    dedy = y[out] - d
    err_dedy = err_y[out] + np.abs(d) + np.abs(dedy)
    bounds[f"dE/dy[{out}]"] = err_dedy
    for v in range(out, 0, -1):
        yv = y[v]
        one_minus = 1.0 - yv
        slope = yv * one_minus
        # 1 - y cancels: its error is y's error, whatever its own size.
        err_one_minus = err_y[v] + np.abs(one_minus)
        err_slope = (
            np.abs(yv) * err_one_minus + np.abs(one_minus) * err_y[v] + np.abs(slope)
        )
        bounds[f"dy/ds[{v}]"] = err_slope
        if v == out:
            theta[v] = -dedy * slope
            err_theta[v] = (
                np.abs(dedy) * err_slope + np.abs(slope) * err_dedy + np.abs(theta[v])
            )
        else:
            succs = network.successors(v)
            back = sum(theta[o] @ params[weight_name(v, o)].T for o in succs)
            magnitude = sum(np.abs(theta[o]) @ absw[weight_name(v, o)].T for o in succs)
            n_terms = sum(network.sizes[o] for o in succs)
            err_back = np.sqrt(n_terms + 1) * magnitude + sum(
                err_theta[o] @ absw[weight_name(v, o)].T for o in succs
            )
            theta[v] = slope * back
            err_theta[v] = (
                np.abs(slope) * err_back + np.abs(back) * err_slope + np.abs(theta[v])
            )
        bounds[f"theta[{v}]"] = err_theta[v]

        batch = x.shape[0]
        for u in network.predecessors(v):
            name = weight_name(u, v)
            grad = np.abs(y[u]).T @ np.abs(theta[v])
            err = (
                err_y[u].T @ np.abs(theta[v])
                + np.abs(y[u]).T @ err_theta[v]
                + np.sqrt(batch + 1) * grad
            )
            bounds[f"dE/d{name}"] = err
            bounds[f"Delta {name}"] = eta * err + 2.0 * eta * grad
        if network.bias:
            name = bias_name(v)
            total = np.abs(theta[v]).sum(axis=0)
            err = err_theta[v].sum(axis=0) + np.sqrt(batch) * total
            bounds[f"dE/d{name}"] = err
            bounds[f"Delta {name}"] = eta * err + 2.0 * eta * total

    return {name: bounds[name] for name in quantity_names(network)}
