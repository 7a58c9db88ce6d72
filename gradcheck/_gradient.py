# SPDX-License-Identifier: MIT
"""Check any hand-written gradient of a scalar loss, over any pytree.

The same engine as the delta rule's, for the derivations users bring: a
loss ``loss(params, *data) -> scalar`` written with jax.numpy, and the
gradient under test ``grad(params, *data)``, returning the same structure
as ``params``. Parameters may be any JAX pytree (dict, list, tuple,
nested) of float arrays.

Both references differentiate ``loss``. Finite differences evaluate it at
perturbed points, vectorised with ``jax.vmap`` when JAX can trace it; a
loss written in plain numpy is evaluated point by point instead, and,
since JAX cannot differentiate it either, the analytic gradient is judged
against finite differences and their error estimate alone: the result
says why autodiff was skipped.

Named intermediates: a derivation may also claim derivatives of the loss
with respect to probes, zero arrays that the loss adds inside its forward
pass (``h = h + probes["dL/dh"]``). Declare their shapes with ``probes=``;
``loss`` is then called with ``probes=`` as a keyword, and ``grad`` returns
``(param_grads, probe_grads)``. Each probe is checked on its own, in the
order declared, before the parameters, so the first wrong step is named.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey
from numpy.typing import NDArray

from gradcheck._compare import (
    QuantityComparison,
    Reference,
    combine_verdicts,
    compare_quantity,
)
from gradcheck._numeric import (
    PERTURBATION_TRIALS,
    NumericEstimate,
    central_differences,
    default_steps,
    nudge,
)
from gradcheck._result import (
    CheckResult,
    first_failing,
    raise_on_failure,
)
from gradcheck.errors import (
    DerivationError,
    GradcheckError,
    InvalidArgumentError,
    InvalidTypeError,
)

__all__ = [
    "compare_gradient",
    "check_gradient",
    "compare_vjp",
    "check_vjp",
    "gradient_references",
    "path_name",
]

logger = logging.getLogger(__name__)

Array = NDArray[np.float64]
Progress = Callable[[int, int], None]

# Perturbed points per vectorised call of a traceable loss.
CHUNK = 512


def path_name(path: Sequence[Any]) -> str:
    """Name a pytree leaf by its path, for example ``layers[0].W``."""
    text = ""
    for key in path:
        if isinstance(key, DictKey):
            part = str(key.key)
            text += part if not text else f".{part}"
        elif isinstance(key, GetAttrKey):
            text += key.name if not text else f".{key.name}"
        elif isinstance(key, SequenceKey):
            text += f"[{key.idx}]"
        elif isinstance(key, FlattenedIndexKey):
            text += f"[{key.key}]"
        else:
            text += str(key)
    return text or "params"


def _leaves(tree: object, what: str) -> tuple[list[str], list[Array], Any]:
    """Flatten a pytree of float arrays into names, float64 arrays and a treedef."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    if not flat:
        raise InvalidArgumentError(
            f"{what} must hold at least one array, got {tree!r}", name=what, value=tree
        )
    names, arrays = [], []
    for path, leaf in flat:
        name = path_name(path) if what == "params" else f"{what}[{path_name(path)}]"
        array = np.asarray(leaf)
        if array.dtype.kind == "c":
            raise NotImplementedError(
                f"complex parameters are not supported: {name} has dtype {array.dtype}"
            )
        if array.dtype.kind != "f":
            raise InvalidTypeError(
                f"{name} must be a float array, got dtype {array.dtype}; "
                "cast integer parameters with .astype(float)",
                name=name,
                value=array.dtype,
            )
        if array.size == 0:
            raise InvalidArgumentError(
                f"{name} is empty (shape {array.shape}); there is nothing to check",
                name=name,
                value=array.shape,
            )
        if not np.isfinite(array).all():
            raise InvalidArgumentError(
                f"{name} must be finite, got non-finite entries", name=name, value=array
            )
        names.append(name)
        arrays.append(array.astype(np.float64))
    return names, arrays, treedef


