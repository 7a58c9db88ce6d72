# SPDX-License-Identifier: MIT
"""Hypothesis strategies for networks, parameters, inputs and whole cases.

Every draw is labelled, so a falsifying example reads as a list of named
choices. Draws are ordered so that shrinking simplifies the architecture
first: fewer hidden layers, narrower layers, no skips, no bias; a failing
example shrinks to a small network.

Example::

    from hypothesis import given
    from gradcheck import strategies as gst

    @given(gst.delta_rule_cases())
    def test_my_backprop(case):
        check_delta_rule(*case.args, derivation=my_backprop)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from gradcheck._networks import Network

__all__ = [
    "DeltaRuleCase",
    "networks",
    "parameters",
    "inputs",
    "targets",
    "delta_rule_cases",
    "seeded_delta_rule_cases",
]

Array = NDArray[np.float64]

MAX_HIDDEN = 4
MAX_WIDTH = 8
MAX_BATCH = 8


@dataclass(frozen=True)
class DeltaRuleCase:
    """Everything one delta-rule check needs.

    Attributes:
        network: the architecture.
        params: float64 parameters shaped for it.
        x: inputs, shape ``(batch, n_0)``.
        d: targets in [0, 1], shape ``(batch, n_out)``.
        eta: the learning rate.
        weight_scale: the scale the weights were drawn at (log-uniform),
            from tiny to saturating.
    """

    network: Network
    params: dict[str, Array]
    x: Array
    d: Array
    eta: float
    weight_scale: float

    @property
    def args(self) -> tuple[object, ...]:
        """``(network, params, x, d, eta)``, the arguments of a check."""
        return (self.network, self.params, self.x, self.d, self.eta)

    def describe(self) -> str:
        """Return a one-line description for reports."""
        return (
            f"{self.network.describe()}, batch {self.x.shape[0]}, "
            f"weight scale {self.weight_scale:.3g}, eta {self.eta:g}"
        )


@st.composite
def networks(
    draw: st.DrawFn,
    max_hidden: int = MAX_HIDDEN,
    max_width: int = MAX_WIDTH,
) -> Network:
    """Generate architectures: 0 to 4 hidden layers of widths 1 to 8.

    Any layer may also feed any later layer past the next (skip
    connections), and biases are on or off.
    """
    n_hidden = draw(st.integers(0, max_hidden), label="hidden layers")
    sizes = tuple(
        draw(st.integers(1, max_width), label=f"width of layer {layer}")
        for layer in range(n_hidden + 2)
    )
    # Candidates ordered by target layer, so that the skips into the last
    # layers come last: dropping a layer while shrinking drops a tail of
    # these draws and leaves the others' meaning unchanged.
    possible = [(u, v) for v in range(2, len(sizes)) for u in range(v - 1)]
    skips = tuple(
        edge
        for edge in possible
        if draw(st.booleans(), label=f"skip {edge[0]}->{edge[1]}")
    )
    bias = draw(st.booleans(), label="bias")
    return Network(sizes, skips, bias)


def _unit_arrays(shape: tuple[int, ...], low: float, high: float) -> st.SearchStrategy:
    # fill=nothing() draws every entry on its own; by default Hypothesis
    # fills most of an array with one repeated value (often 0), and a
    # network of mostly equal or zero weights hides mistakes.
    return hnp.arrays(
        np.float64,
        shape,
        elements=st.floats(low, high, allow_nan=False, allow_subnormal=False),
        fill=st.nothing(),
    )


def _signed_arrays(shape: tuple[int, ...], high: float) -> st.SearchStrategy:
    """Arrays with entries of magnitude in [high / 20, high] and either sign.

    Hypothesis starts from, and shrinks towards, its simplest values: with
    zero allowed, its first draws are all-zero weights and inputs, whose
    gradients are trivially zero and hide most mistakes. Keeping every
    entry away from zero keeps every case informative; tiny weights still
    come from the weight scale.
    """
    magnitude = st.floats(high / 20.0, high, allow_nan=False)
    signed = st.tuples(magnitude, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])
    return hnp.arrays(np.float64, shape, elements=signed, fill=st.nothing())


@st.composite
def parameters(
    draw: st.DrawFn,
    network: Network,
    min_log10_scale: float = -3.0,
    max_log10_scale: float = 1.5,
) -> tuple[dict[str, Array], float]:
    """Generate parameters for ``network`` at a scale from tiny to saturating.

    A log-uniform scale (1e-3 to about 30 by default) multiplies entries of
    magnitude 0.05 to 1 and either sign; at the top of the range most units
    saturate.

    Returns:
        ``(params, scale)``.
    """
    log_scale = draw(
        st.floats(min_log10_scale, max_log10_scale), label="log10 weight scale"
    )
    scale = 10.0**log_scale
    params = {
        name: scale * draw(_signed_arrays(shape, 1.0), label=name)
        for name, shape in network.param_shapes().items()
    }
    return params, scale


def inputs(batch: int, width: int) -> st.SearchStrategy[Array]:
    """Generate inputs of shape ``(batch, width)``, magnitudes in [0.1, 2]."""
    return _signed_arrays((batch, width), 2.0)


def targets(batch: int, width: int) -> st.SearchStrategy[Array]:
    """Generate targets of shape ``(batch, width)`` with entries in [0, 1]."""
    return _unit_arrays((batch, width), 0.0, 1.0)


@st.composite
def delta_rule_cases(
    draw: st.DrawFn,
    network_strategy: st.SearchStrategy[Network] | None = None,
    max_batch: int = MAX_BATCH,
) -> DeltaRuleCase:
    """Generate a network, its parameters, a batch of 1 to 8 examples and eta."""
    if network_strategy is None:
        network_strategy = networks()
    network = draw(network_strategy, label="network")
    batch = draw(st.integers(1, max_batch), label="batch size")
    params, scale = draw(parameters(network), label="parameters")
    x = draw(inputs(batch, network.sizes[0]), label="inputs x")
    d = draw(targets(batch, network.sizes[-1]), label="targets d")
    eta = draw(st.sampled_from([0.1, 0.5, 1.0, 0.01]), label="eta")
    return DeltaRuleCase(network, params, x, d, eta, scale)


@st.composite
def seeded_delta_rule_cases(
    draw: st.DrawFn,
    network_strategy: st.SearchStrategy[Network] | None = None,
    max_batch: int = MAX_BATCH,
) -> DeltaRuleCase:
    """Generate cases like :func:`delta_rule_cases`, with arrays from a seed.

    Hypothesis draws the architecture, the batch size, the weight scale,
    eta and a seed; numpy's generator, seeded with it, draws the weights
    (magnitudes uniform in [scale / 20, scale], either sign), the inputs
    (magnitudes uniform in [0.1, 2], either sign) and the targets (uniform
    in [0, 1]). Drawing each entry through Hypothesis costs far more than
    checking a small network, so this is the strategy for fuzzing many
    networks fast. The architecture still shrinks as before; the arrays
    shrink only by their seed, towards seed 0.
    """
    if network_strategy is None:
        network_strategy = networks()
    network = draw(network_strategy, label="network")
    batch = draw(st.integers(1, max_batch), label="batch size")
    log_scale = draw(st.floats(-3.0, 1.5), label="log10 weight scale")
    eta = draw(st.sampled_from([0.1, 0.5, 1.0, 0.01]), label="eta")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="array seed"))
    scale = 10.0**log_scale

    def signed(shape: tuple[int, ...], high: float) -> Array:
        magnitude = rng.uniform(high / 20.0, high, shape)
        return np.where(rng.random(shape) < 0.5, -magnitude, magnitude)

    params = {
        name: scale * signed(shape, 1.0)
        for name, shape in network.param_shapes().items()
    }
    x = signed((batch, network.sizes[0]), 2.0)
    d = rng.uniform(0.0, 1.0, (batch, network.sizes[-1]))
    return DeltaRuleCase(network, params, x, d, eta, scale)
