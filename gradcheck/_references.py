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

Three paths compute the same references. Compiling costs far more than
evaluating a small network, so a network that fits the shared padded
shape (``PADDED_LAYERS`` layers of ``PADDED_WIDTH`` units, batches up to
``PADDED_BATCH``) is evaluated by one compiled function that serves every
such architecture: absent units, layers and examples are zero-padded and
masked so that they contribute exact zeros and are never read back, and
the unperturbed point, the perturbation trials and every finite-difference
shift are evaluated in one call. Any other network gets functions compiled
for its own shape, cached per shape, for autodiff and the perturbation
trials, while the shifted losses are evaluated in numpy by the network's
structure (the structured path, :mod:`gradcheck._structured`): each shift
is propagated from the layer where it acts, so a check of a network of
26,122 parameters takes a fraction of a second where vmapping the whole
forward pass over its 104,488 shifted rows (the plain path, still there
with ``path="plain"``) took 15 s. All paths draw the same perturbations
and share every step after the evaluations, so they differ only by the
order in which sums are rounded: by ulps.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

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
    ShiftedRows,
    combine_elementwise,
    default_steps,
    elementwise_points,
    nudge,
)
from gradcheck._structured import Point
from gradcheck.errors import InvalidArgumentError

__all__ = ["PATHS", "compute_references", "fits_padded"]

Array = NDArray[np.float64]

# The shared padded shape: the largest generated case (see strategies):
# an input layer, up to four hidden layers and an output layer, each of at
# most eight units, and batches of at most eight examples.
PADDED_LAYERS = 6
PADDED_WIDTH = 8
PADDED_BATCH = 8

# Shifted parameter rows per padded call: a network with at most
# SMALL_ROWS of them (32 parameters) is evaluated in one call of that many
# rows, any other in calls of CHUNK_ROWS, so that the padded functions
# compile for these two row counts only, whatever the architecture.
SMALL_ROWS = 128
CHUNK_ROWS = 512

# Points per call of the sigmoid, for its finite differences: enough for
# every net input of a padded case, four points each.
SIGMOID_CHUNK = 4 * PADDED_LAYERS * PADDED_WIDTH * PADDED_BATCH

# How often the padded function was traced (compiled), for tests.
padded_traces = 0


@dataclass(frozen=True)
class _Draws:
    """The unperturbed point (row 0) and the perturbation trials (rows 1..).

    Attributes:
        z: parameters, flat, shape ``(T + 1, P)``.
        x: inputs, shape ``(T + 1, batch, n_0)``.
        d: targets, shape ``(T + 1, batch, n_out)``.
        u_s: per non-input layer ``v``, uniform draws in [-1, 1] that move
            the net input ``s_v``, shape ``(T + 1, batch, n_v)``.
        u_y: the same for the outputs, shape ``(T + 1, batch, n_out)``.
        jitter: how far a draw of 1 moves a net input or output, relative
            to its size; 0 in row 0. Shape ``(T + 1,)``.
    """

    z: Array
    x: Array
    d: Array
    u_s: list[Array]
    u_y: Array
    jitter: Array


@dataclass(frozen=True)
class _Evaluations:
    """Everything the references are computed from, the same on both paths.

    Attributes:
        rows: per row of :class:`_Draws`, the autodiff outputs: ``g_z``
            (P,), ``g_cols`` (batch, n_cols), and per layer ``s``,
            ``sigma`` and ``slopes`` (batch, n_v), and ``losses`` (batch,).
        loss_z: the total loss at each shifted parameter row.
        losses_cols: each example's loss at each shifted probe row,
            shape ``(rows, batch)``.
    """

    rows: list[dict[str, object]]
    loss_z: Array
    losses_cols: Array


def fits_padded(network: Network, batch: int) -> bool:
    """Return whether the shared padded function can check this case."""
    return (
        network.n_layers <= PADDED_LAYERS
        and max(network.sizes) <= PADDED_WIDTH
        and batch <= PADDED_BATCH
    )


