# SPDX-License-Identifier: MIT
"""Shifted losses of a layered sigmoid network, evaluated by structure.

Finite differences of the delta rule's loss need the loss at four
shifted points per parameter and per probe column (see
:class:`gradcheck._numeric.ShiftedRows`). Running the whole network
forward at each of them costs ``4 P`` forward passes, most of which
recompute what did not change. Here each shift is propagated from where
it acts, in numpy, with the unperturbed activations reused below it:

* shifting ``W[u->v][i, j]`` by ``delta`` adds ``delta * y_u[:, i]`` to
  column ``j`` of ``s_v`` and to nothing else; shifting ``b[v][j]``, or a
  probe on ``s_v[:, j]``, adds ``delta`` to the same column;
* so only column ``j`` of ``y_v`` changes, by some ``dy`` of shape
  ``(batch,)``, and each successor ``w`` of ``v`` sees the rank-one change
  ``outer(dy, W[v->w][j, :])`` of its net input;
* every layer above runs as one batched matrix product per chunk of
  shifts, on the changes of its inputs only: ``s_w' = s_w + sum_u dy_u @
  W[u->w]``.

A shift of an output column (a weight or bias into the output layer, or
a probe on the output) changes one output per example, so its loss is the
unperturbed loss plus the change of that one term.

The values are the same losses the compiled paths evaluate, up to the
order of rounding: the shifted net input ``s + delta * y_u[:, i]`` is the
exact ``y_u @ (W + delta e_ij)`` of real arithmetic, rounded differently.
Memory is bounded by ``CHUNK_ELEMENTS`` floats per intermediate array,
whatever the number of shifts.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

from gradcheck._networks import Network, bias_name, weight_name

__all__ = ["CHUNK_ELEMENTS", "Point", "sigmoid", "workspace"]

Array = NDArray[np.float64]

# Floats per intermediate array of a chunk of shifts, (shifts, batch,
# width): 2 MiB, which keeps a chunk's working set in cache and bounds
# memory whatever the network.
CHUNK_ELEMENTS = 1 << 18

# The most floats of working memory kept between directional evaluations.
KEPT_WORKSPACE = 1 << 22


class _Workspace(threading.local):
    """Working arrays reused from one directional evaluation to the next.

    A screen of a large network allocates some megabytes of intermediate
    arrays; fresh ones each call cost more in page faults than the
    arithmetic on them (measured: 1,700 faults a call at 101,386
    parameters). Each thread keeps its own, up to ``KEPT_WORKSPACE``
    floats; nothing handed out by it leaves this module.
    """

    def __init__(self) -> None:
        self.arrays: dict[str, Array] = {}

    def take(self, name: str, shape: tuple[int, ...]) -> Array:
        """Return an uninitialised array of ``shape``, kept under ``name``."""
        size = math.prod(shape)
        kept = self.arrays.get(name)
        if kept is None or kept.size < size:
            kept = np.empty(size)
            if size + sum(a.size for a in self.arrays.values()) <= KEPT_WORKSPACE:
                self.arrays[name] = kept
        return kept[:size].reshape(shape)


_WORKSPACE = _Workspace()


def workspace(name: str, shape: tuple[int, ...]) -> Array:
    """Return a kept, uninitialised working array (see :class:`_Workspace`).

    It is overwritten by the next caller that takes ``name`` in this
    thread, so it must not outlive the computation that took it.
    """
    return _WORKSPACE.take(name, shape)


def sigmoid(s: Array, out: Array | None = None) -> Array:
    """Return the logistic sigmoid of ``s``, elementwise, in float64.

    ``1 / (1 + exp(-s))`` is accurate to a few ulps everywhere: for very
    negative ``s`` the reciprocal of a huge number keeps its relative
    accuracy, and ``exp`` overflows to ``inf`` only where the sigmoid is
    below the smallest normal float, giving 0.
    """
    out = np.negative(s, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1.0
    # Correctly rounded either way; numpy's division loop is twice as fast.
    return np.divide(1.0, out, out=out)


@functools.lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    # Finding the loaded BLAS libraries takes about a millisecond; do it once.
    return ThreadpoolController()


# BLAS's thread count is one setting for the whole process, so the
# limits of checks running in several threads are counted: the first to
# enter sets one thread, the last to leave restores what was there.
_BLAS_LOCK = threading.Lock()
_blas_holders = 0
_blas_restore: contextlib.AbstractContextManager | None = None


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Limit BLAS to one thread while chunks of shifts are evaluated.

    The products here are small, ``(K * batch, n_w) @ (n_w, n_x)``;
    splitting them across threads costs more than it saves, and several
    times more when other processes hold the cores (measured: 0.3 s on
    one thread against 1.4 s on two busy ones, for 104,488 shifts of a
    64-128-128-10 network). Other threads of the process run with one
    BLAS thread meanwhile too.
    """
    global _blas_holders, _blas_restore
    with _BLAS_LOCK:
        if _blas_holders == 0:
            _blas_restore = _controller().limit(limits=1, user_api="blas")
        _blas_holders += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _blas_holders -= 1
            if _blas_holders == 0 and _blas_restore is not None:
                _blas_restore.restore_original_limits()
                _blas_restore = None


