# SPDX-License-Identifier: MIT
"""gradcheck: prove a hand-derived gradient right or wrong.

A derivation is compared, quantity by quantity, with two references:
central finite differences that carry their own error estimate, and JAX
reverse-mode autodiff of the same loss. The verdict is three-way: pass;
fail (both references agree and the derivation does not, with the first
wrong quantity named); inconclusive (the references disagree: numerical
trouble, never blamed on the derivation).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Public names and the private module each lives in. They are imported on
# first use (PEP 562), so that importing gradcheck.pytest_plugin, which
# pytest does in every run once gradcheck is installed, does not import JAX.
_EXPORTS = {
    "CheckResult": "gradcheck._result",
    "ComplexStep": "gradcheck._complex_step",
    "DerivationError": "gradcheck.errors",
    "DerivationLoadError": "gradcheck.errors",
    "Discrepancy": "gradcheck._compare",
    "GradcheckError": "gradcheck.errors",
    "GradientMismatchError": "gradcheck.errors",
    "InvalidArgumentError": "gradcheck.errors",
    "InvalidTypeError": "gradcheck.errors",
    "InconclusiveWarning": "gradcheck.errors",
    "NotDifferentiableWarning": "gradcheck.errors",
    "NondeterministicLossError": "gradcheck.errors",
    "MisbehavingFunctionError": "gradcheck.errors",
    "InputMutationError": "gradcheck.errors",
    "Network": "gradcheck._networks",
    "QuantityComparison": "gradcheck._compare",
    "Signature": "gradcheck._signatures",
    "StepSweep": "gradcheck._sweeps",
    "TaylorTest": "gradcheck._taylor",
    "Verdict": "gradcheck._compare",
    "bias_name": "gradcheck._networks",
    "check_delta_rule": "gradcheck._check",
    "check_gradient": "gradcheck._gradient",
    "check_vjp": "gradcheck._gradient",
    "compare_delta_rule": "gradcheck._check",
    "compare_gradient": "gradcheck._gradient",
    "compare_vjp": "gradcheck._gradient",
    "delta_rule": "gradcheck._delta_rule",
    "format_failure": "gradcheck._result",
    "init_params": "gradcheck._networks",
    "load_derivation": "gradcheck._check",
    "quantity_names": "gradcheck._delta_rule",
    "required_quantity_names": "gradcheck._delta_rule",
    "squared_error": "gradcheck._networks",
    "weight_name": "gradcheck._networks",
}

__all__ = [
    "CheckResult",
    "ComplexStep",
    "DerivationError",
    "DerivationLoadError",
    "Discrepancy",
    "GradcheckError",
    "GradientMismatchError",
    "InconclusiveWarning",
    "InputMutationError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "MisbehavingFunctionError",
    "Network",
    "NondeterministicLossError",
    "NotDifferentiableWarning",
    "QuantityComparison",
    "Signature",
    "StepSweep",
    "TaylorTest",
    "Verdict",
    "bias_name",
    "check_delta_rule",
    "check_gradient",
    "check_vjp",
    "compare_delta_rule",
    "compare_gradient",
    "compare_vjp",
    "delta_rule",
    "format_failure",
    "init_params",
    "load_derivation",
    "quantity_names",
    "required_quantity_names",
    "squared_error",
    "weight_name",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gradcheck' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from gradcheck._check import check_delta_rule, compare_delta_rule, load_derivation
    from gradcheck._compare import Discrepancy, QuantityComparison, Verdict
    from gradcheck._complex_step import ComplexStep
    from gradcheck._delta_rule import (
        delta_rule,
        quantity_names,
        required_quantity_names,
    )
    from gradcheck._gradient import (
        check_gradient,
        check_vjp,
        compare_gradient,
        compare_vjp,
    )
    from gradcheck._networks import (
        Network,
        bias_name,
        init_params,
        squared_error,
        weight_name,
    )
    from gradcheck._result import CheckResult, format_failure
    from gradcheck._signatures import Signature
    from gradcheck._sweeps import StepSweep
    from gradcheck._taylor import TaylorTest
    from gradcheck.errors import (
        DerivationError,
        DerivationLoadError,
        GradcheckError,
        GradientMismatchError,
        InconclusiveWarning,
        InputMutationError,
        InvalidArgumentError,
        InvalidTypeError,
        MisbehavingFunctionError,
        NondeterministicLossError,
        NotDifferentiableWarning,
    )
