# SPDX-License-Identifier: MIT
"""Catch functions that do not behave as functions of their inputs.

Two misbehaviours make every reference meaningless, so they are named
plainly as errors instead of being reported as discrepancies:

* a loss that returns different values for the same input, such as a
  dropout mask drawn afresh on every call: finite differences then
  differentiate the noise;
* a loss, gradient or derivation that changes its inputs in place, such as
  ``params["W"] -= eta * grad`` inside a backward pass: every later
  evaluation sees other parameters than the first.

Both are errors, not verdicts: the check cannot be carried out, just as
with NaN in the parameters, and ``gradcheck check`` exits 2 on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from gradcheck._numeric import EPS, ULP_FACTOR
from gradcheck.errors import InputMutationError, NondeterministicLossError

__all__ = ["Snapshot", "check_repeatable", "snapshot"]

# Changed entries named in a message; the exception holds them all.
MAX_NAMED_ENTRIES = 3

# The acceptance band's factor, for the gap between a direct and a compiled
# evaluation of the same loss.
SAFETY = 4.0


def _function_name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _leaf_name(path: tuple) -> str:
    # Imported here: _gradient imports this module.
    from gradcheck._gradient import path_name

    return path_name(path) if path else ""


Snapshot = list[tuple[str, str, np.ndarray]]


def snapshot(arguments: dict[str, object]) -> Snapshot:
    """Copy every numpy array leaf of the named arguments.

    Args:
        arguments: argument name (``"params"``, ``"data[0]"``) to its value,
            any pytree.

    Returns:
        ``(argument, leaf name, copy)`` per numpy array leaf; JAX arrays are
        immutable and are left out.
    """
    taken = []
    for argument, tree in arguments.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if isinstance(leaf, np.ndarray):
                taken.append((argument, _leaf_name(path), leaf.copy()))
    return taken


def check_unchanged(
    before: Snapshot,
    arguments: dict[str, object],
    role: str,
    function: object,
) -> None:
    """Raise if a numpy array leaf of ``arguments`` differs from ``before``.

    Raises:
        InputMutationError: naming the function, the argument, the leaf and
            the first few changed entries with their values before and after.
    """
    now = snapshot(arguments)
    for (argument, leaf, old), (_, _, new) in zip(before, now, strict=True):
        same = (
            (old == new) | (np.isnan(old) & np.isnan(new))
            if old.dtype.kind in "fc"
            else old == new
        )
        if np.all(same) and old.shape == new.shape:
            continue
        changed = np.argwhere(~np.asarray(same))
        entries = [
            (tuple(int(i) for i in idx), float(old[tuple(idx)]), float(new[tuple(idx)]))
            for idx in changed
        ]
        where = f"{argument}" + (f" leaf {leaf}" if leaf else "")
        shown = ", ".join(
            f"[{','.join(map(str, i))}] {a:.6g} -> {b:.6g}"
            for i, a, b in entries[:MAX_NAMED_ENTRIES]
        )
        raise InputMutationError(
            f"the {role} function {_function_name(function)} changed its input "
            f"{where} in place: {len(entries)} of {old.size} entries changed "
            f"({shown}); a {role} must not modify its arguments (work on a "
            "copy, e.g. W = W - step instead of W -= step)",
            role=role,
            function=function,
            argument=argument,
            leaf=leaf,
            entries=entries,
            n_changed=len(entries),
        )


def check_repeatable(
    evaluate: Callable[[], Any],
    role: str,
    function: object,
    compiled: float | None = None,
    noise: float = 0.0,
    first: float | None = None,
) -> float:
    """Evaluate a loss twice at one point; raise if it returns different values.

    Args:
        evaluate: calls the loss at the starting point, returns a scalar.
        role: ``"loss"`` or ``"f"``, for the message.
        function: the user's callable, for the message.
        compiled: the loss at the same point as the compiled reference
            computed it, if there is one: a loss that draws random numbers
            while JAX traces it is fixed in the compiled code but differs
            from a direct call.
        noise: how far one evaluation may move by rounding alone; the
            compiled value is allowed that much (times the band's factor),
            since XLA may reorder the arithmetic.
        first: the value of an earlier call, if there was one; the loss
            is then called once more, not twice.

    Returns:
        The loss value.

    Raises:
        NondeterministicLossError: the two direct calls differ at all, or
            the compiled value differs by more than rounding.
    """
    if first is None:
        first = float(np.asarray(evaluate()).reshape(()))
    second = float(np.asarray(evaluate()).reshape(()))
    if first != second and not (np.isnan(first) and np.isnan(second)):
        raise NondeterministicLossError(
            f"the {role} function {_function_name(function)} returned different "
            f"values for the same input: {first!r}, then {second!r}; it must be "
            "a deterministic function of its arguments (draw any random mask "
            "once, outside it, and pass it in as data)",
            role=role,
            function=function,
            values=(first, second),
        )
    if compiled is not None:
        allowed = SAFETY * max(noise, ULP_FACTOR * EPS * abs(first))
        if abs(compiled - first) > allowed:
            raise NondeterministicLossError(
                f"the {role} function {_function_name(function)} returned "
                f"{first!r} when called and {compiled!r} when compiled by JAX at "
                f"the same input (more than rounding, {allowed:.2g}, apart); it "
                "draws random numbers or reads state outside its arguments "
                "(pass any random mask in as data)",
                role=role,
                function=function,
                values=(first, compiled),
            )
    return first
