# SPDX-License-Identifier: MIT
"""Feed-forward sigmoid networks of the delta-rule document.

A network is a list of layer sizes plus the forward connections between
layers. Every layer feeds the next one; skip connections let a layer feed
later layers too, so the successors ``Suc(h)`` of a unit may lie in several
layers. Every non-input unit applies the logistic sigmoid.

Parameters are a flat ``dict`` from names to float64 arrays:

* ``"W[u->v]"``: weights from layer ``u`` to layer ``v``, shape
  ``(sizes[u], sizes[v])``, so that ``s_v = y_u @ W[u->v] + ...``;
* ``"b[v]"``: biases of layer ``v``, shape ``(sizes[v],)``, when the network
  has biases.

A flat dict is a JAX pytree, and its keys are the names that reports use
(``W[1->2][3,0]`` is entry ``(3, 0)`` of ``W[1->2]``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray

from gradcheck.errors import InvalidArgumentError, InvalidTypeError

__all__ = [
    "Network",
    "weight_name",
    "bias_name",
    "init_params",
    "check_params",
    "check_data",
    "forward",
    "squared_error",
    "example_losses",
]

Params = dict[str, NDArray[np.float64]]


def weight_name(u: int, v: int) -> str:
    """Return the parameter name of the weights from layer ``u`` to ``v``."""
    return f"W[{u}->{v}]"


def bias_name(v: int) -> str:
    """Return the parameter name of the biases of layer ``v``."""
    return f"b[{v}]"


@dataclass(frozen=True)
class Network:
    """The architecture of a feed-forward sigmoid network.

    Args:
        sizes: units per layer, input layer first, output layer last; at
            least two layers, each with at least one unit.
        skips: extra edges ``(u, v)`` with ``v > u + 1``; the edges
            ``(l, l + 1)`` between neighbouring layers always exist.
        bias: whether every non-input layer has a bias vector.

    Raises:
        InvalidArgumentError: a layer of width 0, fewer than two layers, or
            a skip edge that does not point forward past the next layer.
    """

    sizes: tuple[int, ...]
    skips: tuple[tuple[int, int], ...] = ()
    bias: bool = True

    def __post_init__(self) -> None:
        sizes = _check_sizes(self.sizes)
        skips = _check_skips(self.skips, len(sizes))
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "skips", skips)
        if not isinstance(self.bias, (bool, np.bool_)):
            raise InvalidTypeError(
                f"bias must be True or False, got bias={self.bias!r}",
                name="bias",
                value=self.bias,
            )
        object.__setattr__(self, "bias", bool(self.bias))

    @property
    def n_layers(self) -> int:
        """Number of layers, the input layer included."""
        return len(self.sizes)

    @property
    def output_layer(self) -> int:
        """Index of the output layer."""
        return len(self.sizes) - 1

    # The structure below is asked for in every inner loop of a check, so
    # it is worked out once per network; a frozen dataclass's cached
    # properties live beside its fields, outside equality and hashing.

    @functools.cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """Every edge ``(u, v)``, sorted, neighbouring layers included."""
        chain = {(u, u + 1) for u in range(self.n_layers - 1)}
        return tuple(sorted(chain | set(self.skips)))

    @functools.cached_property
    def _links(self) -> tuple[dict[int, tuple[int, ...]], dict[int, tuple[int, ...]]]:
        layers = range(self.n_layers)
        return (
            {v: tuple(u for u, w in self.edges if w == v) for v in layers},
            {h: tuple(w for u, w in self.edges if u == h) for h in layers},
        )

    def predecessors(self, v: int) -> tuple[int, ...]:
        """Layers that feed layer ``v`` (``Pred(v)``), in increasing order."""
        return self._links[0].get(v, ())

    def successors(self, h: int) -> tuple[int, ...]:
        """Layers that layer ``h`` feeds (``Suc(h)``), in increasing order."""
        return self._links[1].get(h, ())

    @functools.cached_property
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for u, v in self.edges:
            shapes[weight_name(u, v)] = (self.sizes[u], self.sizes[v])
        if self.bias:
            for v in range(1, self.n_layers):
                shapes[bias_name(v)] = (self.sizes[v],)
        return shapes

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Return the name and shape of every parameter, in a fixed order."""
        return dict(self._shapes)

    @functools.cached_property
    def n_params(self) -> int:
        """Total number of scalar parameters."""
        return sum(math.prod(s) for s in self._shapes.values())

    def describe(self) -> str:
        """Return a short description, for example ``2-3-1 +skip 0->2 +bias``."""
        text = "-".join(str(n) for n in self.sizes)
        if self.skips:
            text += " +skip " + ",".join(f"{u}->{v}" for u, v in self.skips)
        text += " +bias" if self.bias else " no bias"
        return text

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready description of the architecture."""
        return {
            "sizes": list(self.sizes),
            "skips": [list(e) for e in self.skips],
            "bias": self.bias,
        }


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_sizes(sizes: object) -> tuple[int, ...]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise InvalidTypeError(
            f"sizes must be a sequence of layer widths, got sizes={sizes!r}",
            name="sizes",
            value=sizes,
        )
    sizes = tuple(sizes)
    if len(sizes) < 2:
        raise InvalidArgumentError(
            "sizes must name at least an input and an output layer, "
            f"got sizes={sizes!r}",
            name="sizes",
            value=sizes,
        )
    for layer, n in enumerate(sizes):
        if not _is_int(n):
            raise InvalidTypeError(
                f"layer {layer} width must be an int, got {n!r} in sizes={sizes!r}",
                name="sizes",
                value=sizes,
            )
        if n < 1:
            raise InvalidArgumentError(
                f"layer {layer} width must be at least 1, got {n!r} in sizes={sizes!r}",
                name="sizes",
                value=sizes,
            )
    return tuple(int(n) for n in sizes)


def _check_skips(skips: object, n_layers: int) -> tuple[tuple[int, int], ...]:
    if not isinstance(skips, Iterable):
        raise InvalidTypeError(
            f"skips must be a sequence of (u, v) pairs, got skips={skips!r}",
            name="skips",
            value=skips,
        )
    checked = set()
    for edge in skips:
        try:
            u, v = edge
        except (TypeError, ValueError):
            raise InvalidTypeError(
                f"each skip must be a pair (u, v) of layer indices, got {edge!r}",
                name="skips",
                value=skips,
            ) from None
        if not all(_is_int(i) for i in (u, v)):
            raise InvalidTypeError(
                f"skip layer indices must be ints, got {edge!r}",
                name="skips",
                value=skips,
            )
        u, v = int(u), int(v)
        if not (u >= 0 and u + 1 < v < n_layers):
            raise InvalidArgumentError(
                f"skip {edge!r} must satisfy 0 <= u and u + 1 < v < {n_layers} "
                "(neighbouring layers are always connected)",
                name="skips",
                value=skips,
            )
        checked.add((u, v))
    return tuple(sorted(checked))


def init_params(
    network: Network, rng: np.random.Generator, scale: float = 1.0
) -> Params:
    """Draw parameters with entries from ``N(0, scale^2 / fan_in)``.

    Args:
        network: the architecture.
        rng: the source of randomness; the caller seeds it.
        scale: multiplies every standard deviation.

    Returns:
        A float64 array per parameter name, shaped as the network expects.
    """
    params: Params = {}
    for v in range(1, network.n_layers):
        fan_in = sum(network.sizes[u] for u in network.predecessors(v))
        std = scale / math.sqrt(fan_in)
        for u in network.predecessors(v):
            shape = (network.sizes[u], network.sizes[v])
            params[weight_name(u, v)] = rng.normal(0.0, std, shape)
        if network.bias:
            params[bias_name(v)] = rng.normal(0.0, std, network.sizes[v])
    return {name: params[name] for name in network.param_shapes()}


def _check_finite(name: str, value: NDArray[np.float64]) -> None:
    bad = ~np.isfinite(value)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidArgumentError(
            f"{name} must be finite, got {value[index]!r} at index {index} "
            f"({int(bad.sum())} non-finite entries of {value.size})",
            name=name,
            value=value,
        )


def _as_float_array(name: str, value: object) -> NDArray[np.float64]:
    try:
        array = np.asarray(value)
    except Exception as err:  # numpy raises many types for odd objects
        raise InvalidTypeError(
            f"{name} must be an array of floats, got {value!r}", name=name, value=value
        ) from err
    if array.dtype.kind not in "fiu" or array.dtype == bool:
        raise InvalidTypeError(
            f"{name} must be an array of real numbers, got dtype {array.dtype}",
            name=name,
            value=value,
        )
    return array.astype(np.float64)


def check_params(network: Network, params: Mapping[str, object]) -> Params:
    """Validate parameters against a network and return float64 copies.

    Raises:
        InvalidTypeError: ``params`` is not a mapping or holds non-numbers.
        InvalidArgumentError: a missing, extra or misshapen parameter, or a
            NaN or Inf entry.
    """
    if not isinstance(params, Mapping):
        raise InvalidTypeError(
            f"params must be a mapping from names to arrays, got {type(params)!r}",
            name="params",
            value=params,
        )
    expected = network.param_shapes()
    missing = [name for name in expected if name not in params]
    extra = [name for name in params if name not in expected]
    if missing or extra:
        raise InvalidArgumentError(
            f"params do not match the network {network.describe()}: "
            f"missing {missing}, unexpected {extra}; expected the names "
            f"{list(expected)}",
            name="params",
            value=sorted(params),
        )
    checked: Params = {}
    for name, shape in expected.items():
        array = _as_float_array(f"params[{name!r}]", params[name])
        if array.shape != shape:
            raise InvalidArgumentError(
                f"params[{name!r}] must have shape {shape} for the network "
                f"{network.describe()}, got shape {array.shape}",
                name=f"params[{name!r}]",
                value=array.shape,
            )
        _check_finite(f"params[{name!r}]", array)
        checked[name] = array
    return checked


def check_data(
    network: Network, x: object, d: object
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate a batch of inputs and targets and return float64 copies.

    Args:
        network: the architecture.
        x: inputs, shape ``(batch, sizes[0])``.
        d: targets in [0, 1], shape ``(batch, sizes[-1])``.

    Raises:
        InvalidArgumentError: wrong shapes, an empty batch, NaN or Inf
            entries, or targets outside [0, 1].
    """
    x = _as_float_array("x", x)
    d = _as_float_array("d", d)
    n_in, n_out = network.sizes[0], network.sizes[-1]
    if x.ndim != 2 or x.shape[1] != n_in or x.shape[0] < 1:
        raise InvalidArgumentError(
            f"x must have shape (batch, {n_in}) with batch >= 1, got shape {x.shape}",
            name="x",
            value=x.shape,
        )
    if d.shape != (x.shape[0], n_out):
        raise InvalidArgumentError(
            f"d must have shape ({x.shape[0]}, {n_out}) to match x, "
            f"got shape {d.shape}",
            name="d",
            value=d.shape,
        )
    _check_finite("x", x)
    _check_finite("d", d)
    outside = (d < 0) | (d > 1)
    if outside.any():
        index = tuple(int(i) for i in np.argwhere(outside)[0])
        raise InvalidArgumentError(
            f"targets d must lie in [0, 1], got {d[index]!r} at index {index}",
            name="d",
            value=d,
        )
    return x, d


