# SPDX-License-Identifier: MIT
"""Classic mistakes in a hand-written delta rule, for trying gradcheck.

Each public function has the signature of ``gradcheck.delta_rule`` and is a
whole, consistent backprop with one mistake in it: every quantity after
the mistake is computed from the wrong values, as in real buggy code.
Check one with

    nox -s report -- --derivation examples.delta_rule_mistakes:missing_output_slope

and the report names the first wrong quantity: ``theta`` of the output
layer for the missing slope, ``dE/dy`` of the output layer for the flipped
sign, ``theta`` of the highest hidden layer with a skip connection for the
missing skip successors (which is right on networks without skips), and
so on. ``right_backprop`` is the same code with no mistake.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gradcheck import Network, bias_name, required_quantity_names, weight_name


def _sigmoid(s: np.ndarray) -> np.ndarray:
    # exp(-|s|) neither overflows nor loses a saturated unit's tail.
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _backprop(
    network: Network,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    d: np.ndarray,
    eta: float,
    *,
    error_sign: float = 1.0,
    output_slope: bool = True,
    hidden_slope: Callable[[np.ndarray], np.ndarray] = lambda y: y * (1.0 - y),
    skip_successors: bool = True,
    grad_factor: float = 1.0,
    eta_in_update: bool = True,
    intermediates: bool = True,
) -> dict[str, np.ndarray]:
    """The delta rule with a switch per mistake; right with the defaults."""
    y = {0: x}
    for v in range(1, network.n_layers):
        s = sum(y[u] @ params[weight_name(u, v)] for u in network.predecessors(v))
        if network.bias:
            s = s + params[bias_name(v)]
        y[v] = _sigmoid(s)

    out = network.output_layer
    e = error_sign * (d - y[out])
    q = {f"dE/dy[{out}]": -e}
    theta = {}
    for v in range(out, 0, -1):
        if v == out:
            slope = y[v] * (1.0 - y[v])
            theta[v] = e * (slope if output_slope else 1.0)
        else:
            slope = hidden_slope(y[v])
            successors = network.successors(v) if skip_successors else (v + 1,)
            back = sum(theta[o] @ params[weight_name(v, o)].T for o in successors)
            theta[v] = slope * back
        q[f"dy/ds[{v}]"] = slope
        q[f"theta[{v}]"] = theta[v]

        for u in network.predecessors(v):
            grad = -grad_factor * (y[u].T @ theta[v])
            q[f"dE/d{weight_name(u, v)}"] = grad
            q[f"Delta {weight_name(u, v)}"] = -(eta if eta_in_update else 1.0) * grad
        if network.bias:
            q[f"dE/d{bias_name(v)}"] = -theta[v].sum(axis=0)
            q[f"Delta {bias_name(v)}"] = eta * theta[v].sum(axis=0)

    if not intermediates:
        q = {name: q[name] for name in required_quantity_names(network)}
    return q


def right_backprop(network, params, x, d, eta):
    """The delta rule as the document derives it, with no mistake."""
    return _backprop(network, params, x, d, eta)


def missing_output_slope(network, params, x, d, eta):
    """The output error signal without its factor y(1 - y): theta_o = d - y."""
    return _backprop(network, params, x, d, eta, output_slope=False)


def flipped_error_sign(network, params, x, d, eta):
    """The error e = d - y with its sign flipped, so dE/dy = d - y."""
    return _backprop(network, params, x, d, eta, error_sign=-1.0)


def missing_skip_successors(network, params, x, d, eta):
    """Hidden error signals summed over the next layer only, not all of Suc(h)."""
    return _backprop(network, params, x, d, eta, skip_successors=False)


def update_without_eta(network, params, x, d, eta):
    """Delta W = -dE/dW: the learning rate forgotten."""
    return _backprop(network, params, x, d, eta, eta_in_update=False)


def gradient_without_half(network, params, x, d, eta):
    """dE/dW twice too large: the 1/2 in E forgotten."""
    return _backprop(network, params, x, d, eta, grad_factor=2.0)


def hidden_slope_plus(network, params, x, d, eta):
    """A hidden unit's slope written y(1 + y)."""
    return _backprop(network, params, x, d, eta, hidden_slope=lambda y: y * (1.0 + y))


def hidden_slope_plus_gradient_only(network, params, x, d, eta):
    """y(1 + y) again, returning only the gradient of E."""
    return _backprop(
        network,
        params,
        x,
        d,
        eta,
        hidden_slope=lambda y: y * (1.0 + y),
        intermediates=False,
    )
