# SPDX-License-Identifier: MIT
"""Exceptions raised by gradcheck.

Every exception derives from :class:`GradcheckError` and from the matching
builtin, so callers can catch either. The offending value is kept on the
exception as an attribute, so nobody has to parse the message.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "GradcheckError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "DerivationLoadError",
    "DerivationError",
    "GradientMismatchError",
    "InconclusiveWarning",
    "NotDifferentiableWarning",
    "MisbehavingFunctionError",
    "NondeterministicLossError",
    "InputMutationError",
]


class GradcheckError(Exception):
    """Base class of every error gradcheck raises on purpose."""


class InvalidArgumentError(GradcheckError, ValueError):
    """An argument has the right type but a value gradcheck cannot use.

    Attributes:
        name: the argument's name, as the caller wrote it.
        value: the offending value.
    """

    def __init__(self, message: str, *, name: str, value: Any = None) -> None:
        super().__init__(message)
        self.name = name
        self.value = value


class InvalidTypeError(GradcheckError, TypeError):
    """An argument has a type gradcheck cannot use.

    Attributes:
        name: the argument's name, as the caller wrote it.
        value: the offending value.
    """

    def __init__(self, message: str, *, name: str, value: Any = None) -> None:
        super().__init__(message)
        self.name = name
        self.value = value


class DerivationLoadError(GradcheckError, ValueError):
    """A ``module:function`` target for a derivation cannot be loaded.

    Attributes:
        target: the target as given, for example ``"mypkg.mod:backprop"``.
    """

    def __init__(self, message: str, *, target: str) -> None:
        super().__init__(message)
        self.target = target


class DerivationError(GradcheckError, RuntimeError):
    """The derivation under test raised an exception of its own.

    The original exception is chained as ``__cause__``.

    Attributes:
        derivation: the callable that raised.
    """

    def __init__(self, message: str, *, derivation: Any) -> None:
        super().__init__(message)
        self.derivation = derivation


class GradientMismatchError(GradcheckError, AssertionError):
    """A derivation disagrees with both references.

    It is an ``AssertionError`` so that pytest reports it as a test failure.

    Attributes:
        result: the full check result, with every quantity's comparison.
    """

    def __init__(self, message: str, *, result: Any) -> None:
        super().__init__(message)
        self.result = result


class InconclusiveWarning(UserWarning):
    """A check could not decide: its references disagreed, or could not resolve.

    Not a failure of the derivation, so ``check_*`` functions warn instead of
    raising; the result's quantities say where and why.
    """


class MisbehavingFunctionError(GradcheckError, ValueError):
    """A loss, gradient or derivation does not behave as a function of its inputs.

    No comparison is meaningful then: the references would differentiate a
    moving target. The subclasses name what went wrong.

    Attributes:
        role: which function misbehaved: ``"loss"``, ``"grad"``, ``"vjp"``,
            ``"f"`` or ``"derivation"``.
        function: the callable itself.
    """

    def __init__(self, message: str, *, role: str, function: Any = None) -> None:
        super().__init__(message)
        self.role = role
        self.function = function


class NondeterministicLossError(MisbehavingFunctionError):
    """The loss returned different values for the same input.

    Attributes:
        values: the values it returned, in call order.
    """

    def __init__(
        self, message: str, *, role: str, function: Any = None, values: Any = ()
    ) -> None:
        super().__init__(message, role=role, function=function)
        self.values = tuple(values)


class InputMutationError(MisbehavingFunctionError):
    """A function changed one of its inputs in place.

    Attributes:
        argument: the argument it changed, for example ``"params"`` or
            ``"data[0]"``.
        leaf: the leaf of that argument, for example ``"layers[0].W"``.
        entries: the changed entries, as ``(index, before, after)`` tuples
            (the first few).
        n_changed: how many entries changed.
    """

    def __init__(
        self,
        message: str,
        *,
        role: str,
        function: Any = None,
        argument: str,
        leaf: str,
        entries: Any = (),
        n_changed: int = 0,
    ) -> None:
        super().__init__(message, role=role, function=function)
        self.argument = argument
        self.leaf = leaf
        self.entries = tuple(entries)
        self.n_changed = n_changed


class NotDifferentiableWarning(UserWarning):
    """The loss has a kink at the point, and the analytic value is a subgradient.

    Not a failure: the left and right derivatives differ there, and the
    derivation's value lies between them.
    """
