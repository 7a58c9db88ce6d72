# SPDX-License-Identifier: MIT
"""The result of one check, and its failure message."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradcheck._compare import QuantityComparison, Verdict
from gradcheck._complex_step import ComplexStep
from gradcheck._networks import Network
from gradcheck._sweeps import StepSweep
from gradcheck._taylor import TaylorTest
from gradcheck.errors import (
    GradientMismatchError,
    InconclusiveWarning,
    NotDifferentiableWarning,
)

__all__ = [
    "CheckResult",
    "MAX_MESSAGE_QUANTITIES",
    "first_failing",
    "format_failure",
    "raise_on_failure",
]

# Failing quantities listed in a failure message; the report holds the rest.
MAX_MESSAGE_QUANTITIES = 3


@dataclass(frozen=True)
class CheckResult:
    """The outcome of checking one derivation at one point.

    Attributes:
        verdict: ``fail`` if any quantity failed, else ``inconclusive`` if
            the references disagreed anywhere, else ``pass``.
        quantities: one comparison per named quantity, in the order the
            derivation computes them (for the delta rule, output layer
            first; for a general gradient, declared intermediates first,
            then the parameters in pytree order).
        first_wrong: the first failing quantity in that order, the step
            where the derivation first goes wrong; ``None`` if none failed.
        subject: what was checked, in words: an architecture, or the
            parameters' names and shapes.
        n_params: number of scalar parameters.
        network: the architecture, for delta-rule checks.
        batch: number of examples, when known.
        eta: the learning rate of ``Delta W``, for delta-rule checks.
        not_provided: intermediate quantities the derivation did not
            return, which therefore went unchecked.
        autodiff_skipped: why there was no autodiff reference (a loss JAX
            cannot trace), or empty. Without it, the analytic gradient is
            judged against finite differences and their error estimate.
        label: what was checked, for reports (for example ``generated #3``).
        reproduce: how to reproduce the check, for example a seed.
        details: free-form facts for reports, such as the fraction of
            saturated units.
        diagnosis: what the whole check says about the mistake, beyond any
            one quantity (for example a backward pass right only for the
            all-ones cotangent), or empty.
        complex_step: what became of the complex-step reference (accepted
            entries, rejections and why), or ``None`` where it was not tried.
        taylor: the Taylor-remainder test per quantity (see
            :mod:`gradcheck._taylor`); evidence, never part of the verdict.
        sweeps: the central difference against its step for the worst
            entries (see :mod:`gradcheck._sweeps`).
    """

    verdict: Verdict
    quantities: tuple[QuantityComparison, ...]
    first_wrong: str | None
    subject: str
    n_params: int
    network: Network | None = None
    batch: int | None = None
    eta: float | None = None
    not_provided: tuple[str, ...] = ()
    autodiff_skipped: str = ""
    label: str = ""
    reproduce: str = ""
    details: dict[str, object] = field(default_factory=dict)
    diagnosis: str = ""
    complex_step: ComplexStep | None = None
    taylor: tuple[TaylorTest, ...] = ()
    sweeps: tuple[StepSweep, ...] = ()

    @property
    def numeric_reference(self) -> str:
        """Name the numeric reference used, in words."""
        if self.complex_step is None:
            return "central differences"
        return self.complex_step.numeric_reference

    def __repr__(self) -> str:
        failed = sum(q.verdict is Verdict.FAIL for q in self.quantities)
        return (
            f"CheckResult(verdict={self.verdict.value!r}, subject={self.subject!r}, "
            f"first_wrong={self.first_wrong!r}, quantities={len(self.quantities)}, "
            f"failed={failed}, inconclusive={self.n_inconclusive_quantities})"
        )

    @property
    def n_inconclusive_quantities(self) -> int:
        """Quantities whose references disagreed."""
        return sum(q.verdict is Verdict.INCONCLUSIVE for q in self.quantities)

    def quantity(self, name: str) -> QuantityComparison:
        """Return the comparison of the quantity called ``name``."""
        for q in self.quantities:
            if q.name == name:
                return q
        raise KeyError(name)

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready copy, shared with nothing (see :func:`strict_json`)."""
        return strict_json(
            {
                "label": self.label,
                "verdict": str(self.verdict),
                "network": None if self.network is None else self.network.to_dict(),
                "architecture": self.subject,
                "n_params": self.n_params,
                "batch": self.batch,
                "eta": self.eta,
                "first_wrong": self.first_wrong,
                "not_provided": list(self.not_provided),
                "autodiff_skipped": self.autodiff_skipped,
                "reproduce": self.reproduce,
                "details": self.details,
                "diagnosis": self.diagnosis,
                "numeric_reference": self.numeric_reference,
                "complex_step": None
                if self.complex_step is None
                else self.complex_step.to_dict(),
                "taylor": [t.to_dict() for t in self.taylor],
                "sweeps": [s.to_dict() for s in self.sweeps],
                "quantities": [q.to_dict() for q in self.quantities],
            }
        )


def strict_json(value: Any) -> Any:
    """Return a copy of ``value`` that strict JSON can hold, recursively.

    NaN becomes ``"nan"``, infinities ``"inf"`` and ``"-inf"``; tuples become
    lists, mappings fresh dicts with string keys and NumPy scalars plain
    Python numbers, so :func:`json.dumps` with ``allow_nan=False`` accepts
    the result and changing it changes nothing else.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, Mapping):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def _context(result: CheckResult) -> str:
    parts = []
    if result.batch is not None:
        parts.append(f"batch {result.batch}")
    if result.eta is not None:
        parts.append(f"eta {result.eta:g}")
    return f" ({', '.join(parts)})" if parts else ""


def format_failure(result: CheckResult) -> str:
    """Summarise a failed check in a few lines, in the manner of numpy.

    The first wrong quantity comes first; at most three failing quantities
    are listed, each with its band, mismatched entries out of the total,
    largest discrepancies, any recognised bug signature, and its worst
    entries with analytic, numeric and autodiff values side by side. The
    HTML report holds the rest.
    """
    what = "delta rule derivation" if result.network is not None else "gradient"
    lines = [
        f"{what} is wrong on {result.subject}{_context(result)}",
        f"first wrong quantity: {result.first_wrong}",
    ]
    if result.autodiff_skipped:
        lines.append(f"autodiff skipped: {result.autodiff_skipped}")
    if result.diagnosis:
        # The Taylor test's notes are evidence, not a cause.
        what = "note" if result.diagnosis.startswith("Taylor") else "likely cause"
        lines.append(f"{what}: {result.diagnosis}")
    failing = [q for q in result.quantities if q.verdict is Verdict.FAIL]
    for q in failing[:MAX_MESSAGE_QUANTITIES]:
        lines.append("")
        lines.append(
            f"{q.name}: mismatched entries {q.n_mismatched} / {q.size}; "
            f"max abs discrepancy {q.max_abs_discrepancy:.3g}, "
            f"max rel discrepancy {q.max_rel_discrepancy:.3g}; "
            f"band up to {q.max_band:.2g}"
        )
        if q.note:
            lines.append(f"  {q.note}")
        if q.signature is not None:
            lines.append(f"  likely cause: {q.signature.message}")
        for w in q.worst:
            kink = (
                f", kink: left {w.left:.10g}, right {w.right:.10g}" if w.is_kink else ""
            )
            lines.append(
                f"  {w.name}: analytic {w.analytic:.10g}, numeric {w.numeric:.10g}, "
                f"autodiff {w.autodiff:.10g}, band {w.band:.2g}{kink}"
            )
    if len(failing) > MAX_MESSAGE_QUANTITIES:
        lines.append(
            f"... and {len(failing) - MAX_MESSAGE_QUANTITIES} more failing "
            + (
                "quantity"
                if len(failing) - MAX_MESSAGE_QUANTITIES == 1
                else "quantities"
            )
        )
    if result.reproduce:
        lines.append(f"reproduce: {result.reproduce}")
    return "\n".join(lines)


def first_failing(quantities: tuple[QuantityComparison, ...]) -> str | None:
    """Return the name of the first failing quantity, or ``None``."""
    return next((q.name for q in quantities if q.verdict is Verdict.FAIL), None)


def raise_on_failure(result: CheckResult) -> CheckResult:
    """Return ``result``; raise if it failed, warn if it was inconclusive.

    Raises:
        GradientMismatchError: the check failed.
    """
    __tracebackhide__ = True
    if result.verdict is Verdict.FAIL:
        raise GradientMismatchError(format_failure(result), result=result)
    if result.verdict is Verdict.INCONCLUSIVE:
        unsettled = [
            q.name for q in result.quantities if q.verdict is Verdict.INCONCLUSIVE
        ]
        warnings.warn(
            f"the check of {result.subject} is inconclusive on {unsettled}: "
            "the references disagree or cannot resolve the difference there "
            "(not a failure of the derivation; see the result's notes)",
            InconclusiveWarning,
            stacklevel=3,
        )
    if result.verdict is Verdict.NOT_DIFFERENTIABLE:
        kinks = [
            q.name for q in result.quantities if q.verdict is Verdict.NOT_DIFFERENTIABLE
        ]
        warnings.warn(
            f"the loss is not differentiable at this point of {result.subject} "
            f"({kinks}): left and right derivatives differ there, and the "
            "analytic value is a valid subgradient (not a failure)",
            NotDifferentiableWarning,
            stacklevel=3,
        )
    return result