def compute_references(
    network: Network,
    params: Mapping[str, Array],
    x: Array,
    d: Array,
    eta: float,
    rel_step: float | None = None,
    *,
    padded: bool | None = None,
    path: str | None = None,
    only: Collection[str] | None = None,
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
        padded: True for ``path="padded"``, False for ``path="plain"``;
            kept for callers that choose between those two.
        path: how to evaluate the shifted losses: ``"padded"`` (the shared
            padded function), ``"plain"`` (functions compiled for this
            shape, vmapped over every shifted row) or ``"structured"``
            (numpy, by the network's structure; see
            :mod:`gradcheck._structured`). By default the padded one
            whenever the case fits it, else the structured one.
        only: the names of the quantities wanted; on the structured path,
            finite differences are then taken along their parameters and
            probe columns only. All quantities when omitted.

    Returns:
        A :class:`Reference` per name of ``quantity_names(network)`` (of
        ``only``, when given), in that order.

    Raises:
        InvalidArgumentError: an unknown ``path`` or name in ``only``.
    """
    batch = x.shape[0]
    path = _choose_path(network, batch, padded, path)
    names = quantity_names(network)
    if only is not None:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise InvalidArgumentError(
                f"only must name quantities of {network.describe()}, got "
                f"{unknown}; the names are {names}",
                name="only",
                value=unknown,
            )
        names = [name for name in names if name in set(only)]
    shapes = network.param_shapes()
    z = np.concatenate([np.ravel(params[name]) for name in shapes])
    n_cols = _n_probe_columns(network)
    if path == "structured":
        z_sel, col_sel = _selected_rows(network, names)
    else:
        # The compiled paths evaluate fixed-length chunks of rows; they
        # take every row and return the quantities asked for.
        z_sel, col_sel = np.arange(z.size), np.arange(n_cols)
    z_rows = _rows_along(z, z_sel, rel_step)
    cols = np.zeros(n_cols)
    col_rows = _rows_along(cols, col_sel, rel_step)
    draws = _draw_trials(network, z, x, d)

    with jax.enable_x64(True):
        evaluate = {
            "padded": _evaluate_padded,
            "plain": _evaluate_plain,
            "structured": _evaluate_structured,
        }[path]
        evaluations = evaluate(network, draws, z_rows, col_rows)
        base = evaluations.rows[0]
        moved = _perturbation_spread(evaluations.rows)
        num_slopes = _sigmoid_differences(base["s"], moved, rel_step)

    num_z = _scattered(
        z_rows.combine(evaluations.loss_z, noise=moved["loss"]), z_sel, (z.size,)
    )
    # Shape (n_cols, batch): one column of probes per row, one loss per
    # example, each with its own noise.
    num_cols = _scattered(
        col_rows.combine(evaluations.losses_cols, noise=moved["losses"]),
        col_sel,
        (n_cols, batch),
    )
    refs = _assemble(network, eta, base, moved, num_z, num_cols, num_slopes)
    return {name: refs[name] for name in names}


PATHS = ("padded", "plain", "structured")


def _choose_path(
    network: Network, batch: int, padded: bool | None, path: str | None
) -> str:
    if path is None:
        if padded is not None:
            return "padded" if padded else "plain"
        return "padded" if fits_padded(network, batch) else "structured"
    if path not in PATHS:
        raise InvalidArgumentError(
            f"path must be one of {PATHS}, got path={path!r}", name="path", value=path
        )
    return path


def _selected_rows(
    network: Network, names: list[str]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Return the flat parameters and probe columns that ``names`` need.

    ``dE/dW[u->v]`` and ``Delta W[u->v]`` need the entries of ``W[u->v]``
    (biases likewise), ``theta[v]`` the probe columns of ``s_v`` and
    ``dE/dy[o]`` those of the outputs; ``dy/ds`` needs neither.
    """
    wanted = {name.split(" ", 1)[-1].removeprefix("dE/d") for name in names}
    z_sel, start = [], 0
    for name, shape in network.param_shapes().items():
        size = math.prod(shape)
        if name in wanted:
            z_sel.append(np.arange(start, start + size))
        start += size
    col_sel, start = [], 0
    for v in range(1, network.n_layers + 1):
        layer = min(v, network.output_layer)
        size = network.sizes[layer]
        key = f"y[{layer}]" if v == network.n_layers else f"theta[{v}]"
        if key in wanted:
            col_sel.append(np.arange(start, start + size))
        start += size
    empty = np.zeros(0, dtype=np.int64)
    return (
        np.concatenate(z_sel) if z_sel else empty,
        np.concatenate(col_sel) if col_sel else empty,
    )


def _rows_along(
    z: Array, selected: NDArray[np.int64], rel_step: float | None
) -> ShiftedRows:
    """Return the shifted rows of the ``selected`` entries of ``z``."""
    if selected.size == z.size:
        return ShiftedRows.along(z, default_steps(z, rel_step))
    part = z[selected]
    rows = ShiftedRows.along(part, default_steps(part, rel_step))
    # combine() reads only delta and steps, so the rows may name the
    # entries of z itself.
    return dataclasses.replace(rows, index=selected[rows.index])


def _scattered(
    estimate: NumericEstimate, selected: NDArray[np.int64], shape: tuple[int, ...]
) -> NumericEstimate:
    """Place the estimates of the selected rows in NaN arrays of ``shape``."""
    if selected.size == shape[0]:
        return estimate
    arrays = []
    for part in (estimate.value, estimate.error, estimate.step):
        full = np.full(shape, np.nan)
        full[selected] = part
        arrays.append(full)
    return NumericEstimate(*arrays)


def _assemble(
    network: Network,
    eta: float,
    base: dict[str, object],
    moved: dict[str, object],
    num_z: NumericEstimate,
    num_cols: NumericEstimate,
    num_slopes: list[NumericEstimate],
) -> dict[str, Reference]:
    """Cut the flat references into the named quantities."""
    g_z, g_cols = base["g_z"], base["g_cols"]
    r_z, r_cols = moved["g_z"], moved["g_cols"]
    refs: dict[str, Reference] = {}

    # Parameter gradients and updates.
    start = 0
    for name, shape in network.param_shapes().items():
        part = slice(start, start + math.prod(shape))
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


def _draw_trials(network: Network, z: Array, x: Array, d: Array) -> _Draws:
    """Draw the perturbation trials; row 0 is the unperturbed point.

    Each trial multiplies every parameter, input and target by
    ``1 + JITTER * u`` (16 ulps at most) and moves every net input and output
    of the forward pass likewise, with ``u`` uniform in [-1, 1] and drawn
    independently per entry: independent draws, unlike random signs, cannot
    cancel exactly between equal terms of a sum (two identical examples in
    a batch, say). The draws are seeded, so checks are repeatable, and both
    paths see the same draws.
    """
    rng = np.random.default_rng(0)
    batch = x.shape[0]
    zs, xs, ds = [z], [x], [d]
    u_s = [[np.zeros((batch, n))] for n in network.sizes[1:]]
    u_y = [np.zeros((batch, network.sizes[-1]))]
    for _ in range(PERTURBATION_TRIALS):
        zs.append(nudge(z, rng))
        xs.append(nudge(x, rng))
        ds.append(nudge(d, rng))
        for layer, n in zip(u_s, network.sizes[1:], strict=True):
            layer.append(rng.uniform(-1.0, 1.0, (batch, n)))
        u_y.append(rng.uniform(-1.0, 1.0, (batch, network.sizes[-1])))
    jitter = np.full(PERTURBATION_TRIALS + 1, JITTER)
    jitter[0] = 0.0
    return _Draws(
        np.stack(zs),
        np.stack(xs),
        np.stack(ds),
        [np.stack(layer) for layer in u_s],
        np.stack(u_y),
        jitter,
    )


def _moved(a: jax.Array, u: jax.Array, jitter: jax.Array) -> jax.Array:
    """Return the probe that moves ``a`` by ``jitter * |a| * u``, as rounding would."""
    return jax.lax.stop_gradient(jitter * jnp.abs(a) * u)


def _perturbation_spread(rows: list[dict[str, object]]) -> dict[str, object]:
    """Return how far each reference moves when its inputs move by a few ulps.

    ``rows[0]`` holds the outputs at the unperturbed point, the other rows
    those of the perturbation trials (see :func:`_draw_trials`). The
    largest move of each output over the trials is kept.
    """
    base, trials = rows[0], rows[1:]
    spread: dict[str, object] = {}
    for key in ("g_z", "g_cols", "losses"):
        spread[key] = np.max([np.abs(t[key] - base[key]) for t in trials], axis=0)
    for key in ("slopes", "sigma"):
        spread[key] = [
            np.max([np.abs(t[key][i] - b) for t in trials], axis=0)
            for i, b in enumerate(base[key])
        ]
    total = float(base["losses"].sum())
    spread["loss"] = max(abs(float(t["losses"].sum()) - total) for t in trials)
    for v, sigma in enumerate(spread.pop("sigma"), start=1):
        spread[f"sigma[{v}]"] = sigma
    # The derivation computes dy/ds as y (1 - y) from a rounded y, and
    # 1 - y cancels for y near 1: an error of an ulp of y moves the slope by
    # |1 - 2y| ulps of y, which no perturbation of s reproduces.
    spread["slopes"] = [
        np.maximum(moved, JITTER * np.abs(1.0 - 2.0 * y) * y)
        for moved, y in zip(spread["slopes"], base["sigma"], strict=True)
    ]
    return spread


def _sigmoid_differences(
    s: list[Array], moved: dict[str, object], rel_step: float | None
) -> list[NumericEstimate]:
    """Differentiate the sigmoid at every net input, all layers in one call."""
    steps = [default_steps(s_v, rel_step) for s_v in s]
    points = [elementwise_points(s_v, h) for s_v, h in zip(s, steps, strict=True)]
    flat = np.concatenate([p.ravel() for layer in points for p in layer])
    # Fixed-length chunks, so that the sigmoid compiles once.
    flat = np.pad(flat, (0, -flat.size % SIGMOID_CHUNK))
    values = np.concatenate(
        [
            np.asarray(_sigmoid(flat[i : i + SIGMOID_CHUNK]))
            for i in range(0, flat.size, SIGMOID_CHUNK)
        ]
    )
    estimates = []
    start = 0
    for v, (layer, h) in enumerate(zip(points, steps, strict=True), start=1):
        shape = layer[0].shape
        parts = []
        for _ in range(4):
            parts.append(values[start : start + layer[0].size].reshape(shape))
            start += layer[0].size
        estimates.append(
            combine_elementwise(tuple(parts), layer, h, noise=moved[f"sigma[{v}]"])
        )
    return estimates


@jax.jit
def _sigmoid(t: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(t)


def _n_probe_columns(network: Network) -> int:
    return sum(network.sizes[1:]) + network.sizes[-1]


# The plain path: functions compiled for one architecture and batch size.


def _unflatten(network: Network, z: jax.Array) -> dict[str, jax.Array]:
    params = {}
    start = 0
    for name, shape in network.param_shapes().items():
        size = math.prod(shape)
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


@functools.lru_cache(maxsize=64)
def _compiled(network: Network, batch: int) -> dict[str, Callable]:
    """Build the jitted functions for one architecture and batch size.

    The functions are cached per (network, batch) and reused, for example
    at every checkpoint of a training run.
    """
    n_cols = _n_probe_columns(network)

    def total_loss(z, x, d, probes_s, probe_y):
        params = _unflatten(network, z)
        return jnp.sum(example_losses(network, params, x, d, probes_s, probe_y))

    def autodiff_row(z, x, d, u_s, u_y, jitter):
        # With jitter > 0, every net input and output is also moved by up to
        # `jitter` of its size, independently per unit and example, as
        # rounding inside the forward pass would move it.
        params = _unflatten(network, z)
        s0, y0 = forward(network, params, x)
        probes_s = {v: _moved(s0[v], u_s[v - 1], jitter) for v in range(1, len(s0))}
        probe_y = _moved(y0[-1], u_y, jitter)
        g_z, g_s, g_y = jax.grad(total_loss, argnums=(0, 3, 4))(
            z, x, d, probes_s, probe_y
        )
        s, _ = forward(network, params, x, probes_s)
        s = s[1:]
        slopes = [jax.jvp(jax.nn.sigmoid, (a,), (jnp.ones_like(a),))[1] for a in s]
        g_cols = jnp.concatenate([g_s[v] for v in sorted(g_s)] + [g_y], axis=1)
        losses = example_losses(network, params, x, d, probes_s, probe_y)
        return g_z, g_cols, s, [jax.nn.sigmoid(a) for a in s], slopes, losses

    @jax.jit
    def loss_shifted(z, x, d, index, delta):
        probes_s, probe_y = _split_probes(network, jnp.zeros(n_cols, z.dtype), batch)

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

    @jax.jit
    def autodiff_point(z, x, d):
        # The point alone, without perturbation trials: what a screen needs,
        # at a third of the vmapped call's cost on large networks.
        u_s = [jnp.zeros((batch, n), z.dtype) for n in network.sizes[1:]]
        u_y = jnp.zeros((batch, network.sizes[-1]), z.dtype)
        return autodiff_row(z, x, d, u_s, u_y, jnp.zeros((), z.dtype))

    return {
        "autodiff": jax.jit(jax.vmap(autodiff_row)),
        "autodiff_point": autodiff_point,
        "loss_shifted": loss_shifted,
        "probe_losses_shifted": probe_losses_shifted,
    }


def _autodiff_rows(network: Network, draws: _Draws) -> list[dict[str, object]]:
    """Evaluate autodiff at the point and at every perturbation trial.

    One compiled call per (architecture, batch), vmapped over the
    ``PERTURBATION_TRIALS + 1`` rows of ``draws``.
    """
    fns = _compiled(network, draws.x.shape[1])
    # numpy arrays go to the compiled function as they are: converting
    # each with jnp.asarray first costs about a millisecond apiece.
    outputs = fns["autodiff"](
        draws.z, draws.x, draws.d, list(draws.u_s), draws.u_y, draws.jitter
    )
    g_z, g_cols, s, sigma, slopes, losses = jax.tree_util.tree_map(np.asarray, outputs)
    rows = [
        {
            "g_z": g_z[r],
            "g_cols": g_cols[r],
            "s": [a[r] for a in s],
            "sigma": [a[r] for a in sigma],
            "slopes": [a[r] for a in slopes],
            "losses": losses[r],
        }
        for r in range(draws.jitter.size)
    ]
    return rows


def _evaluate_plain(
    network: Network, draws: _Draws, z_rows: ShiftedRows, col_rows: ShiftedRows
) -> _Evaluations:
    """Evaluate with functions compiled for this architecture and batch."""
    fns = _compiled(network, draws.x.shape[1])
    rows = _autodiff_rows(network, draws)
    zj, xj, dj = (jnp.asarray(a[0]) for a in (draws.z, draws.x, draws.d))

    def evaluate(fn: Callable, rows_: ShiftedRows) -> Array:
        # Fixed-length chunks, so that each function compiles once.
        index, delta = rows_.padded(1024)
        chunk = min(1024, index.size)
        return np.concatenate(
            [
                np.asarray(
                    fn(
                        zj,
                        xj,
                        dj,
                        jnp.asarray(index[i : i + chunk]),
                        jnp.asarray(delta[i : i + chunk]),
                    )
                )
                for i in range(0, index.size, chunk)
            ]
        )

    return _Evaluations(
        rows,
        evaluate(fns["loss_shifted"], z_rows),
        evaluate(fns["probe_losses_shifted"], col_rows),
    )


def _evaluate_structured(
    network: Network, draws: _Draws, z_rows: ShiftedRows, col_rows: ShiftedRows
) -> _Evaluations:
    """Evaluate autodiff compiled per shape, the shifted losses by structure.

    The shifted rows never go through JAX: :mod:`gradcheck._structured`
    propagates each shift from the layer where it acts (see there).
    """
    rows = _autodiff_rows(network, draws)
    point = Point.from_flat(network, draws.z[0], draws.x[0], draws.d[0])
    return _Evaluations(
        rows,
        point.shifted_param_losses(z_rows.index, z_rows.delta),
        point.shifted_probe_losses(col_rows.index, col_rows.delta),
    )


# The padded path: one compiled function for every architecture that fits.


@dataclass(frozen=True)
class _Layout:
    """Where a network's entries lie in the shared padded arrays.

    Layer ``l`` of the network occupies slot ``l``, except the output
    layer, which always occupies the last slot; slots in between stay
    empty. The padded parameters are one flat vector: per slot ``v`` from
    1 on, the weights into it from every earlier slot as one
    ``(v * width, width)`` block (feeding slot major), then the biases as
    ``(slots - 1, width)``.

    Attributes:
        slots: the slot of each layer.
        z: the padded position of each flat parameter, shape ``(P,)``.
        cols: the padded position of each probe column.
    """

    slots: tuple[int, ...]
    z: NDArray[np.int64]
    cols: NDArray[np.int64]

    @classmethod
    @functools.lru_cache(maxsize=4096)
    def of(cls, network: Network) -> _Layout:
        """Return the layout of a network that fits the padded shape."""
        n_slots, width = PADDED_LAYERS, PADDED_WIDTH
        last = network.n_layers - 1
        slots = tuple(range(last)) + (n_slots - 1,)
        blocks = _weight_blocks()
        biases = blocks[-1].stop + np.arange((n_slots - 1) * width).reshape(
            n_slots - 1, width
        )
        z = []
        for name, shape in network.param_shapes().items():
            if name.startswith("W"):
                u, v = (slots[int(i)] for i in name[2:-1].split("->"))
                block = np.arange(blocks[v - 1].start, blocks[v - 1].stop)
                block = block.reshape(v, width, width)[u]
            else:
                block = biases[slots[int(name[2:-1])] - 1]
            z.append(block[tuple(slice(0, n) for n in shape)].ravel())
        # Probe columns: slots 1.. of net inputs, then the outputs.
        columns = np.arange(n_slots * width).reshape(n_slots, width)
        cols = [columns[slots[v] - 1, :n] for v, n in enumerate(network.sizes)][1:]
        cols.append(columns[n_slots - 1, : network.sizes[-1]])
        return cls(slots, np.concatenate(z), np.concatenate(cols))


def _weight_blocks() -> list[slice]:
    """Return where the weights into each slot 1.. lie in the padded vector."""
    blocks, start = [], 0
    for v in range(1, PADDED_LAYERS):
        size = v * PADDED_WIDTH * PADDED_WIDTH
        blocks.append(slice(start, start + size))
        start += size
    return blocks


N_PADDED_PARAMS = _weight_blocks()[-1].stop + (PADDED_LAYERS - 1) * PADDED_WIDTH


def _padded_forward(
    z: jax.Array,
    x: jax.Array,
    probes_s: jax.Array | None = None,
    probe_y: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Run the padded network forward: ``s`` and ``y`` per slot, ``(S, B, W)``.

    Each slot's net input is one product of every earlier slot's outputs,
    side by side, with its weight block; absent weights are zeros, so
    absent units add exact zeros. ``z`` is the padded parameter vector
    (see :class:`_Layout`), ``x`` and ``probe_y`` are ``(B, W)``,
    ``probes_s`` is ``(S, B, W)`` with slot 0 unused.
    """
    width = PADDED_WIDTH
    biases = z[_weight_blocks()[-1].stop :].reshape(PADDED_LAYERS - 1, width)
    s_all, y_all = [x], [x]
    for v, block in enumerate(_weight_blocks(), start=1):
        weights = z[block].reshape(v * width, width)
        s = jnp.concatenate(y_all, axis=-1) @ weights + biases[v - 1]
        if probes_s is not None:
            s = s + probes_s[v]
        y = jax.nn.sigmoid(s)
        if probe_y is not None and v == PADDED_LAYERS - 1:
            y = y + probe_y
        s_all.append(s)
        y_all.append(y)
    return jnp.stack(s_all), jnp.stack(y_all)


def _padded_losses(
    z: jax.Array,
    x: jax.Array,
    d: jax.Array,
    mask: jax.Array,
    probes_s: jax.Array | None = None,
    probe_y: jax.Array | None = None,
) -> jax.Array:
    """Return each example's loss, ``(B,)``; padded examples give exact zeros.

    This is the one place where the padded path evaluates the loss: every
    shifted evaluation (parameters, probes) goes through it. ``mask`` is 1
    on real (example, output) pairs and 0 elsewhere, so padded outputs and
    examples contribute ``(0 * (d - y))^2 = 0``.
    """
    _, y = _padded_forward(z, x, probes_s, probe_y)
    return 0.5 * jnp.sum((mask * (d - y[-1])) ** 2, axis=-1)


def _padded_probe_columns(columns: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split ``(S * W,)`` probe columns into ``(S, B, W)`` and ``(B, W)`` probes."""
    n_slots, width, batch = PADDED_LAYERS, PADDED_WIDTH, PADDED_BATCH
    per_slot = columns[: (n_slots - 1) * width].reshape(n_slots - 1, 1, width)
    probes_s = jnp.concatenate([jnp.zeros((1, 1, width), columns.dtype), per_slot])
    probes_s = jnp.broadcast_to(probes_s, (n_slots, batch, width))
    probe_y = jnp.broadcast_to(columns[(n_slots - 1) * width :], (batch, width))
    return probes_s, probe_y


@jax.jit
def _padded_evaluations(
    z: jax.Array,
    x: jax.Array,
    d: jax.Array,
    u_s: jax.Array,
    u_y: jax.Array,
    jitter: jax.Array,
    mask: jax.Array,
    z_index: jax.Array,
    z_delta: jax.Array,
    col_index: jax.Array,
    col_delta: jax.Array,
) -> tuple:
    """Evaluate everything for one padded case in one compiled call.

    Rows 0.. of ``z``, ``x``, ``d``, ``u_s``, ``u_y`` and ``jitter`` are the
    unperturbed point and the perturbation trials (see ``_Draws``); the
    shifted rows are taken about row 0.
    """
    global padded_traces
    padded_traces += 1  # runs once per trace, not per call

    def total_loss(z_, x_, d_, probes_s, probe_y):
        return jnp.sum(_padded_losses(z_, x_, d_, mask, probes_s, probe_y))

    def autodiff_row(z_, x_, d_, u_s_, u_y_, jitter_):
        s0, y0 = _padded_forward(z_, x_)
        probes_s = _moved(s0, u_s_, jitter_)
        probe_y = _moved(y0[-1], u_y_, jitter_)
        g_z, g_s, g_y = jax.grad(total_loss, argnums=(0, 3, 4))(
            z_, x_, d_, probes_s, probe_y
        )
        s, _ = _padded_forward(z_, x_, probes_s)
        slopes = jax.jvp(jax.nn.sigmoid, (s,), (jnp.ones_like(s),))[1]
        losses = _padded_losses(z_, x_, d_, mask, probes_s, probe_y)
        return g_z, g_s, g_y, s, jax.nn.sigmoid(s), slopes, losses

    rows = jax.vmap(autodiff_row)(z, x, d, u_s, u_y, jitter)

    loss_z = _shifted_losses(z[0], x[0], d[0], mask, z_index, z_delta)

    def probe_losses(i, h):
        columns = jnp.zeros(PADDED_LAYERS * PADDED_WIDTH, z.dtype).at[i].set(h)
        return _padded_losses(z[0], x[0], d[0], mask, *_padded_probe_columns(columns))

    return rows, loss_z, jax.vmap(probe_losses)(col_index, col_delta)


def _shifted_losses(
    z: jax.Array,
    x: jax.Array,
    d: jax.Array,
    mask: jax.Array,
    index: jax.Array,
    delta: jax.Array,
) -> jax.Array:
    """Return the total loss at ``z + delta[k] e_index[k]`` for every row k."""
    no_s, no_y = _padded_probe_columns(jnp.zeros(PADDED_LAYERS * PADDED_WIDTH))

    def one(i: jax.Array, h: jax.Array) -> jax.Array:
        return jnp.sum(_padded_losses(z.at[i].add(h), x, d, mask, no_s, no_y))

    return jax.vmap(one)(index, delta)


@jax.jit
def _more_shifted_losses(
    z: jax.Array,
    x: jax.Array,
    d: jax.Array,
    mask: jax.Array,
    index: jax.Array,
    delta: jax.Array,
) -> jax.Array:
    """Evaluate shifted rows beyond the first call's, ``CHUNK_ROWS`` at a time."""
    global padded_traces
    padded_traces += 1
    return _shifted_losses(z, x, d, mask, index, delta)


def _evaluate_padded(
    network: Network, draws: _Draws, z_rows: ShiftedRows, col_rows: ShiftedRows
) -> _Evaluations:
    """Evaluate with the shared padded function; read back real entries only."""
    layout = _Layout.of(network)
    n_slots, width, batch_pad = PADDED_LAYERS, PADDED_WIDTH, PADDED_BATCH
    n_rows, batch = draws.x.shape[:2]
    sizes = network.sizes
    z = np.zeros((n_rows, N_PADDED_PARAMS))
    z[:, layout.z] = draws.z
    x = np.zeros((n_rows, batch_pad, width))
    x[:, :batch, : sizes[0]] = draws.x
    d = np.zeros((n_rows, batch_pad, width))
    d[:, :batch, : sizes[-1]] = draws.d
    u_s = np.zeros((n_rows, n_slots, batch_pad, width))
    for v, u in enumerate(draws.u_s, start=1):
        u_s[:, layout.slots[v], :batch, : sizes[v]] = u
    u_y = np.zeros((n_rows, batch_pad, width))
    u_y[:, :batch, : sizes[-1]] = draws.u_y
    mask = np.zeros((batch_pad, width))
    mask[:batch, : sizes[-1]] = 1.0

    chunk = SMALL_ROWS if len(z_rows) <= SMALL_ROWS else CHUNK_ROWS
    z_index, z_delta = _padded_rows(z_rows, layout.z, chunk)
    col_index, col_delta = _padded_rows(col_rows, layout.cols, 4 * n_slots * width)
    outputs = _padded_evaluations(
        z,
        x,
        d,
        u_s,
        u_y,
        draws.jitter,
        mask,
        z_index[:chunk],
        z_delta[:chunk],
        col_index,
        col_delta,
    )
    more = [
        _more_shifted_losses(
            z[0], x[0], d[0], mask, z_index[i : i + chunk], z_delta[i : i + chunk]
        )
        for i in range(chunk, z_index.size, chunk)
    ]
    (g_z, g_s, g_y, s, sigma, slopes, losses), loss_z, losses_cols = (
        jax.tree_util.tree_map(np.asarray, outputs)
    )
    loss_z = np.concatenate([loss_z] + [np.asarray(m) for m in more])

    # Read back the real entries only.
    layers = [(layout.slots[v], n) for v, n in enumerate(sizes)][1:]
    g_cols = np.concatenate(
        [g_s[:, slot, :batch, :n] for slot, n in layers]
        + [g_y[:, :batch, : sizes[-1]]],
        axis=2,
    )
    g_z = g_z[:, layout.z]
    rows = [
        {
            "g_z": g_z[r],
            "g_cols": g_cols[r],
            "s": [s[r, slot, :batch, :n] for slot, n in layers],
            "sigma": [sigma[r, slot, :batch, :n] for slot, n in layers],
            "slopes": [slopes[r, slot, :batch, :n] for slot, n in layers],
            "losses": losses[r, :batch],
        }
        for r in range(n_rows)
    ]
    return _Evaluations(rows, loss_z, losses_cols[:, :batch])


def _padded_rows(
    rows: ShiftedRows, positions: NDArray[np.int64], multiple: int
) -> tuple[NDArray[np.int64], Array]:
    """Return the shifted rows at padded positions, as many as a multiple.

    The extra rows shift nothing; they are dropped when combined.
    """
    size = -(-len(rows) // multiple) * multiple
    index = np.zeros(size, dtype=np.int64)
    delta = np.zeros(size)
    index[: len(rows)] = positions[rows.index]
    delta[: len(rows)] = rows.delta
    return index, delta
