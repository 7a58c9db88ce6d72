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

from gradcheck._check import check_delta_rule, compare_delta_rule, load_derivation
from gradcheck._compare import Discrepancy, QuantityComparison, Verdict
from gradcheck._delta_rule import delta_rule, quantity_names, required_quantity_names
from gradcheck._gradient import check_gradient, check_vjp, compare_gradient, compare_vjp
from gradcheck._networks import (
    Network,
    bias_name,
    init_params,
    squared_error,
    weight_name,
)
from gradcheck._result import CheckResult, format_failure
from gradcheck._signatures import Signature
from gradcheck.errors import (
    DerivationError,
    DerivationLoadError,
    GradcheckError,
    GradientMismatchError,
    InvalidArgumentError,
    InvalidTypeError,
)

__all__ = [
    "CheckResult",
    "DerivationError",
    "DerivationLoadError",
    "Discrepancy",
    "GradcheckError",
    "GradientMismatchError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "Network",
    "QuantityComparison",
    "Signature",
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