def forward(
    network: Network,
    params: Mapping[str, jax.Array],
    x: jax.Array,
    probes_s: Mapping[int, jax.Array] | None = None,
    probe_y: jax.Array | None = None,
) -> tuple[list[jax.Array], list[jax.Array]]:
    """Run the network forward in jax.numpy.

    The probes are additive terms that are zero in normal use. Their
    derivatives define the intermediate quantities of the delta rule:
    ``theta_v = -dE/d(probes_s[v])`` and ``dE/dy_o = dE/d(probe_y)``.

    Args:
        network: the architecture.
        params: a ``(n_u, n_v)`` array per weight and ``(n_v,)`` per bias.
        x: inputs, shape ``(batch, sizes[0])``.
        probes_s: optional ``(batch, sizes[v])`` terms added to the net input
            ``s_v`` of layer ``v``.
        probe_y: optional ``(batch, sizes[-1])`` term added to the outputs.

    Returns:
        ``(s, y)``: net inputs and outputs per layer. ``s[0]`` is ``x``, as is
        ``y[0]``; ``y[-1]`` includes ``probe_y``.
    """
    s_all: list[jax.Array] = [x]
    y_all: list[jax.Array] = [x]
    for v in range(1, network.n_layers):
        s = sum(y_all[u] @ params[weight_name(u, v)] for u in network.predecessors(v))
        if network.bias:
            s = s + params[bias_name(v)]
        if probes_s is not None:
            s = s + probes_s[v]
        y = jax.nn.sigmoid(s)
        if probe_y is not None and v == network.output_layer:
            y = y + probe_y
        s_all.append(s)
        y_all.append(y)
    return s_all, y_all