@dataclass(frozen=True)
class Point:
    """A network at one point, with its unperturbed forward pass.

    Attributes:
        network: the architecture.
        params: float64 ``"W[u->v]"`` arrays ``(n_u, n_v)`` and ``"b[v]"``
            arrays ``(n_v,)``.
        d: targets, shape ``(batch, n_out)``.
        s: net input per layer, ``(batch, n_v)``; ``s[0]`` is the input.
        y: output per layer, ``(batch, n_v)``; ``y[0]`` is the input.
        losses: each example's loss, ``(batch,)``.
    """

    network: Network
    params: Mapping[str, Array]
    d: Array
    s: list[Array]
    y: list[Array]
    losses: Array

    @classmethod
    def at(
        cls, network: Network, params: Mapping[str, Array], x: Array, d: Array
    ) -> Point:
        """Run the network forward at ``params`` on ``x`` ``(batch, n_0)``."""
        s, y = [x], [x]
        for v in range(1, network.n_layers):
            s_v = sum(y[u] @ params[weight_name(u, v)] for u in network.predecessors(v))
            if network.bias:
                s_v = s_v + params[bias_name(v)]
            s.append(s_v)
            y.append(sigmoid(s_v))
        losses = 0.5 * np.sum((d - y[-1]) ** 2, axis=-1)
        return cls(network, params, d, s, y, losses)

    @classmethod
    def from_flat(cls, network: Network, z: Array, x: Array, d: Array) -> Point:
        """Like :meth:`at`, with the parameters flat in ``param_shapes`` order."""
        params, start = {}, 0
        for name, shape in network.param_shapes().items():
            size = math.prod(shape)
            params[name] = z[start : start + size].reshape(shape)
            start += size
        return cls.at(network, params, x, d)

    @property
    def batch(self) -> int:
        """Number of examples."""
        return int(self.d.shape[0])

    def shifted_param_losses(self, index: NDArray[np.int64], delta: Array) -> Array:
        """Return the total loss with one flat parameter shifted, per row.

        Args:
            index: the flat parameter (``param_shapes`` order) shifted in
                each row, shape ``(R,)``.
            delta: how far it is shifted, ``(R,)``.

        Returns:
            ``E`` at each shifted point, ``(R,)``.
        """
        with _one_blas_thread():
            return self._shifted_param_losses(index, delta)

    def _shifted_param_losses(self, index: NDArray[np.int64], delta: Array) -> Array:
        out = np.empty(index.size)
        start = 0
        for name, shape in self.network.param_shapes().items():
            stop = start + math.prod(shape)
            rows = np.flatnonzero((index >= start) & (index < stop))
            local = index[rows] - start
            if name.startswith("W"):
                u, v = (int(k) for k in name[2:-1].split("->"))
                source, column = np.divmod(local, shape[1])
            else:
                u, v = -1, int(name[2:-1])
                source, column = None, local
            for part in self._chunks(rows, v):
                sel = slice(part.start, part.stop)
                shift = delta[rows[sel], None]
                if u < 0:
                    c = np.broadcast_to(shift, (shift.size, self.batch))
                else:
                    c = shift * self.y[u][:, source[sel]].T
                out[rows[sel]] = self._column_losses(v, column[sel], c).sum(axis=1)
            start = stop
        return out

    def shifted_probe_losses(self, index: NDArray[np.int64], delta: Array) -> Array:
        """Return each example's loss with one probe column shifted, per row.

        The probe columns are, in order, every unit of every non-input
        layer's net input (layer by layer), then every output unit; a
        column's probe adds the same amount to that unit in every example.

        Args:
            index: the probe column shifted in each row, ``(R,)``.
            delta: how far, ``(R,)``.

        Returns:
            Each example's loss at each shifted point, ``(R, batch)``.
        """
        with _one_blas_thread():
            return self._shifted_probe_losses(index, delta)

    def _shifted_probe_losses(self, index: NDArray[np.int64], delta: Array) -> Array:
        network = self.network
        out = np.empty((index.size, self.batch))
        start = 0
        for v in range(1, network.n_layers + 1):
            # Layer n_layers stands for the probe on the outputs.
            n = network.sizes[min(v, network.output_layer)]
            rows = np.flatnonzero((index >= start) & (index < start + n))
            column = index[rows] - start
            layer = min(v, network.output_layer)
            for part in self._chunks(rows, layer):
                sel = slice(part.start, part.stop)
                shift = np.broadcast_to(
                    delta[rows[sel], None], (part.stop - part.start, self.batch)
                )
                if v == network.n_layers:
                    out[rows[sel]] = self._output_losses(
                        column[sel], self.y[-1][:, column[sel]].T + shift
                    )
                else:
                    out[rows[sel]] = self._column_losses(layer, column[sel], shift)
            start += n
        return out

    def directional_losses(
        self, directions: Mapping[int, tuple[Array, Array]]
    ) -> Array:
        """Return the total loss with net inputs moved along directions.

        Args:
            directions: per non-input layer ``v``, ``(q, h)``: changes of
                ``s_v``, ``(D_v, batch, n_v)``, and a step for each,
                ``(D_v,)``.

        Returns:
            ``E`` at ``s_v + t q[i]`` for ``t`` in ``(h, -h, h/2, -h/2)``,
            ``(4, sum D_v)``, the directions of the layers in increasing
            ``v``.

        Directions that start at different layers run through the layers
        above together, one product per connection and chunk: a change of
        ``s_v`` is a change of ``s_w`` once it has passed layer ``w - 1``.
        Unlike the one-entry shifts, these are few rows of whole net
        inputs, so their products are large enough for BLAS threads to pay
        off (measured: 1.7 ms on two threads against 2.4 ms on one for 48
        directions of a 128-256-256-10 network).
        """
        layers = sorted(directions)
        counts = [directions[v][0].shape[0] for v in layers]
        total = sum(counts)
        widest = max(self.network.sizes[layers[0] :])
        size = max(1, CHUNK_ELEMENTS // (4 * self.batch * widest))
        bounds = np.cumsum([0, *counts])
        out = np.empty((4, total))
        for first in range(0, total, size):
            last = min(first + size, total)
            # This chunk's directions, per layer, in increasing layer.
            parts = []
            for v, lo, hi in zip(layers, bounds[:-1], bounds[1:], strict=True):
                if lo < last and hi > first:
                    q, h = directions[v]
                    part = slice(max(first - lo, 0), min(last, hi) - lo)
                    parts.append((v, q[part], h[part]))
            out[:, first:last] = self._propagate_directions(parts)
        return out

    def _propagate_directions(self, parts: list[tuple[int, Array, Array]]) -> Array:
        """Run directions that start at several layers up to the loss.

        Args:
            parts: ``(v, q, h)`` in increasing ``v``, as
                :meth:`directional_losses` takes them.

        Returns:
            ``(4, D)``: the loss per step and direction, the directions of
            the parts in order.

        Each layer's rows are the four steps of every direction that has
        started at or below it, ``(D_w, 4, batch, n_w)``: the directions
        that started lower come first, so what reaches a layer from below
        is a leading block of its rows.
        """
        network, batch = self.network, self.batch
        start = {v: q for v, q, _ in parts}
        steps = {v: h for v, _, h in parts}
        # Directions that have started at or below each layer.
        started, seen = {}, 0
        for w in range(parts[0][0], network.output_layer + 1):
            seen += start[w].shape[0] if w in start else 0
            started[w] = seen
        # Changes that skip ahead wait here: (directions covered, change).
        waiting: dict[int, list[tuple[int, Array]]] = {}
        net = None
        for w in range(parts[0][0], network.output_layer + 1):
            count, n_w = started[w], network.sizes[w]
            if net is None:
                net = _WORKSPACE.take(f"net{w}", (count, 4, batch, n_w))
            for covered, change in waiting.pop(w, []):
                net[:covered] += change
            if w in start:
                q, h = start[w], steps[w]
                shifts = np.stack([h, -h, h / 2.0, -h / 2.0], axis=1)
                np.multiply(
                    q[:, None], shifts[:, :, None, None], out=net[count - len(q) :]
                )
            net += self.s[w]
            y_new = sigmoid(net, out=net)
            if w == network.output_layer:
                y_new -= self.d
                y_new *= y_new
                return 0.5 * np.sum(y_new, axis=(2, 3)).T
            dy = y_new
            dy -= self.y[w]
            flat = dy.reshape(-1, n_w)
            following = None
            for x in network.successors(w):
                shape = (count, 4, batch, network.sizes[x])
                if x == w + 1:
                    following = _WORKSPACE.take(f"net{x}", (started[x], *shape[1:]))
                    change = following[:count]
                else:
                    change = _WORKSPACE.take(f"skip{w}->{x}", shape)
                    waiting.setdefault(x, []).append((count, change))
                # A leading block of a kept array: contiguous, so the
                # product writes straight into it.
                np.matmul(
                    flat,
                    self.params[weight_name(w, x)],
                    out=change.reshape(-1, shape[-1]),
                )
            net = following
        # Every layer feeds the next, so a change always reaches the output.
        raise AssertionError("a change did not reach the output layer")

    def output_shift_losses(self, dy: Array) -> Array:
        """Return each example's loss with ``dy[k]`` added to the outputs.

        Args:
            dy: the change of the outputs per row, ``(K, batch, n_out)``.

        Returns:
            ``(K, batch)``.
        """
        return 0.5 * np.sum((self.d - self.y[-1] - dy) ** 2, axis=-1)

    def _chunks(self, rows: NDArray[np.int64], v: int) -> list[range]:
        """Split ``rows`` into chunks whose arrays above layer ``v`` stay small."""
        widest = max(self.network.sizes[v:])
        size = max(1, CHUNK_ELEMENTS // (self.batch * widest))
        return [range(i, min(i + size, rows.size)) for i in range(0, rows.size, size)]

    def _column_losses(self, v: int, column: NDArray[np.int64], c: Array) -> Array:
        """Return each example's loss with ``c[k]`` added to ``s_v[:, column[k]]``.

        Args:
            v: the layer whose net input is shifted.
            column: the unit shifted per row, ``(K,)``.
            c: the shift per row and example, ``(K, batch)``.

        Returns:
            ``(K, batch)``.
        """
        network = self.network
        y_col = sigmoid(self.s[v][:, column].T + c)
        if v == network.output_layer:
            return self._output_losses(column, y_col)
        dy = y_col - self.y[v][:, column].T
        ds = {
            w: dy[:, :, None] * self.params[weight_name(v, w)][column][:, None, :]
            for w in network.successors(v)
        }
        return self._propagate(v + 1, ds)

    def _output_losses(self, column: NDArray[np.int64], y_col: Array) -> Array:
        """Return each example's loss with output ``column[k]`` set to ``y_col[k]``.

        The loss changes in one term, so the change of that term is added
        to the unperturbed loss: the term's difference is formed as a
        product, without cancellation.
        """
        d_col = self.d[:, column].T
        y_old = self.y[-1][:, column].T
        change = 0.5 * (y_old - y_col) * (2.0 * d_col - y_old - y_col)
        return self.losses + change

    def _propagate(self, first: int, ds: dict[int, Array]) -> Array:
        """Run layers ``first..`` on changed net inputs; return the losses.

        Args:
            first: the lowest layer whose net input changed.
            ds: the change of each layer's net input, ``(K, batch, n_w)``;
                added to as the changes propagate.

        Returns:
            Each example's loss per row, ``(K, batch)``.
        """
        network = self.network
        out = network.output_layer
        for w in range(first, out + 1):
            if w not in ds:
                continue
            # In place: each array of a chunk is written a few times and
            # allocated once.
            net = ds.pop(w)
            net += self.s[w]
            y_new = sigmoid(net, out=net)
            if w == out:
                y_new -= self.d
                y_new *= y_new
                return 0.5 * np.sum(y_new, axis=-1)
            dy = y_new
            dy -= self.y[w]
            k, batch, n_w = dy.shape
            flat = dy.reshape(k * batch, n_w)
            for x in network.successors(w):
                change = (flat @ self.params[weight_name(w, x)]).reshape(k, batch, -1)
                if x in ds:
                    ds[x] += change
                else:
                    ds[x] = change
        # Every layer feeds the next, so a change always reaches the output.
        raise AssertionError("a change did not reach the output layer")
