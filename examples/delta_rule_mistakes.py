# SPDX-License-Identifier: MIT
"""Three classic mistakes in a hand-written delta rule, for trying gradcheck.

Each function has the signature of ``gradcheck.delta_rule`` and is a whole,
consistent backprop with one mistake in it, so the mistake spreads to
every quantity computed after it, as it would in real code. Check one with

    nox -s report -- --derivation examples.delta_rule_mistakes:missing_output_slope

and the report names the first wrong quantity: ``theta`` of the output
layer for the missing slope, ``dE/dy`` of the output layer for the sign,
and ``theta`` of the highest hidden layer with a skip connection for the
missing skip successors (which is right on networks without skips).
"""

from __future__ import annotations

import numpy as np

from gradcheck import Network, bias_name, weight_name


def _backprop(
    network: Network,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    d: np.ndarray,
    eta: float,
    *,
    output_slope: bool = True,
    error_sign: float = 1.0,
    skip_successors: bool = True,
) -> dict[str, np.ndarray]:
    y = {0: x}
    for v in range(1, network.n_layers):
        s = sum(y[u] @ params[weight_name(u, v)] for u in network.predecessors(v))
        if network.bias:
            s = s + params[bias_name(v)]
        e = np.exp(-np.abs(s))  # a sigmoid that neither overflows nor underflows
        y[v] = np.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    out = network.output_layer
    q = {f"dE/dy[{out}]": -error_sign * (d - y[out])}
    theta = {}
    for v in range(out, 0, -1):
        slope = y[v] * (1.0 - y[v])
        if v == out:
            theta[v] = -q[f"dE/dy[{out}]"] * (slope if output_slope else 1.0)
        else:
            successors = network.successors(v) if skip_successors else (v + 1,)
            back = sum(theta[o] @ params[weight_name(v, o)].T for o in successors)
            theta[v] = slope * back
        q[f"dy/ds[{v}]"] = slope
        q[f"theta[{v}]"] = theta[v]
        for u in network.predecessors(v):
            q[f"dE/d{weight_name(u, v)}"] = -(y[u].T @ theta[v])
            q[f"Delta {weight_name(u, v)}"] = eta * (y[u].T @ theta[v])
        if network.bias:
            q[f"dE/d{bias_name(v)}"] = -theta[v].sum(axis=0)
            q[f"Delta {bias_name(v)}"] = eta * theta[v].sum(axis=0)
    return q


def missing_output_slope(network, params, x, d, eta):
    """The output error signal without its factor y(1 - y): theta_o = d - y."""
    return _backprop(network, params, x, d, eta, output_slope=False)


def flipped_error_sign(network, params, x, d, eta):
    """The error e = d - y with its sign flipped, so dE/dy = d - y."""
    return _backprop(network, params, x, d, eta, error_sign=-1.0)


def missing_skip_successors(network, params, x, d, eta):
    """Hidden error signals summed over the next layer only, not all of Suc(h)."""
    return _backprop(network, params, x, d, eta, skip_successors=False)