def example_losses(
    network: Network,
    params: Mapping[str, jax.Array],
    x: jax.Array,
    d: jax.Array,
    probes_s: Mapping[int, jax.Array] | None = None,
    probe_y: jax.Array | None = None,
) -> jax.Array:
    """Return each example's share of the loss, ``1/2 * sum_k (d_k - y_k)^2``.

    Shape ``(batch,)``; their sum is :func:`squared_error`.
    """
    _, y = forward(network, params, x, probes_s, probe_y)
    return 0.5 * jnp.sum((d - y[-1]) ** 2, axis=-1)


def squared_error(
    network: Network,
    params: Mapping[str, jax.Array],
    x: jax.Array,
    d: jax.Array,
    probes_s: Mapping[int, jax.Array] | None = None,
    probe_y: jax.Array | None = None,
) -> jax.Array:
    """Return the document's loss, ``E = 1/2 * sum of (d - y)^2``.

    The sum runs over the output units and over the examples of the batch.

    The loss is summed, not averaged, over the batch: the delta rule's
    ``dE/dW[u,v] = -theta_v y_u`` holds for the sum. This one function is
    what both references differentiate: finite differences evaluate it and
    JAX differentiates it.
    """
    return jnp.sum(example_losses(network, params, x, d, probes_s, probe_y))
