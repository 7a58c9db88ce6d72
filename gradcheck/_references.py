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

Rounding is estimated, not assumed. Float64 arithmetic gives the exact
result for inputs off by a few ulps (backward stability), so a quantity
cannot be trusted beyond how far it moves when every input (parameters,
inputs, targets) is perturbed by a few ulps. The references are evaluated
again at ``PERTURBATION_TRIALS`` such perturbed points, with the net inputs
and outputs inside the forward pass moved too; how far the loss
moves sets the finite-difference noise, and how far each autodiff quantity
moves is its rounding allowance. This catches cancellation that a bound in
ulps of the result misses: ``d - y`` for a target close to the output is
known to ``eps * |y|``, not to ``eps * |d - y|``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import NDArray

from gradcheck._compare import Reference
from gradcheck._delta_rule import quantity_names
from gradcheck._networks import Network, example_losses, forward
from gradcheck._numeric import (
    JITTER,
    PERTURBATION_TRIALS,
    NumericEstimate,
    central_differences,
    default_steps,
    elementwise_central_differences,
    nudge,
)

__all__ = ["compute_references"]

Array = NDArray[np.float64]


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
    def autodiff(z, x, d, key, jitter):
        # With jitter > 0, every net input and output is also moved by up to
        # `jitter` of its size, independently per unit and example, as
        # rounding inside the forward pass would move it.
        params = _unflatten(network, z)
        s0, y0 = forward(network, params, x)
        keys = jax.random.split(key, network.n_layers)

        def noise(k, a):
            u = jax.random.uniform(k, a.shape, a.dtype, -1.0, 1.0)
            return jax.lax.stop_gradient(jitter * jnp.abs(a) * u)

        probes_s = {v: noise(keys[v], s0[v]) for v in range(1, network.n_layers)}
        probe_y = noise(keys[0], y0[-1])
        grads = jax.grad(total_loss, argnums=(0, 3, 4))(z, x, d, probes_s, probe_y)
        s, _ = forward(network, params, x, probes_s)
        slopes = [
            jax.jvp(jax.nn.sigmoid, (s[v],), (jnp.ones_like(s[v]),))[1]
            for v in range(1, network.n_layers)
        ]
        losses = example_losses(network, params, x, d, probes_s, probe_y)
        return grads, s[1:], slopes, losses

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
        base = _flat_autodiff(
            fns["autodiff"](zj, xj, dj, jax.random.key(0), jnp.float64(0.0))
        )
        moved = _perturbation_spread(fns["autodiff"], base, z, x, d)

        def loss_at(index, delta):
            return fns["loss_shifted"](
                zj, xj, dj, jnp.asarray(index), jnp.asarray(delta)
            )

        def probes_at(index, delta):
            return fns["probe_losses_shifted"](
                zj, xj, dj, jnp.asarray(index), jnp.asarray(delta)
            )

        num_z = central_differences(
            loss_at, z, default_steps(z, rel_step), noise=moved["loss"]
        )
        cols = np.zeros(_n_probe_columns(network))
        # Shape (n_cols, batch): one column of probes per row, one loss per
        # example, each with its own noise.
        num_cols = central_differences(
            probes_at, cols, default_steps(cols, rel_step), noise=moved["losses"]
        )
        num_slopes = [
            elementwise_central_differences(
                lambda t: np.asarray(jax.nn.sigmoid(jnp.asarray(t))),
                s_v,
                default_steps(s_v, rel_step),
                noise=moved[f"sigma[{v}]"],
            )
            for v, s_v in enumerate(base["s"], start=1)
        ]

    g_z, g_cols = base["g_z"], base["g_cols"]
    r_z, r_cols = moved["g_z"], moved["g_cols"]
    refs: dict[str, Reference] = {}

    # Parameter gradients and updates.
    start = 0
    for name, shape in shapes.items():
        part = slice(start, start + int(np.prod(shape)))
        numeric = NumericEstimate(
            num_z.value[part], num_z.error[part], num_z.step[part]
        ).reshaped(shape)
        autodiff = g_z[part].reshape(shape)
        rounding = r_z[part].reshape(shape)
        refs[f"dE/d{name}"] = Reference(numeric, autodiff, rounding)
        refs[f"Delta {name}"] = Reference(
            numeric.scaled(-eta), -eta * autodiff, eta * rounding
        )
        start = part.stop

    # Error signals, theta_v = -dE/ds_v, and the output error derivative
    # dE/dy_o, from the probe columns: one per unit, layer by layer, then
    # the output probes.
    start = 0
    for v in range(1, network.n_layers):
        part = slice(start, start + network.sizes[v])
        numeric = NumericEstimate(
            num_cols.value[part].T, num_cols.error[part].T, num_cols.step[part].T
        )
        refs[f"theta[{v}]"] = Reference(
            numeric.scaled(-1.0), -g_cols[:, part], r_cols[:, part]
        )
        refs[f"dy/ds[{v}]"] = Reference(
            num_slopes[v - 1], base["slopes"][v - 1], moved["slopes"][v - 1]
        )
        start = part.stop
    out = network.output_layer
    part = slice(start, start + network.sizes[out])
    refs[f"dE/dy[{out}]"] = Reference(
        NumericEstimate(
            num_cols.value[part].T, num_cols.error[part].T, num_cols.step[part].T
        ),
        g_cols[:, part],
        r_cols[:, part],
    )
    return {name: refs[name] for name in quantity_names(network)}