class _Problem:
    """A loss of one flat float64 vector, and how to split that vector."""

    def __init__(
        self,
        loss: Callable[..., Any],
        params: object,
        data: tuple[object, ...],
        probes: Mapping[str, tuple[int, ...]] | None,
    ) -> None:
        self.loss = loss
        self.names, arrays, self.treedef = _leaves(params, "params")
        self.probe_names = list(probes or {})
        self.probe_shapes = [tuple(probes[n]) for n in self.probe_names]
        self.shapes = [a.shape for a in arrays] + self.probe_shapes
        self.sizes = [math.prod(s) for s in self.shapes]
        probe_zeros = [np.zeros(s) for s in self.probe_shapes]
        self.z = np.concatenate([a.ravel() for a in arrays + probe_zeros])
        self.n_params = sum(self.sizes[: len(self.names)])
        self.data = tuple(_float64_data(d) for d in data)
        self.has_probes = probes is not None

    def split(self, z: Any, xp: Any = jnp) -> tuple[object, dict[str, Any] | None]:
        parts, start = [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            parts.append(xp.reshape(z[start : start + size], shape))
            start += size
        n = len(self.names)
        params = jax.tree_util.tree_unflatten(self.treedef, parts[:n])
        if not self.has_probes:
            return params, None
        return params, dict(zip(self.probe_names, parts[n:], strict=True))

    def __call__(self, z: Any, data: tuple[object, ...], xp: Any = jnp) -> Any:
        params, probes = self.split(z, xp)
        if probes is None:
            return self.loss(params, *data)
        return self.loss(params, *data, probes=probes)


def _float64_data(value: object) -> object:
    """Return data with float arrays as float64; other leaves unchanged."""

    def convert(leaf: object) -> object:
        array = np.asarray(leaf) if isinstance(leaf, (np.ndarray, jax.Array)) else None
        if array is not None and array.dtype.kind == "f":
            return array.astype(np.float64)
        return leaf

    return jax.tree_util.tree_map(convert, value)


def _scalar_loss(value: object, where: str) -> float:
    array = np.asarray(value)
    if array.shape != () and array.size != 1:
        raise InvalidArgumentError(
            f"the loss must return a scalar, got shape {array.shape} {where}",
            name="loss",
            value=array.shape,
        )
    result = float(array.reshape(()))
    if not math.isfinite(result):
        raise InvalidArgumentError(
            f"the loss must be finite, got {result!r} {where}",
            name="loss",
            value=result,
        )
    return result


def _call_user(fn: Callable[..., Any], role: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except GradcheckError:
        raise
    except Exception as err:
        user_fn = getattr(fn, "loss", fn)  # a _Problem wraps the user's loss
        name = getattr(user_fn, "__qualname__", repr(user_fn))
        raise DerivationError(
            f"the {role} function {name} raised {type(err).__name__}: {err}",
            derivation=user_fn,
        ) from err


def _trace_error(problem: _Problem) -> str:
    """Return why JAX cannot trace the loss, or an empty string."""
    try:
        with jax.enable_x64(True):
            jax.eval_shape(lambda z: problem(z, problem.data), problem.z)
    except Exception as err:  # any failure to trace means: no autodiff
        first_line = str(err).strip().split("\n")[0][:160]
        return f"JAX could not trace the loss: {type(err).__name__}: {first_line}"
    return ""


def _traced_references(
    problem: _Problem, rel_step: float | None, progress: Progress | None
) -> tuple[NumericEstimate, Array, Array]:
    """Finite differences vectorised with vmap, autodiff, and rounding."""
    rng = np.random.default_rng(0)

    with jax.enable_x64(True):
        data = problem.data
        value_and_grad = jax.jit(jax.value_and_grad(lambda z, d: problem(z, d)))
        loss0, grad0 = value_and_grad(jnp.asarray(problem.z), data)
        grad0 = np.asarray(grad0)

        # How far the loss and its gradient move when every float input
        # moves by a few ulps: the noise of the loss, and the rounding
        # allowance of each gradient entry.
        noise, rounding = 0.0, np.zeros_like(grad0)
        for _ in range(PERTURBATION_TRIALS):
            z_t = nudge(problem.z, rng)
            data_t = jax.tree_util.tree_map(
                lambda a: (
                    nudge(a, rng)
                    if isinstance(a, np.ndarray) and a.dtype == np.float64
                    else a
                ),
                data,
            )
            loss_t, grad_t = value_and_grad(jnp.asarray(z_t), data_t)
            noise = max(noise, abs(float(loss_t) - float(loss0)))
            rounding = np.maximum(rounding, np.abs(np.asarray(grad_t) - grad0))

        @jax.jit
        def shifted(z, index, delta, d):
            return jax.vmap(lambda i, h: problem(z.at[i].add(h), d))(index, delta)

        zj = jnp.asarray(problem.z)
        total = 4 * problem.z.size
        done = 0

        def evaluate(index, delta):
            nonlocal done
            values = shifted(zj, jnp.asarray(index), jnp.asarray(delta), data)
            done += len(index)
            if progress is not None:
                progress(min(done, total), total)
            return values

        numeric = central_differences(
            evaluate,
            problem.z,
            default_steps(problem.z, rel_step),
            noise=noise,
            chunk=CHUNK,
        )
    return numeric, grad0, rounding


def _untraced_references(
    problem: _Problem, rel_step: float | None, progress: Progress | None
) -> NumericEstimate:
    """Finite differences of a loss JAX cannot trace, one point at a time."""
    rng = np.random.default_rng(0)
    loss0 = _scalar_loss(
        _call_user(problem, "loss", problem.z, problem.data, np), "at params"
    )
    noise = 0.0
    for _ in range(PERTURBATION_TRIALS):
        z_t = nudge(problem.z, rng)
        value = _call_user(problem, "loss", z_t, problem.data, np)
        noise = max(noise, abs(_scalar_loss(value, "near params") - loss0))
    total = 4 * problem.z.size
    done = 0

    def evaluate(index, delta):
        nonlocal done
        values = []
        for i, h in zip(index, delta, strict=True):
            z = problem.z.copy()
            z[i] += h
            value = _call_user(problem, "loss", z, problem.data, np)
            values.append(_scalar_loss(value, "at a perturbed point"))
        done += len(index)
        if progress is not None:
            progress(min(done, total), total)
        return np.asarray(values)

    return central_differences(
        evaluate, problem.z, default_steps(problem.z, rel_step), noise=noise, chunk=64
    )


def _analytic_leaves(
    problem: _Problem, returned: object
) -> tuple[list[object], list[object]]:
    """Split the gradient under test into parameter and probe arrays."""
    if problem.has_probes:
        if not (isinstance(returned, tuple) and len(returned) == 2):
            raise InvalidTypeError(
                "with probes declared, grad must return (param_grads, probe_grads), "
                f"got {type(returned).__name__}",
                name="grad",
                value=returned,
            )
        param_grads, probe_grads = returned
        if not isinstance(probe_grads, Mapping) or set(probe_grads) != set(
            problem.probe_names
        ):
            got = sorted(probe_grads) if isinstance(probe_grads, Mapping) else None
            raise InvalidArgumentError(
                f"grad must return a derivative for each declared probe "
                f"{problem.probe_names}, got {got}",
                name="grad",
                value=got,
            )
        probe_values = [probe_grads[n] for n in problem.probe_names]
    else:
        param_grads, probe_values = returned, []

    flat, treedef = jax.tree_util.tree_flatten(param_grads)
    for name, value in zip(
        problem.names + problem.probe_names, list(flat) + probe_values, strict=False
    ):
        dtype = np.asarray(value).dtype
        if dtype.kind not in "fiu":
            raise InvalidTypeError(
                f"grad returned {name} as an array of dtype {dtype}; "
                "expected real numbers",
                name="grad",
                value=value,
            )
    if treedef != problem.treedef:
        raise InvalidArgumentError(
            "grad must return the same structure as params: expected "
            f"{problem.treedef}, got {treedef}",
            name="grad",
            value=treedef,
        )
    return list(flat), probe_values


GradientReferences = tuple[NumericEstimate, "Array | None", Array, str]


def _references_of(
    problem: _Problem, rel_step: float | None, progress: Progress | None
) -> GradientReferences:
    why_not = _trace_error(problem)
    if why_not:
        logger.warning("%s; judging against finite differences alone", why_not)
        numeric = _untraced_references(problem, rel_step, progress)
        return numeric, None, np.zeros(problem.z.size), why_not
    numeric, autodiff, rounding = _traced_references(problem, rel_step, progress)
    return numeric, autodiff, rounding, ""


def gradient_references(
    loss: Callable[..., Any],
    params: object,
    *data: object,
    probes: Mapping[str, tuple[int, ...]] | None = None,
    rel_step: float | None = None,
) -> GradientReferences:
    """Compute the references :func:`compare_gradient` compares with, once.

    Pass the result as ``references=`` to check several gradients of one
    loss at one point without differentiating the loss again.

    Returns:
        ``(numeric, autodiff, rounding, why_not)`` over the flat parameters
        and probes: the finite-difference estimate, the autodiff gradient
        (``None`` when the loss cannot be traced, ``why_not`` then says
        why), and the rounding allowance per entry.
    """
    problem = _Problem(loss, params, tuple(data), probes)
    return _references_of(problem, rel_step, None)


def compare_gradient(
    loss: Callable[..., Any],
    grad: Callable[..., Any],
    params: object,
    *data: object,
    probes: Mapping[str, tuple[int, ...]] | None = None,
    rel_step: float | None = None,
    batch_size: int | None = None,
    label: str = "",
    reproduce: str = "",
    progress: Progress | None = None,
    references: GradientReferences | None = None,
) -> CheckResult:
    """Check a hand-written gradient against finite differences and JAX.

    Every leaf of ``params`` (and every declared probe) is compared entry by
    entry, with an acceptance band from the finite-difference error
    estimate and from how far the gradient moves when the inputs move by a
    few ulps; see :mod:`gradcheck._compare` for the verdicts.

    Args:
        loss: ``loss(params, *data) -> scalar``, written with jax.numpy (a
            plain numpy loss works too, without the autodiff reference).
        grad: ``grad(params, *data)``, the derivation under test, returning
            the structure of ``params``; with ``probes``, it returns
            ``(param_grads, {probe name: dL/dprobe})``.
        params: a pytree of float arrays; checked in float64.
        *data: further arguments of ``loss`` and ``grad``, passed unchanged
            (float arrays as float64).
        probes: named intermediate quantities, name to shape, in the order
            the derivation computes them.
        rel_step: the finite-difference step relative to ``max(1, |w|)``;
            ``cbrt(eps)`` of float64 by default.
        batch_size: examples in ``data``, when known: a gradient off by
            exactly this factor is then named as a mean-versus-sum mistake.
        label: a name for the check in reports.
        reproduce: how to reproduce the check, for reports and messages.
        progress: called as ``progress(done, total)`` with the number of
            perturbed points evaluated, for progress display.
        references: the references of this very point, as
            :func:`gradient_references` returns them for the same loss,
            params, data and probes, when several gradients are checked at
            one point; computed here when omitted.

    Returns:
        The :class:`CheckResult`; it does not raise on a wrong gradient.

    Raises:
        InvalidArgumentError: empty or non-finite parameters, a loss that is
            not a finite scalar, a grad whose structure differs from params.
        InvalidTypeError: integer or other non-float parameters.
        DerivationError: ``loss`` or ``grad`` raised an exception.
    """
    for fn, role in ((loss, "loss"), (grad, "grad")):
        if not callable(fn):
            raise InvalidTypeError(
                f"{role} must be callable, got {fn!r}", name=role, value=fn
            )
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise InvalidArgumentError(
            f"batch_size must be a positive int or None, got batch_size={batch_size!r}",
            name="batch_size",
            value=batch_size,
        )
    problem = _Problem(loss, params, data, probes)
    for position, argument in enumerate(problem.data):
        for leaf in jax.tree_util.tree_leaves(argument):
            is_float = isinstance(leaf, np.ndarray) and leaf.dtype.kind == "f"
            if is_float and not np.isfinite(leaf).all():
                raise InvalidArgumentError(
                    f"data argument {position} holds NaN or Inf; "
                    "every float input must be finite",
                    name=f"data[{position}]",
                    value=leaf,
                )

    # The loss at params, called directly, also tells a loss that raises
    # from a loss JAX cannot trace.
    params64, probes0 = problem.split(problem.z, np)
    extra = {} if probes0 is None else {"probes": probes0}
    _scalar_loss(
        _call_user(loss, "loss", params64, *problem.data, **extra), "at params"
    )
    returned = _call_user(grad, "grad", params64, *problem.data)
    param_grads, probe_grads = _analytic_leaves(problem, returned)

    if references is None:
        references = _references_of(problem, rel_step, progress)
    numeric, autodiff, rounding, why_not = references

    # Probes first, in the declared order, then the parameters.
    names = problem.names + problem.probe_names
    analytic = param_grads + probe_grads
    order = list(range(len(problem.names), len(names))) + list(
        range(len(problem.names))
    )
    offsets = np.cumsum([0] + problem.sizes)
    comparisons = []
    for k in order:
        part = slice(int(offsets[k]), int(offsets[k + 1]))
        shape = problem.shapes[k]
        reference = Reference(
            NumericEstimate(
                numeric.value[part], numeric.error[part], numeric.step[part]
            ).reshaped(shape),
            None if autodiff is None else autodiff[part].reshape(shape),
            rounding[part].reshape(shape),
        )
        comparisons.append(
            compare_quantity(names[k], analytic[k], reference, batch_size=batch_size)
        )

    verdict = combine_verdicts([c.verdict for c in comparisons])
    subject = ", ".join(
        f"{n} {s}" for n, s in zip(problem.names, problem.shapes, strict=False)
    )
    return CheckResult(
        verdict=verdict,
        quantities=tuple(comparisons),
        first_wrong=first_failing(tuple(comparisons)),
        subject=subject,
        n_params=problem.n_params,
        batch=batch_size,
        autodiff_skipped=why_not,
        label=label,
        reproduce=reproduce,
    )


def check_gradient(*args: Any, **kwargs: Any) -> CheckResult:
    """Like :func:`compare_gradient`, but raise if the gradient is wrong.

    Raises:
        GradientMismatchError: an ``AssertionError`` whose message names the
            first wrong leaf, the band, the worst entries and any bug
            signature; ``.result`` holds the full :class:`CheckResult`.
    """
    __tracebackhide__ = True
    return raise_on_failure(compare_gradient(*args, **kwargs))


def _cotangents(f: Callable[..., Any], x: object, data: tuple, count: int, seed: int):
    with jax.enable_x64(True):
        out = jax.eval_shape(lambda x_: f(x_, *data), _float64_data(x))
    rng = np.random.default_rng(seed)
    for _ in range(count):
        # Normal entries with scales spread over two decades: a mistake that
        # cancels under a plain sum, or under equal weights, shows here.
        yield jax.tree_util.tree_map(
            lambda s: rng.normal(size=s.shape) * 10.0 ** rng.uniform(-1, 1, s.shape),
            out,
        )


def compare_vjp(
    f: Callable[..., Any],
    vjp: Callable[..., Any],
    x: object,
    *data: object,
    n_cotangents: int = 3,
    seed: int = 0,
    rel_step: float | None = None,
    label: str = "",
) -> CheckResult:
    """Check a hand-written backward pass of a vector-valued function.

    For ``f(x, *data) -> y`` and the backward pass ``vjp(x, cotangent,
    *data) -> dx`` (``cotangent`` shaped like ``y``), each of
    ``n_cotangents`` random cotangents ``c`` turns the check into a gradient
    check of the scalar ``<c, f(x)>``, whose gradient is ``vjp(x, c)``.

    The cotangents are random and far from uniform, so a backward pass that
    is only right for an all-ones cotangent (a mistake hidden by a sum) is
    caught. Quantities are named ``<leaf> @ c<k>``, one per input leaf per
    cotangent, so the report says which entries are wrong under which
    cotangent.

    Args:
        f: the forward function, written with jax.numpy.
        vjp: the backward pass under test.
        x: the point, a pytree of float arrays.
        *data: further arguments of both, passed unchanged.
        n_cotangents: random cotangents to try, at least 1.
        seed: seeds the cotangents.
        rel_step: the finite-difference step, as in :func:`compare_gradient`.
        label: a name for the check in reports.

    Returns:
        One :class:`CheckResult` covering every cotangent.
    """
    if isinstance(n_cotangents, bool) or not isinstance(n_cotangents, int):
        raise InvalidTypeError(
            f"n_cotangents must be an int, got n_cotangents={n_cotangents!r}",
            name="n_cotangents",
            value=n_cotangents,
        )
    if n_cotangents < 1:
        raise InvalidArgumentError(
            f"n_cotangents must be at least 1, got n_cotangents={n_cotangents!r}",
            name="n_cotangents",
            value=n_cotangents,
        )
    results = []
    for k, c in enumerate(_cotangents(f, x, data, n_cotangents, seed)):

        def loss(x_, *d, c=c):
            y = f(x_, *d)
            terms = jax.tree_util.tree_map(lambda a, b: jnp.sum(a * b), y, c)
            return sum(jax.tree_util.tree_leaves(terms))

        def grad(x_, *d, c=c):
            return vjp(x_, c, *d)

        result = compare_gradient(loss, grad, x, *data, rel_step=rel_step)
        results.append((k, result))

    quantities = tuple(
        _renamed(q, f"{q.name} @ c{k}")
        for k, result in results
        for q in result.quantities
    )
    first = results[0][1]
    return CheckResult(
        verdict=combine_verdicts([q.verdict for q in quantities]),
        quantities=quantities,
        first_wrong=first_failing(quantities),
        subject=first.subject,
        n_params=first.n_params,
        autodiff_skipped=first.autodiff_skipped,
        label=label,
        reproduce=f"seed {seed}, {n_cotangents} cotangents",
        details={"cotangents": n_cotangents},
    )


def _renamed(q: QuantityComparison, name: str) -> QuantityComparison:
    """Return ``q`` with ``name`` (``q.name`` plus a suffix), entries likewise."""
    suffix = name[len(q.name) :]
    worst = tuple(dataclasses.replace(w, name=w.name + suffix) for w in q.worst)
    return dataclasses.replace(q, name=name, worst=worst)


def check_vjp(*args: Any, **kwargs: Any) -> CheckResult:
    """Like :func:`compare_vjp`, but raise if the backward pass is wrong."""
    __tracebackhide__ = True
    return raise_on_failure(compare_vjp(*args, **kwargs))
