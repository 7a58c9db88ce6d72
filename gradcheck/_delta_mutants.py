# SPDX-License-Identifier: MIT
"""The delta rule written step by step, and classic mistakes in it.

:class:`Backprop` is the document's derivation as a person writes it out:
the forward pass, then one method per step (``dE/dy``, the slope
``dy/ds``, the error signals ``theta``, the gradient, the update). It
returns the same named quantities as :func:`gradcheck.delta_rule` and
agrees with it to the last bit.

Each mistake is a subclass that writes one step the wrong way, with its
own formula; every later step then runs on the wrong values, as in real
buggy code. None of them looks at the right answer: a mutant is a
derivation, not a perturbation of one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from gradcheck._delta_rule import _sigmoid, quantity_names
from gradcheck._networks import Network, bias_name, weight_name

__all__ = ["Backprop", "DELTA_RULE_MUTANTS"]

Array = NDArray[np.float64]


class Backprop:
    """The delta rule of the document, one method per step.

    Calling an instance has the signature of :func:`gradcheck.delta_rule`.
    The state of one call (``network``, ``params``, ``y``, ``s``, ``eta``,
    the error signals ``theta`` and the updates ``delta``) lives on a
    fresh copy of the instance, so instances can be shared and reused.
    """

    def __call__(
        self,
        network: Network,
        params: Mapping[str, Array],
        x: Array,
        d: Array,
        eta: float,
    ) -> dict[str, Array]:
        run = type(self).__new__(type(self))
        run.__dict__.update(self.__dict__)
        return run._derive(network, params, x, d, eta)

    def _derive(self, network, params, x, d, eta) -> dict[str, Array]:
        self.network, self.params, self.eta = network, params, eta
        self.forward(x)
        out = network.output_layer
        self.theta: dict[int, Array] = {}
        self.delta: dict[str, Array] = {}
        q: dict[str, Array] = {}

        q[f"dE/dy[{out}]"] = self.error_derivative(d, self.y[out])
        for v in range(out, 0, -1):
            slope = self.slope(v)
            if v == out:
                self.theta[v] = self.output_theta(q[f"dE/dy[{out}]"], slope)
            else:
                self.theta[v] = self.hidden_theta(slope, self.hidden_sum(v))
            q[f"dy/ds[{v}]"] = slope
            q[f"theta[{v}]"] = self.theta[v]

            for u in network.predecessors(v):
                name = weight_name(u, v)
                q[f"dE/d{name}"] = self.weight_gradient(u, v)
                self.delta[name] = self.weight_update(u, v, q[f"dE/d{name}"])
                q[f"Delta {name}"] = self.delta[name]
            if network.bias:
                grad = self.bias_gradient(v)
                q[f"dE/d{bias_name(v)}"] = grad
                q[f"Delta {bias_name(v)}"] = -eta * grad
        return {name: q[name] for name in quantity_names(network)}

    # The forward pass: s_v = sum over Pred(v) of y_u W[u,v] + b_v, y = sigma(s).
    def forward(self, x: Array) -> None:
        network, params = self.network, self.params
        self.y: dict[int, Array] = {0: x}
        self.s: dict[int, Array] = {}
        for v in range(1, network.n_layers):
            s = sum(y_u @ params[weight_name(u, v)] for u, y_u in self._inputs(v))
            if network.bias:
                s = s + params[bias_name(v)]
            self.s[v] = s
            self.y[v] = _sigmoid(s)

    def _inputs(self, v: int) -> list[tuple[int, Array]]:
        return [(u, self.y[u]) for u in self.network.predecessors(v)]

    # dE/dy_o = -(d_o - y_o), from E = 1/2 sum e^2 with e = d - y.
    def error_derivative(self, d: Array, y_out: Array) -> Array:
        e = d - y_out
        return -e

    # dy/ds = sigma'(s) = sigma(s) (1 - sigma(s)) = y (1 - y).
    def slope(self, v: int) -> Array:
        y = self.y[v]
        return y * (1.0 - y)

    # theta_o = -dE/dy_o * dy_o/ds_o.
    def output_theta(self, de_dy: Array, slope: Array) -> Array:
        return -de_dy * slope

    # sum over o in Suc(h) of theta_o W[h,o].
    def hidden_sum(self, h: int) -> Array:
        return sum(
            self.theta[o] @ self.successor_weight(h, o).T for o in self.successors(h)
        )

    # theta_h = y_h (1 - y_h) * sum over o in Suc(h) of theta_o W[h,o].
    def hidden_theta(self, slope: Array, back: Array) -> Array:
        return slope * back

    def successors(self, h: int) -> tuple[int, ...]:
        return self.network.successors(h)

    def successor_weight(self, h: int, o: int) -> Array:
        return self.params[weight_name(h, o)]

    # dE/dW[u,v] = -theta_v y_u, summed over the examples.
    def weight_gradient(self, u: int, v: int) -> Array:
        return -(self.y[u].T @ self.theta[v])

    # dE/db_v = -theta_v, summed over the examples like the weights.
    def bias_gradient(self, v: int) -> Array:
        return -self.theta[v].sum(axis=0)

    # Delta W = -eta dE/dW.
    def weight_update(self, u: int, v: int, grad: Array) -> Array:
        return -self.eta * grad


class OutputSlopeMissing(Backprop):
    def output_theta(self, de_dy, slope):
        return -de_dy


class HiddenSlopeMissing(Backprop):
    def hidden_theta(self, slope, back):
        return back


class SlopeOnePlus(Backprop):
    def slope(self, v):
        y = self.y[v]
        return y * (1.0 + y)


class SlopeMinus(Backprop):
    def slope(self, v):
        y = self.y[v]
        return y - (1.0 - y)


class SlopeOfOutput(Backprop):
    def slope(self, v):
        # sigma'(s) = sigma(s)(1 - sigma(s)) applied to y instead of s.
        sigma_y = _sigmoid(self.y[v])
        return sigma_y * (1.0 - sigma_y)


class SlopeAtNetInput(Backprop):
    def slope(self, v):
        s = self.s[v]
        return s * (1.0 - s)


class ErrorSignFlipped(Backprop):
    def error_derivative(self, d, y_out):
        e = y_out - d
        return -e


class HalfForgotten(Backprop):
    def error_derivative(self, d, y_out):
        # d/dy of e^2, the 1/2 of E forgotten.
        e = d - y_out
        return -2.0 * e


class HiddenSumTransposed(Backprop):
    def successor_weight(self, h, o):
        # W[o,h] where W[h,o] is meant: the (n_h, n_o) weights read as an
        # (n_o, n_h) array. For a square W that is W transposed; reshape
        # makes it run for any shape, scrambling the entries.
        w = self.params[weight_name(h, o)]
        return w.reshape(w.shape[1], w.shape[0]).T


class SkipSuccessorsMissing(Backprop):
    def successors(self, h):
        return (h + 1,)


class SuccessorsWrongLayer(Backprop):
    def successors(self, h):
        # Suc(h + 1) read instead of Suc(h), as a dense weight table would
        # give it: weights of absent edges read as zero.
        return tuple(
            o for o in self.network.successors(h + 1) if (h, o) in self.network.edges
        )


class UpdatedWeights(Backprop):
    def successor_weight(self, h, o):
        # The weights after this step's update, W + Delta W, because the
        # update was applied in place before the error went further down.
        name = weight_name(h, o)
        return self.params[name] + self.delta[name]


class BiasGradientAveraged(Backprop):
    def bias_gradient(self, v):
        return -self.theta[v].mean(axis=0)


class EtaTwice(Backprop):
    def weight_update(self, u, v, grad):
        return -self.eta * (self.eta * grad)


class EtaMissing(Backprop):
    def weight_update(self, u, v, grad):
        return -grad


class ActivationIndexOffByOne(Backprop):
    def weight_gradient(self, u, v):
        # y[u + 1] where y[u] is meant: the activations list indexed as if
        # it started at layer 1.
        return -(self.y[u + 1].T @ self.theta[v])


class BatchLoopOffByOne(Backprop):
    def weight_gradient(self, u, v):
        y, theta = self.y[u], self.theta[v]
        grad = np.zeros((y.shape[1], theta.shape[1]))
        for n in range(1, y.shape[0]):  # the first example is skipped
            grad -= np.outer(y[n], theta[n])
        return grad


class SlopeClipped(Backprop):
    def slope(self, v):
        # y kept inside [1e-7, 1 - 1e-7], a guard against log(0) carried
        # over from cross-entropy code; it only matters for saturated units.
        y = np.clip(self.y[v], 1e-7, 1.0 - 1e-7)
        return y * (1.0 - y)


def _highest(layers) -> int | None:
    layers = list(layers)
    return max(layers) if layers else None


def _first_hidden_theta(network: Network, hidden) -> str | None:
    h = _highest(hidden)
    return None if h is None else f"theta[{h}]"


def _hidden(network: Network) -> range:
    return range(1, network.output_layer)


def _locate_transposed(network: Network) -> str | None:
    return _first_hidden_theta(
        network,
        (
            h
            for h in _hidden(network)
            for o in network.successors(h)
            if min(network.sizes[h], network.sizes[o]) > 1
        ),
    )


def _locate_skips(network: Network) -> str | None:
    return _first_hidden_theta(
        network, (u for u, v in network.skips if u >= 1 and v > u + 1)
    )


def _locate_first_grad(network: Network) -> str:
    u = network.predecessors(network.output_layer)[0]
    return f"dE/d{weight_name(u, network.output_layer)}"


def _locate_first_update(network: Network) -> str:
    u = network.predecessors(network.output_layer)[0]
    return f"Delta {weight_name(u, network.output_layer)}"


def _locate_bias(network: Network) -> str | None:
    out = network.output_layer
    return f"dE/d{bias_name(out)}" if network.bias else None


def _locate_top_hidden(network: Network) -> str | None:
    return _first_hidden_theta(network, _hidden(network))


def _fixed(kind: str):
    def locate(network: Network) -> str:
        return f"{kind}[{network.output_layer}]"

    return locate


# name, one-line description, the quantity it touches (pattern), the
# derivation, and where the mistake first shows on a given network.
DELTA_RULE_MUTANTS = (
    (
        "output-slope-missing",
        "the output error signal without its slope: theta_o = d - y",
        "theta[L]",
        OutputSlopeMissing(),
        _fixed("theta"),
    ),
    (
        "hidden-slope-missing",
        "hidden error signals without their slope: theta_h = sum theta_o W[h,o]",
        "theta[h]",
        HiddenSlopeMissing(),
        _locate_top_hidden,
    ),
    (
        "slope-y-one-plus-y",
        "sigma' written y (1 + y)",
        "dy/ds[L]",
        SlopeOnePlus(),
        _fixed("dy/ds"),
    ),
    (
        "slope-y-minus-one-minus-y",
        "sigma' written y - (1 - y)",
        "dy/ds[L]",
        SlopeMinus(),
        _fixed("dy/ds"),
    ),
    (
        "slope-sigma-of-y",
        "sigma' written sigma(y) (1 - sigma(y)): the formula for s applied to y",
        "dy/ds[L]",
        SlopeOfOutput(),
        _fixed("dy/ds"),
    ),
    (
        "slope-at-net-input",
        "sigma' evaluated at the net input: s (1 - s) instead of y (1 - y)",
        "dy/ds[L]",
        SlopeAtNetInput(),
        _fixed("dy/ds"),
    ),
    (
        "error-sign-flipped",
        "the error written e = y - d, so dE/dy = d - y",
        "dE/dy[L]",
        ErrorSignFlipped(),
        _fixed("dE/dy"),
    ),
    (
        "half-forgotten",
        "the 1/2 of E forgotten: dE/dy = -2 (d - y)",
        "dE/dy[L]",
        HalfForgotten(),
        _fixed("dE/dy"),
    ),
    (
        "hidden-sum-transposed",
        "hidden sum over W[o,h] for W[h,o]: the weights read as (n_o, n_h)",
        "theta[h]",
        HiddenSumTransposed(),
        _locate_transposed,
    ),
    (
        "skip-successors-missing",
        "Suc(h) taken as the next layer only, skip successors left out",
        "theta[h]",
        SkipSuccessorsMissing(),
        _locate_skips,
    ),
    (
        "successors-wrong-layer",
        "Suc(h + 1) used for Suc(h), absent edges reading as zero weights",
        "theta[h]",
        SuccessorsWrongLayer(),
        _locate_top_hidden,
    ),
    (
        "updated-weights",
        "hidden error signals computed with weights already updated, W + Delta W",
        "theta[h]",
        UpdatedWeights(),
        _locate_top_hidden,
    ),
    (
        "bias-gradient-averaged",
        "the bias gradient averaged over the batch while weights are summed",
        "dE/db[L]",
        BiasGradientAveraged(),
        _locate_bias,
    ),
    (
        "eta-twice",
        "the learning rate applied twice: Delta W = -eta^2 dE/dW",
        "Delta W[u->L]",
        EtaTwice(),
        _locate_first_update,
    ),
    (
        "eta-missing",
        "the learning rate left out of the update: Delta W = -dE/dW",
        "Delta W[u->L]",
        EtaMissing(),
        _locate_first_update,
    ),
    (
        "activation-index-off-by-one",
        "dE/dW[u->v] built from y of layer u + 1: a layer index off by one",
        "dE/dW[u->L]",
        ActivationIndexOffByOne(),
        _locate_first_grad,
    ),
    (
        "batch-loop-off-by-one",
        "the weight gradient summed over examples 1..N-1, the first one skipped",
        "dE/dW[u->L]",
        BatchLoopOffByOne(),
        _locate_first_grad,
    ),
    (
        "slope-clipped",
        "y clipped to [1e-7, 1 - 1e-7] before the slope: wrong only when saturated",
        "dy/ds[v]",
        SlopeClipped(),
        None,
    ),
)