def _flat_autodiff(outputs: tuple) -> dict[str, object]:
    """Turn the jitted autodiff outputs into numpy arrays, probes side by side."""
    (g_z, g_probes_s, g_probe_y), s, slopes, losses = outputs
    g_cols = np.concatenate(
        [np.asarray(g_probes_s[v]) for v in sorted(g_probes_s)]
        + [np.asarray(g_probe_y)],
        axis=1,
    )
    s = [np.asarray(a) for a in s]
    return {
        "g_z": np.asarray(g_z),
        "g_cols": g_cols,
        "s": s,
        "sigma": [np.asarray(jax.nn.sigmoid(jnp.asarray(a))) for a in s],
        "slopes": [np.asarray(a) for a in slopes],
        "losses": np.asarray(losses),
    }


def _perturbation_spread(
    autodiff: object, base: dict[str, object], z: Array, x: Array, d: Array
) -> dict[str, object]:
    """Return how far each reference moves when its inputs move by a few ulps.

    Each trial multiplies every parameter, input and target by
    ``1 + JITTER * u`` (16 ulps at most) and moves every net input and output
    of the forward pass likewise, with ``u`` uniform in [-1, 1] and drawn
    independently per entry: independent draws, unlike random signs, cannot
    cancel exactly between equal terms of a sum (two identical examples in
    a batch, say). The largest move of each output over the trials is kept.
    The draws are seeded, so checks are repeatable.
    """
    rng = np.random.default_rng(0)
    jitter = JITTER

    spread: dict[str, object] = {}
    for trial_index in range(PERTURBATION_TRIALS):
        key = jax.random.key(trial_index + 1)
        trial = _flat_autodiff(
            autodiff(
                *(jnp.asarray(nudge(a, rng)) for a in (z, x, d)),
                key,
                jnp.float64(jitter),
            )
        )
        for key_ in ("g_z", "g_cols", "losses"):
            move = np.abs(trial[key_] - base[key_])
            spread[key_] = np.maximum(spread.get(key_, 0.0), move)
        for key_ in ("slopes", "sigma"):
            moves = [
                np.abs(t - b) for t, b in zip(trial[key_], base[key_], strict=True)
            ]
            old = spread.get(key_, [0.0] * len(moves))
            spread[key_] = [np.maximum(o, m) for o, m in zip(old, moves, strict=True)]
        loss_move = abs(float(trial["losses"].sum() - base["losses"].sum()))
        spread["loss"] = max(spread.get("loss", 0.0), loss_move)
    for v, sigma in enumerate(spread.pop("sigma"), start=1):
        spread[f"sigma[{v}]"] = sigma
    # The derivation computes dy/ds as y (1 - y) from a rounded y, and
    # 1 - y cancels for y near 1: an error of an ulp of y moves the slope by
    # |1 - 2y| ulps of y, which no perturbation of s reproduces.
    spread["slopes"] = [
        np.maximum(moved, jitter * np.abs(1.0 - 2.0 * y) * y)
        for moved, y in zip(spread["slopes"], base["sigma"], strict=True)
    ]
    return spread
