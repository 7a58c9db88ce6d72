# SPDX-License-Identifier: MIT
"""The delta rule's extra evidence: Taylor remainders and step sweeps.

Both evaluate the loss with the numpy forward pass of
:mod:`gradcheck._delta_numpy`, a few hundred points in one call, so they
compile nothing and cost a fraction of the references.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from gradcheck._compare import SAFETY_FACTOR, QuantityComparison, Reference
from gradcheck._delta_numpy import (
    flat_params,
    n_probe_columns,
    param_offsets,
    row_losses,
)
from gradcheck._networks import Network
from gradcheck._numeric import EPS, ROUNDING_FACTOR
from gradcheck._precision import float_eps, is_float_dtype
from gradcheck._sweeps import StepSweep, sweep_entry, worst_entries
from gradcheck._taylor import TaylorTest, taylor_tests

__all__ = ["delta_rule_sweeps", "delta_rule_taylor"]

Array = NDArray[np.float64]


def _eps_of(value: object) -> float:
    dtype = np.asarray(value).dtype
    return float_eps(dtype) if is_float_dtype(dtype) else EPS


def delta_rule_taylor(
    network: Network,
    params: Mapping[str, Array],
    x: Array,
    d: Array,
    analytic: Mapping[str, object],
    references: Mapping[str, Reference],
    noise: float = 0.0,
) -> tuple[TaylorTest, ...]:
    """Run the Taylor-remainder test on ``dE/dW`` and ``dE/db``, per tensor.

    The rounding allowance of each entry is the rounding part of its band,
    in the analytic value's own precision, so that a right float32
    derivation is not read as first order.
    """
    z = flat_params(network, params)
    offsets = param_offsets(network)
    names, parts, grads, allowance = [], [], [], []
    autodiff = np.zeros(z.size)
    for name, part in offsets.items():
        quantity = f"dE/d{name}"
        ref = references[quantity]
        autodiff[part] = np.ravel(ref.autodiff)
        if quantity not in analytic:
            continue
        scale = float(np.max(np.abs(ref.autodiff), initial=0.0))
        ratio = _eps_of(analytic[quantity]) / EPS
        names.append(quantity)
        parts.append(part)
        grads.append(np.asarray(analytic[quantity], dtype=np.float64))
        allowance.append(
            SAFETY_FACTOR
            * ratio
            * (np.ravel(ref.rounding) + ROUNDING_FACTOR * EPS * scale)
            * np.ones(part.stop - part.start)
        )

    def evaluate(rows: Array) -> Array:
        return row_losses(network, rows, x, d).sum(axis=1)

    return taylor_tests(
        evaluate, z, names, parts, grads, autodiff, allowance, noise=noise
    )


def delta_rule_sweeps(
    network: Network,
    params: Mapping[str, Array],
    x: Array,
    d: Array,
    eta: float,
    comparisons: Sequence[QuantityComparison],
) -> tuple[StepSweep, ...]:
    """Sweep the step for the worst entries of a delta-rule check.

    Parameter gradients and updates shift one parameter; ``theta`` and
    ``dE/dy`` shift one probe column and read one example's loss.
    ``dy/ds`` entries are not swept: their central difference is of the
    sigmoid alone, not of the loss.
    """
    z = flat_params(network, params)
    offsets = param_offsets(network)
    shapes = network.param_shapes()
    n_cols = n_probe_columns(network)
    column_start = {}
    start = 0
    for v in range(1, network.n_layers):
        column_start[f"theta[{v}]"] = start
        start += network.sizes[v]
    column_start[f"dE/dy[{network.output_layer}]"] = start

    sweeps = []

    def sweepable(name: str) -> bool:
        return not name.startswith("dy/ds")

    for q, entry, index in worst_entries(comparisons, sweepable):
        kind, _, param = q.name.partition(" ")
        if q.name.startswith(("dE/dW", "dE/db")) or kind == "Delta":
            name = q.name[4:] if kind != "Delta" else param
            scale = -eta if kind == "Delta" else 1.0
            k = offsets[name].start + int(np.ravel_multi_index(index, shapes[name]))

            def evaluate(shifts: Array, k: int = k) -> Array:
                rows = np.broadcast_to(z, (shifts.size, z.size)).copy()
                rows[:, k] += shifts
                return row_losses(network, rows, x, d).sum(axis=1)

            sweeps.append(sweep_entry(evaluate, float(z[k]), entry, scale))
        elif q.name in column_start:
            example, unit = index
            c = column_start[q.name] + unit
            scale = -1.0 if q.name.startswith("theta") else 1.0

            def evaluate(shifts: Array, c: int = c, example: int = example) -> Array:
                columns = np.zeros((shifts.size, n_cols))
                columns[:, c] = shifts
                base = np.broadcast_to(z, (shifts.size, z.size))
                return row_losses(network, base, x, d, columns)[:, example]

            sweeps.append(sweep_entry(evaluate, 0.0, entry, scale))
    return tuple(sweeps)
