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
