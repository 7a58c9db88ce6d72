# SPDX-License-Identifier: MIT
"""The delta rule's loss in numpy, vectorised over many points, any dtype.

The extra references (complex step, Taylor remainders, step sweeps) need
the loss at a few hundred points for a network of a few dozen parameters.
A numpy forward pass over all of them at once costs well under a
millisecond and compiles nothing, and with complex parameters it carries
the complex step: ``1 / (1 + exp(-s))`` is analytic.

The points are rows of a flat parameter vector (the order of
``Network.param_shapes``) and, optionally, rows of probe columns: one
shift per unit of every non-input layer, then one per output, added to
that unit in every example (see :mod:`gradcheck._references`). Examples do
not interact, so each example's loss measures its own derivative.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from gradcheck._networks import Network, bias_name, weight_name

__all__ = ["flat_params", "n_probe_columns", "param_offsets", "row_losses", "sigmoid"]


def n_probe_columns(network: Network) -> int:
    """Return the number of probe columns: every non-input unit, then outputs."""
    return sum(network.sizes[1:]) + network.sizes[-1]


def param_offsets(network: Network) -> dict[str, slice]:
    """Return where each parameter lies in the flat vector."""
    offsets, start = {}, 0
    for name, shape in network.param_shapes().items():
        offsets[name] = slice(start, start + math.prod(shape))
        start += math.prod(shape)
    return offsets


def flat_params(network: Network, params: dict) -> NDArray[np.float64]:
    """Return the parameters as one flat float64 vector, shape ``(P,)``."""
    return np.concatenate(
        [np.ravel(params[name]).astype(np.float64) for name in network.param_shapes()]
    )


def sigmoid(s: NDArray) -> NDArray:
    """Return ``1 / (1 + exp(-s))`` for real or complex ``s``, without overflow.

    For ``Re s < 0`` the equal form ``exp(s) / (1 + exp(s))`` keeps the
    exponential below one, so saturated units give 0 or 1, never NaN.
    """
    negative = np.real(s) < 0
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(np.where(negative, s, -s))
        return np.where(negative, e / (1.0 + e), 1.0 / (1.0 + e))


def row_losses(
    network: Network,
    z: NDArray,
    x: NDArray[np.float64],
    d: NDArray[np.float64],
    columns: NDArray | None = None,
) -> NDArray:
    """Return each example's loss at each row, shape ``(R, batch)``.

    Args:
        network: the architecture.
        z: parameters, shape ``(R, P)``, float64 or complex128.
        x: inputs, shape ``(batch, n_0)``.
        d: targets, shape ``(batch, n_out)``.
        columns: probe shifts, shape ``(R, n_probe_columns)``, or ``None``.

    Returns:
        ``1/2 * sum_k (d_k - y_k)^2`` per row and example, in ``z``'s dtype
        (complex when either ``z`` or ``columns`` is complex).
    """
    rows = z.shape[0]
    offsets = param_offsets(network)
    shapes = network.param_shapes()

    def param(name: str) -> NDArray:
        return z[:, offsets[name]].reshape((rows,) + shapes[name])

    y_all = [np.broadcast_to(x, (rows,) + x.shape)]
    start = 0
    for v in range(1, network.n_layers):
        s = sum(y_all[u] @ param(weight_name(u, v)) for u in network.predecessors(v))
        if network.bias:
            s = s + param(bias_name(v))[:, None, :]
        n = network.sizes[v]
        if columns is not None:
            s = s + columns[:, None, start : start + n]
        start += n
        y_all.append(sigmoid(s))
    y = y_all[-1]
    if columns is not None:
        y = y + columns[:, None, start:]
    return 0.5 * np.sum((d - y) ** 2, axis=-1)
