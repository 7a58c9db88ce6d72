# SPDX-License-Identifier: MIT
"""The delta rule of the source document, as readable numpy code.

This module is deliberately independent of JAX: it is the analytic
derivation under test, written the way a person derives it by hand. Each
step of the derivation is returned under its own name, so that each can be
checked on its own:

==================  ===================  ======================================
name                shape                formula
==================  ===================  ======================================
``dE/dy[o]``        ``(batch, n_o)``     ``-(d - y_o)``, output layer only
``dy/ds[v]``        ``(batch, n_v)``     ``y_v (1 - y_v)``
``theta[v]``        ``(batch, n_v)``     output: ``(d - y_o) y_o (1 - y_o)``;
                                         hidden: ``y_h (1 - y_h) *
                                         sum_{o in Suc(h)} theta_o W[h,o]``
``dE/dW[u->v]``     ``(n_u, n_v)``       ``-sum_batch y_u theta_v``
``dE/db[v]``        ``(n_v,)``           ``-sum_batch theta_v``
``Delta W[u->v]``   ``(n_u, n_v)``       ``eta sum_batch y_u theta_v``
``Delta b[v]``      ``(n_v,)``           ``eta sum_batch theta_v``
==================  ===================  ======================================

Every other implementation of the derivation (see :func:`delta_rule` for the
call signature) returns the same names; only ``dE/dW`` and ``dE/db`` are
required, the intermediate quantities are checked when present.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from gradcheck._networks import Network, bias_name, weight_name

__all__ = [
    "QUANTITY_KINDS",
    "delta_rule",
    "quantity_names",
    "required_quantity_names",
]

Array = NDArray[np.float64]

# The kinds of named quantity, in the document's order; a quantity's name is
# its kind followed by its layer, for example ``theta[2]`` or ``dE/dW[0->1]``.
QUANTITY_KINDS = ("dE/dy", "dy/ds", "theta", "dE/dW", "dE/db", "Delta W", "Delta b")


def quantity_names(network: Network) -> list[str]:
    """Return every named quantity of the derivation, in the document's order.

    The order is the one in which the derivation computes them: the output
    layer first (``dE/dy``, ``dy/ds``, ``theta``, the weight gradient and
    update), then each hidden layer from the top down. A mistake in one
    quantity spreads to those after it, so the first wrong one in this order
    is where the derivation first goes wrong.
    """
    return list(_quantity_names(network))


@functools.lru_cache(maxsize=256)
def _quantity_names(network: Network) -> tuple[str, ...]:
    names = [f"dE/dy[{network.output_layer}]"]
    for v in range(network.output_layer, 0, -1):
        names += [f"dy/ds[{v}]", f"theta[{v}]"]
        grads = [f"dE/d{weight_name(u, v)}" for u in network.predecessors(v)]
        updates = [f"Delta {weight_name(u, v)}" for u in network.predecessors(v)]
        if network.bias:
            grads.append(f"dE/d{bias_name(v)}")
            updates.append(f"Delta {bias_name(v)}")
        names += grads + updates
    return tuple(names)


def required_quantity_names(network: Network) -> list[str]:
    """Return the names every implementation must return: the gradient of E."""
    return [f"dE/d{name}" for name in network.param_shapes()]


def _sigmoid(s: Array) -> Array:
    # exp of minus |s| never overflows, and each branch divides without
    # cancellation, so a saturated unit keeps its tiny tail value
    # (sigma(-40) = 4.2e-18, not 0). The form 0.5 * (1 + tanh(s / 2))
    # loses it: 1 + tanh cancels to the last bit.
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def delta_rule(
    network: Network,
    params: Mapping[str, Array],
    x: Array,
    d: Array,
    eta: float,
) -> dict[str, Array]:
    """Compute the gradient of E by the document's delta rule.

    This is the call signature every implementation of the derivation
    shares, so that ``--derivation module:function`` can check another one.

    Args:
        network: the architecture: ``network.sizes``, ``network.bias``,
            ``network.predecessors(v)`` and ``network.successors(h)``.
        params: ``"W[u->v]"`` of shape ``(n_u, n_v)`` and ``"b[v]"`` of shape
            ``(n_v,)``, float64.
        x: inputs, shape ``(batch, n_0)``.
        d: targets in [0, 1], shape ``(batch, n_out)``.
        eta: the learning rate of the update ``Delta W = -eta dE/dW``.

    Returns:
        The named quantities of the module docstring, as float64 arrays.
    """
    out = network.output_layer

    # Forward pass: y[v] = sigma(s_v), s_v = sum over Pred(v) of y_u W[u,v].
    y: dict[int, Array] = {0: x}
    for v in range(1, network.n_layers):
        s = sum(y[u] @ params[weight_name(u, v)] for u in network.predecessors(v))
        if network.bias:
            s = s + params[bias_name(v)]
        y[v] = _sigmoid(s)

    q: dict[str, Array] = {}
    theta: dict[int, Array] = {}

    # Output layer: theta_o = -dE/dy_o * dy_o/ds_o = (d_o - y_o) y_o (1 - y_o).
    q[f"dE/dy[{out}]"] = -(d - y[out])
    for v in range(out, 0, -1):
        dy_ds = y[v] * (1.0 - y[v])
        if v == out:
            theta[v] = -q[f"dE/dy[{out}]"] * dy_ds
        else:
            # Hidden layer: the error flows back from every successor,
            # skip connections included.
            back = sum(
                theta[o] @ params[weight_name(v, o)].T for o in network.successors(v)
            )
            theta[v] = dy_ds * back
        q[f"dy/ds[{v}]"] = dy_ds
        q[f"theta[{v}]"] = theta[v]

        # dE/dW[u,v] = -theta_v y_u and Delta W[u,v] = eta theta_v y_u,
        # summed over the examples of the batch.
        for u in network.predecessors(v):
            name = weight_name(u, v)
            q[f"dE/d{name}"] = -(y[u].T @ theta[v])
            q[f"Delta {name}"] = eta * (y[u].T @ theta[v])
        if network.bias:
            q[f"dE/d{bias_name(v)}"] = -theta[v].sum(axis=0)
            q[f"Delta {bias_name(v)}"] = eta * theta[v].sum(axis=0)

    return {name: q[name] for name in quantity_names(network)}
