# SPDX-License-Identifier: MIT
"""The two references for every named quantity of the delta rule.

Both references differentiate the one jax.numpy loss of
:mod:`gradcheck._networks`: finite differences evaluate it, JAX
reverse-mode autodiff differentiates it. Each named quantity is checked
against its definition, not against another formula:

* ``dE/dW[u->v]``, ``dE/db[v]``: derivatives of E with respect to the
  parameters;
* ``theta[v]``: ``-dE/ds_v``, the derivative of E with respect to an
  additive probe on the net input ``s_v`` (zero in normal use);
* ``dE/dy[o]``: the derivative of E with respect to an additive probe on
  the output ``y_o``;
* ``dy/ds[v]``: the derivative of the sigmoid at the net input ``s_v``;
* ``Delta W``, ``Delta b``: ``-eta`` times the gradient.

Every computation here runs in float64, whatever the caller's JAX
configuration.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray

from gradcheck._delta_rule import quantity_names
from gradcheck._networks import Network, example_losses, forward
from gradcheck._numeric import (
    NumericEstimate,
    central_differences,
    default_steps,
    elementwise_central_differences,
)

__all__ = ["Reference", "compute_references"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Reference:
    """The two references for one named quantity.

    Attributes:
        numeric: the finite-difference estimate and its error estimate.
        autodiff: the JAX autodiff value.
    """

    numeric: NumericEstimate
    autodiff: Array


def _unflatten(network: Network, z: jax.Array) -> dict[str, jax.Array]:
    params = {}
    start = 0
    for name, shape in network.param_shapes().items():
        size = int(np.prod(shape))
        params[name] = z[start : start + size].reshape(shape)
        start += size
    return params


def _split_probes(
    network: Network, columns: jax.Array, batch: int
) -> tuple[dict[int, jax.Array], jax.Array]:
    """Turn one shift per probe column into probes over the whole batch.

    Perturbing a column shifts that unit in every example at once. The
    examples do not interact, so each example's own loss still measures the
    derivative for that example alone, at the cost of one evaluation per
    unit instead of one per unit and example.
    """
    probes_s = {}
    start = 0
    for v in range(1, network.n_layers):
        n = network.sizes[v]
        probes_s[v] = jnp.broadcast_to(columns[start : start + n], (batch, n))
        start += n
    n_out = network.sizes[-1]
    probe_y = jnp.broadcast_to(columns[start : start + n_out], (batch, n_out))
    return probes_s, probe_y


def _n_probe_columns(network: Network) -> int:
    return sum(network.sizes[1:]) + network.sizes[-1]


@functools.lru_cache(maxsize=64)
def _compiled(network: Network, batch: int) -> dict[str, object]:
    """Build the jitted functions for one architecture and batch size.

    Compiling costs far more than evaluating a small network, so the
    functions are cached per (network, batch) and reused, for example at
    every checkpoint of a training run.
    """
    n_cols = _n_probe_columns(network)

    def zero_probes(x: jax.Array) -> tuple[dict[int, jax.Array], jax.Array]:
        return _split_probes(network, jnp.zeros(n_cols, dtype=x.dtype), batch)

    def total_loss(z, x, d, probes_s, probe_y):
        params = _unflatten(network, z)
        return jnp.sum(example_losses(network, params, x, d, probes_s, probe_y))

    @jax.jit
    def autodiff(z, x, d):
        probes_s, probe_y = zero_probes(x)
        grads = jax.grad(total_loss, argnums=(0, 3, 4))(z, x, d, probes_s, probe_y)
        s, _ = forward(network, _unflatten(network, z), x)
        slopes = [
            jax.jvp(jax.nn.sigmoid, (s[v],), (jnp.ones_like(s[v]),))[1]
            for v in range(1, network.n_layers)
        ]
        return grads, s[1:], slopes

    @jax.jit
    def loss_shifted(z, x, d, index, delta):
        probes_s, probe_y = zero_probes(x)

        def one(i, h):
            return total_loss(z.at[i].add(h), x, d, probes_s, probe_y)

        return jax.vmap(one)(index, delta)

    @jax.jit
    def probe_losses_shifted(z, x, d, index, delta):
        params = _unflatten(network, z)

        def one(i, h):
            columns = jnp.zeros(n_cols, dtype=z.dtype).at[i].set(h)
            probes_s, probe_y = _split_probes(network, columns, batch)
            return example_losses(network, params, x, d, probes_s, probe_y)

        return jax.vmap(one)(index, delta)

    return {
        "autodiff": autodiff,
        "loss_shifted": loss_shifted,
        "probe_losses_shifted": probe_losses_shifted,
    }


def compute_references(
    network: Network,
    params: Mapping[str, Array],
    x: Array,
    d: Array,
    eta: float,
    rel_step: float | None = None,
) -> dict[str, Reference]:
    """Compute the numeric and autodiff reference of every named quantity.

    Args:
        network: the architecture.
        params: validated float64 parameters (see ``check_params``).
        x: validated inputs, shape ``(batch, n_0)``.
        d: validated targets, shape ``(batch, n_out)``.
        eta: the learning rate, for ``Delta W = -eta dE/dW``.
        rel_step: the finite-difference step relative to ``max(1, |z|)``;
            ``cbrt(eps)`` when omitted.

    Returns:
        A :class:`Reference` per name of ``quantity_names(network)``.
    """
    batch = x.shape[0]
    shapes = network.param_shapes()
    z = np.concatenate([np.ravel(params[name]) for name in shapes])
    fns = _compiled(network, batch)

    with jax.enable_x64(True):
        zj, xj, dj = (jnp.asarray(a, dtype=jnp.float64) for a in (z, x, d))
        (g_z, g_probes_s, g_probe_y), s, slopes = fns["autodiff"](zj, xj, dj)

        def loss_at(index, delta):
            return fns["loss_shifted"](
                zj, xj, dj, jnp.asarray(index), jnp.asarray(delta)
            )

        def probes_at(index, delta):
            return fns["probe_losses_shifted"](
                zj, xj, dj, jnp.asarray(index), jnp.asarray(delta)
            )

        num_z = central_differences(loss_at, z, default_steps(z, rel_step))
        n_cols = _n_probe_columns(network)
        cols = np.zeros(n_cols)
        # Shape (n_cols, batch): one column of probes per row.
        num_cols = central_differences(probes_at, cols, default_steps(cols, rel_step))
        s = [np.asarray(a) for a in s]
        num_slopes = [
            elementwise_central_differences(
                lambda t: np.asarray(jax.nn.sigmoid(jnp.asarray(t))),
                s_v,
                default_steps(s_v, rel_step),
            )
            for s_v in s
        ]

    refs: dict[str, Reference] = {}

    # Parameter gradients and updates.
    g_z = np.asarray(g_z)
    start = 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        part = slice(start, start + size)
        numeric = NumericEstimate(
            num_z.value[part], num_z.error[part], num_z.step[part]
        ).reshaped(shape)
        autodiff = g_z[part].reshape(shape)
        refs[f"dE/d{name}"] = Reference(numeric, autodiff)
        refs[f"Delta {name}"] = Reference(numeric.scaled(-eta), -eta * autodiff)
        start += size

    # Error signals: theta_v = -dE/ds_v; output error derivative dE/dy_o.
    start = 0
    for v in range(1, network.n_layers):
        n = network.sizes[v]
        part = slice(start, start + n)
        numeric = NumericEstimate(
            num_cols.value[part].T, num_cols.error[part].T, num_cols.step[part].T
        )
        refs[f"theta[{v}]"] = Reference(
            numeric.scaled(-1.0), -np.asarray(g_probes_s[v])
        )
        slope = num_slopes[v - 1]
        refs[f"dy/ds[{v}]"] = Reference(slope, np.asarray(slopes[v - 1]))
        start += n
    out = network.output_layer
    part = slice(start, start + network.sizes[out])
    refs[f"dE/dy[{out}]"] = Reference(
        NumericEstimate(
            num_cols.value[part].T, num_cols.error[part].T, num_cols.step[part].T
        ),
        np.asarray(g_probe_y),
    )
    return {name: refs[name] for name in quantity_names(network)}
