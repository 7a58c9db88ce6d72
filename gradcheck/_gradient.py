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
import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey
from numpy.typing import NDArray

from gradcheck._behaviour import check_repeatable, check_unchanged, snapshot
from gradcheck._compare import (
    SAFETY_FACTOR,
    QuantityComparison,
    Reference,
    Verdict,
    combine_verdicts,
    compare_quantity,
)
from gradcheck._complex_step import (
    ComplexStep,
    check_complex_step_option,
    complex_loss_error,
    complex_step_gradient,
    merge_complex_step,
    record,
)
from gradcheck._kinks import OneSided, resolve_entries
from gradcheck._numeric import (
    EPS,
    PERTURBATION_TRIALS,
    ROUNDING_FACTOR,
    ULP_FACTOR,
    NumericEstimate,
    central_differences,
    default_steps,
    nudge,
)
from gradcheck._precision import float_eps, is_float_dtype
from gradcheck._result import (
    CheckResult,
    first_failing,
    raise_on_failure,
)
from gradcheck._sweeps import StepSweep, sweep_entry, worst_entries
from gradcheck._taylor import TaylorTest, contradictions, taylor_tests
from gradcheck.errors import (
    DerivationError,
    GradcheckError,
    InputMutationError,
    InvalidArgumentError,
    InvalidTypeError,
    NondeterministicLossError,
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
        if not is_float_dtype(array.dtype):
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


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How one flat vector splits into the loss's parameters and probes.

    Hashable, so that compiled functions can be cached per loss and layout:
    two checks of the same loss on parameters of the same structure and
    shapes share one compilation.
    """

    loss: Callable[..., Any]
    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    n_names: int
    probe_names: tuple[str, ...]
    has_probes: bool

    def split(self, z: Any, xp: Any = jnp) -> tuple[object, dict[str, Any] | None]:
        parts, start = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            parts.append(xp.reshape(z[start : start + size], shape))
            start += size
        params = jax.tree_util.tree_unflatten(self.treedef, parts[: self.n_names])
        if not self.has_probes:
            return params, None
        return params, dict(zip(self.probe_names, parts[self.n_names :], strict=True))

    def __call__(self, z: Any, data: tuple[object, ...], xp: Any = jnp) -> Any:
        params, probes = self.split(z, xp)
        if probes is None:
            return self.loss(params, *data)
        return self.loss(params, *data, probes=probes)


@dataclasses.dataclass(frozen=True)
class _Compiled:
    value_and_grad: Callable[..., Any]
    shifted: Callable[..., Any]
    at_points: Callable[..., Any]


# Layouts whose compiled functions are kept; each holds its loss alive.
CACHE_SIZE = 64


@functools.lru_cache(maxsize=CACHE_SIZE)
def _compiled(layout: _Layout) -> _Compiled:
    """Return the jitted value-and-gradient and shifted evaluation of a loss.

    Built once per (loss, parameter structure, shapes, probes); jax.jit
    itself keeps one compilation per shape and dtype of the data, so
    checking the same loss at many points compiles once.
    """
    value_and_grad = jax.jit(jax.value_and_grad(lambda z, d: layout(z, d)))

    @jax.jit
    def shifted(z, index, delta, d):
        return jax.vmap(lambda i, h: layout(z.at[i].add(h), d))(index, delta)

    at_points = jax.jit(jax.vmap(lambda z, d: layout(z, d), in_axes=(0, None)))
    return _Compiled(value_and_grad, shifted, at_points)


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
        # The parameters as given (copied), for the derivation under test: a
        # lower-precision derivation computes in its own precision, while
        # the references only ever see the float64 upcast.
        self.given = jax.tree_util.tree_map(lambda a: np.array(a, copy=True), params)
        self.given_data = tuple(_copied(d) for d in data)
        self.probe_names = list(_check_probes(probes))
        self.probe_shapes = [tuple(probes[n]) for n in self.probe_names]
        self.shapes = [a.shape for a in arrays] + self.probe_shapes
        self.sizes = [math.prod(s) for s in self.shapes]
        probe_zeros = [np.zeros(s) for s in self.probe_shapes]
        self.z = np.concatenate([a.ravel() for a in arrays + probe_zeros])
        self.n_params = sum(self.sizes[: len(self.names)])
        self.data = tuple(_float64_data(d) for d in data)
        self.has_probes = probes is not None
        self.layout = _Layout(
            loss,
            self.treedef,
            tuple(tuple(s) for s in self.shapes),
            len(self.names),
            tuple(self.probe_names),
            self.has_probes,
        )

    def split(self, z: Any, xp: Any = jnp) -> tuple[object, dict[str, Any] | None]:
        return self.layout.split(z, xp)

    def __call__(self, z: Any, data: tuple[object, ...], xp: Any = jnp) -> Any:
        return self.layout(z, data, xp)


def _check_probes(probes: object) -> Mapping[str, tuple[int, ...]]:
    """Return ``probes`` if it maps names to shapes (tuples of sizes)."""
    if probes is None:
        return {}
    if not isinstance(probes, Mapping):
        raise InvalidTypeError(
            f"probes must map names to shapes, got {probes!r}",
            name="probes",
            value=probes,
        )
    for name, shape in probes.items():
        ok = isinstance(name, str) and isinstance(shape, (tuple, list))
        if ok:
            ok = all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
                for n in shape
            )
        if not ok:
            raise InvalidArgumentError(
                f"probes must map names (str) to shapes (tuples of positive "
                f"ints), got {name!r}: {shape!r}",
                name="probes",
                value={name: shape},
            )
    return probes


def _copied(value: object) -> object:
    """Return ``value`` with every numpy array leaf copied."""
    return jax.tree_util.tree_map(
        lambda a: a.copy() if isinstance(a, np.ndarray) else a, value
    )


def _float64_data(value: object) -> object:
    """Return data with float arrays as float64; other leaves unchanged."""

    def convert(leaf: object) -> object:
        array = np.asarray(leaf) if isinstance(leaf, (np.ndarray, jax.Array)) else None
        if array is not None and is_float_dtype(array.dtype):
            return array.astype(np.float64)
        return leaf

    return jax.tree_util.tree_map(convert, value)


def _scalar_loss(value: object, where: str) -> float:
    array = np.asarray(value)
    if not (is_float_dtype(array.dtype) or np.issubdtype(array.dtype, np.integer)):
        raise InvalidTypeError(
            f"the loss must return a real number, got {value!r} of type "
            f"{type(value).__name__} {where}",
            name="loss",
            value=value,
        )
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


def _data_signature(data: tuple[object, ...]) -> object:
    """Return a hashable summary of data's structure, shapes and dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten(data)
    parts: list[object] = [treedef]
    for leaf in leaves:
        if isinstance(leaf, (np.ndarray, jax.Array)):
            parts.append((np.shape(leaf), str(leaf.dtype)))
        else:
            parts.append((type(leaf), leaf))
    return tuple(parts)


def _trace_error(problem: _Problem) -> str:
    """Return why JAX cannot trace the loss, or an empty string (cached)."""
    try:
        key = (problem.layout, _data_signature(problem.data))
        hash(key)
    except TypeError:  # unhashable static data: trace every time
        return _trace_error_uncached(problem)
    if key not in _TRACE_ERRORS:
        if len(_TRACE_ERRORS) >= CACHE_SIZE:
            _TRACE_ERRORS.pop(next(iter(_TRACE_ERRORS)))
        _TRACE_ERRORS[key] = _trace_error_uncached(problem)
    return _TRACE_ERRORS[key]


_TRACE_ERRORS: dict[object, str] = {}


def _trace_error_uncached(problem: _Problem) -> str:
    """Return why JAX cannot trace the loss, or an empty string."""
    try:
        with jax.enable_x64(True):
            jax.eval_shape(lambda z: problem(z, problem.data), problem.z)
    except Exception as err:  # any failure to trace means: no autodiff
        first_line = str(err).strip().split("\n")[0][:160]
        return f"JAX could not trace the loss: {type(err).__name__}: {first_line}"
    return ""


@dataclasses.dataclass
class _References:
    """Both references of a general gradient, and how they were made."""

    numeric: NumericEstimate
    autodiff: Array | None
    rounding: Array
    noise: float
    steps: Array
    evaluate: Callable[[NDArray[np.int64], Array], Array]
    chunk: int
    loss0: float | None = None
    why_not: str = ""
    # The central differences before the complex step tightened them, and
    # what became of it; the loss at whole points, for the Taylor test.
    central: NumericEstimate | None = None
    complex_step: ComplexStep | None = None
    at_points: Callable[[Array], Array] | None = None


def _traced_references(
    problem: _Problem, rel_step: float | None, progress: Progress | None
) -> _References:
    """Finite differences vectorised with vmap, autodiff, and rounding."""
    rng = np.random.default_rng(0)
    fns = _compiled(problem.layout)

    with jax.enable_x64(True):
        data = problem.data
        value_and_grad = fns.value_and_grad
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

        zj = jnp.asarray(problem.z)
        total = 4 * problem.z.size
        done = 0

        def evaluate_points(index, delta):
            with jax.enable_x64(True):
                return np.asarray(
                    fns.shifted(zj, jnp.asarray(index), jnp.asarray(delta), data)
                )

        def evaluate(index, delta):
            nonlocal done
            values = evaluate_points(index, delta)
            done += len(index)
            if progress is not None:
                progress(min(done, total), total)
            return values

        steps = default_steps(problem.z, rel_step)
        numeric = central_differences(
            evaluate, problem.z, steps, noise=noise, chunk=CHUNK
        )

    def at_points(rows):
        # Padded to a multiple of 32 rows, so that few shapes compile.
        n = rows.shape[0]
        padded = np.concatenate([rows, np.repeat(rows[:1], -n % 32, axis=0)])
        with jax.enable_x64(True):
            return np.asarray(fns.at_points(jnp.asarray(padded), data))[:n]

    return _References(
        numeric,
        grad0,
        rounding,
        noise,
        steps,
        evaluate_points,
        min(CHUNK, 4 * problem.z.size),
        float(loss0),
        at_points=at_points,
    )


def _untraced_references(
    problem: _Problem, rel_step: float | None, progress: Progress | None
) -> _References:
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

    def evaluate_points(index, delta):
        values = []
        for i, h in zip(index, delta, strict=True):
            z = problem.z.copy()
            z[i] += h
            value = _call_user(problem, "loss", z, problem.data, np)
            values.append(_scalar_loss(value, "at a perturbed point"))
        return np.asarray(values)

    def evaluate(index, delta):
        nonlocal done
        values = evaluate_points(index, delta)
        done += len(index)
        if progress is not None:
            progress(min(done, total), total)
        return values

    def at_points(rows):
        return np.asarray(
            [
                _scalar_loss(_call_user(problem, "loss", z, problem.data, np), "")
                for z in rows
            ]
        )

    steps = default_steps(problem.z, rel_step)
    numeric = central_differences(evaluate, problem.z, steps, noise=noise, chunk=64)
    return _References(
        numeric,
        None,
        np.zeros(problem.z.size),
        noise,
        steps,
        evaluate_points,
        64,
        at_points=at_points,
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
        if dtype.kind not in "iu" and not is_float_dtype(dtype):
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


GradientReferences = _References


def _references_of(
    problem: _Problem,
    rel_step: float | None,
    progress: Progress | None,
    complex_step: bool | None = None,
) -> _References:
    why_not = _trace_error(problem)
    if why_not:
        logger.warning("%s; judging against finite differences alone", why_not)
        refs = _untraced_references(problem, rel_step, progress)
        return dataclasses.replace(
            refs,
            why_not=why_not,
            complex_step=ComplexStep("unavailable", "JAX cannot trace the loss"),
        )
    refs = _traced_references(problem, rel_step, progress)
    return _with_complex_step(problem, refs, complex_step)


def _with_complex_step(
    problem: _Problem, refs: _References, complex_step: bool | None
) -> _References:
    """Tighten the numeric reference with the complex step where it agrees.

    ``None`` tries it whenever the loss traces with complex parameters and
    returns a complex value; ``False`` leaves the central differences.
    """
    if complex_step is False:
        return dataclasses.replace(
            refs, complex_step=ComplexStep("off", "complex_step=False")
        )
    why_not = _complex_error(problem)
    if why_not:
        return dataclasses.replace(
            refs, complex_step=ComplexStep("unavailable", why_not)
        )
    value = complex_step_gradient(problem.layout, problem.z, problem.data, CHUNK)
    offsets = np.cumsum([0] + problem.sizes)
    names = problem.names + problem.probe_names
    merged_value, merged_error = refs.numeric.value.copy(), refs.numeric.error.copy()
    codes = {}
    # Quantity by quantity, since each has its own band.
    for k, name in enumerate(names):
        part = slice(int(offsets[k]), int(offsets[k + 1]))
        central = NumericEstimate(
            refs.numeric.value[part], refs.numeric.error[part], refs.numeric.step[part]
        )
        estimate, code = merge_complex_step(
            central, value[part], refs.autodiff[part], refs.rounding[part]
        )
        merged_value[part], merged_error[part] = estimate.value, estimate.error
        codes[name] = code.reshape(problem.shapes[k])
    merged = NumericEstimate(merged_value, merged_error, refs.numeric.step)
    return dataclasses.replace(
        refs, numeric=merged, central=refs.numeric, complex_step=record(codes)
    )


def _complex_error(problem: _Problem) -> str:
    """Return why the loss cannot take a complex step, or ``""`` (cached)."""
    try:
        key = (problem.layout, _data_signature(problem.data))
        hash(key)
    except TypeError:  # unhashable static data: trace every time
        return complex_loss_error(problem.layout, problem.z, problem.data)
    if key not in _COMPLEX_ERRORS:
        if len(_COMPLEX_ERRORS) >= CACHE_SIZE:
            _COMPLEX_ERRORS.pop(next(iter(_COMPLEX_ERRORS)))
        _COMPLEX_ERRORS[key] = complex_loss_error(
            problem.layout, problem.z, problem.data
        )
    return _COMPLEX_ERRORS[key]


_COMPLEX_ERRORS: dict[object, str] = {}


def gradient_references(
    loss: Callable[..., Any],
    params: object,
    *data: object,
    probes: Mapping[str, tuple[int, ...]] | None = None,
    rel_step: float | None = None,
    complex_step: bool | None = None,
) -> GradientReferences:
    """Compute the references :func:`compare_gradient` compares with, once.

    Pass the result as ``references=`` to check several gradients of one
    loss at one point without differentiating the loss again.

    Returns:
        The references over the flat parameters and probes: ``numeric``
        (the finite-difference estimate, tightened by the complex step
        where it was accepted; ``central`` keeps the central differences
        and ``complex_step`` what became of it), ``autodiff`` (``None``
        when the loss cannot be traced; ``why_not`` then says why) and
        ``rounding`` (the allowance per entry), with what a second look at
        unsettled entries needs.
    """
    complex_step = check_complex_step_option(complex_step)
    problem = _Problem(loss, params, tuple(data), probes)
    return _references_of(problem, rel_step, None, complex_step)


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
    complex_step: bool | None = None,
    taylor: bool = True,
    sweeps: bool = True,
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
        complex_step: tighten the numeric reference with the complex step
            (see :mod:`gradcheck._complex_step`) where it agrees with the
            central difference and with autodiff; ``None`` (the default)
            does so whenever the loss traces with complex parameters and
            returns a complex value, ``False`` never. Ignored when
            ``references`` are given: they carry their own.
        taylor: run the Taylor-remainder test per leaf and probe (evidence
            in the result, never part of the verdict).
        sweeps: sweep the finite-difference step for the worst entries.

    Entries that do not settle are looked at again with one-sided
    differences (:mod:`gradcheck._kinks`): at a kink of the loss the
    verdict is ``not-differentiable`` when the analytic value is a valid
    subgradient, ``fail`` when it is not. Parameters in float32 or
    bfloat16 reach ``grad`` as given and the references as float64; the
    band follows the analytic value's dtype. The compiled references are
    cached per loss, parameter structure, shapes and dtypes.

    Returns:
        The :class:`CheckResult`; it does not raise on a wrong gradient.

    Raises:
        NondeterministicLossError: the loss returned different values for
            the same parameters and data.
        InputMutationError: ``loss`` or ``grad`` changed its arguments.
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
    complex_step = check_complex_step_option(complex_step)
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
    # from a loss JAX cannot trace. It is called twice: a loss that draws
    # a random mask on every call is no function to differentiate.
    params64, probes0 = problem.split(problem.z, np)
    extra = {} if probes0 is None else {"probes": probes0}
    arguments = {"params": params64} | {
        f"data[{i}]": d for i, d in enumerate(problem.data)
    }
    before = snapshot(arguments)

    def loss_at_params() -> float:
        # In float64, like the references, so the compiled value compares.
        with jax.enable_x64(True):
            value = _call_user(loss, "loss", params64, *problem.data, **extra)
        return _scalar_loss(value, "at params")

    loss0 = loss_at_params()
    check_unchanged(before, arguments, "loss", loss)
    check_repeatable(loss_at_params, "loss", loss, first=loss0)

    # The derivation gets the parameters and data as given (copies), so
    # that a lower-precision one computes in its own precision.
    given = {"params": problem.given} | {
        f"data[{i}]": d for i, d in enumerate(problem.given_data)
    }
    given_before = snapshot(given)
    returned = _call_user(grad, "grad", problem.given, *problem.given_data)
    check_unchanged(given_before, given, "grad", grad)
    param_grads, probe_grads = _analytic_leaves(problem, returned)

    refs = references
    if refs is None:
        refs = _references_of(problem, rel_step, progress, complex_step)
        if refs.autodiff is not None:
            # The compiled loss must agree with the direct call: a loss that
            # draws random numbers while JAX traces it differs here.
            check_repeatable(
                lambda: loss0,
                "loss",
                loss,
                compiled=refs.loss0,
                noise=refs.noise,
                first=loss0,
            )
        check_unchanged(before, arguments, "loss", loss)
    why_not = refs.why_not

    # Probes first, in the declared order, then the parameters.
    names = problem.names + problem.probe_names
    analytic = param_grads + probe_grads
    order = list(range(len(problem.names), len(names))) + list(
        range(len(problem.names))
    )
    offsets = np.cumsum([0] + problem.sizes)
    parts = {k: slice(int(offsets[k]), int(offsets[k + 1])) for k in range(len(names))}

    def compare_all(numeric: NumericEstimate, kinks: OneSided | None = None):
        comparisons = []
        for k in order:
            part, shape = parts[k], problem.shapes[k]
            reference = Reference(
                NumericEstimate(
                    numeric.value[part], numeric.error[part], numeric.step[part]
                ).reshaped(shape),
                None if refs.autodiff is None else refs.autodiff[part].reshape(shape),
                refs.rounding[part].reshape(shape),
            )
            comparisons.append(
                compare_quantity(
                    names[k],
                    analytic[k],
                    reference,
                    batch_size=batch_size,
                    kinks=None
                    if kinks is None
                    else OneSided(
                        kinks.kink[part],
                        kinks.left[part],
                        kinks.right[part],
                        kinks.error[part],
                    ).reshaped(shape),
                )
            )
        return comparisons

    comparisons = compare_all(refs.numeric)
    # Entries of quantities that did not pass get a second look with
    # one-sided differences: a kink at the point, or one inside the step.
    unsettled = [
        k
        for k, c in zip(order, comparisons, strict=True)
        if c.verdict is not Verdict.PASS and np.shape(analytic[k]) == problem.shapes[k]
    ]
    # Also entries that passed on a band widened by a kink: where the
    # central difference is dominated by truncation (it changes from h to
    # h/2: a kink inside the step), or where a few ulps move autodiff by
    # more than finite differences are uncertain (a jump at the point).
    # Judged on the central differences: a complex step's tiny error says
    # nothing about a kink inside the step.
    central = refs.numeric if refs.central is None else refs.central
    floor = np.maximum(refs.noise, ULP_FACTOR * EPS * abs(loss0))
    suspicious = np.flatnonzero(
        (central.error > 2.0 * 4.0 * floor / refs.steps)
        | (refs.rounding > central.error)
    )
    if unsettled or suspicious.size:
        candidates = np.union1d(
            np.concatenate(
                [np.arange(parts[k].start, parts[k].stop) for k in unsettled]
                + [suspicious]
            ),
            [],
        ).astype(np.int64)
        numeric, kinks = _second_look(problem, refs, candidates)
        if numeric is not refs.numeric or kinks is not None:
            comparisons = compare_all(numeric, kinks)

    verdict = combine_verdicts([c.verdict for c in comparisons])
    subject = ", ".join(
        f"{n} {s}" for n, s in zip(problem.names, problem.shapes, strict=False)
    )

    # Evidence beside the verdict: it never changes it.
    by_name = dict(zip(names, analytic, strict=True))
    tests = _taylor(problem, refs, by_name) if taylor else ()
    step_sweeps = _sweeps(problem, refs, comparisons, parts) if sweeps else ()
    diagnosis = contradictions(
        tests,
        failed=[c.name for c in comparisons if c.verdict is Verdict.FAIL],
        passed=[c.name for c in comparisons if c.verdict is Verdict.PASS],
        unsettled=[c.name for c in comparisons if c.verdict is Verdict.INCONCLUSIVE],
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
        diagnosis=diagnosis,
        complex_step=refs.complex_step,
        taylor=tests,
        sweeps=step_sweeps,
    )


def _taylor(
    problem: _Problem, refs: _References, analytic: Mapping[str, object]
) -> tuple[TaylorTest, ...]:
    """Run the Taylor-remainder test on every leaf and probe."""
    if refs.at_points is None:
        return ()
    offsets = np.cumsum([0] + problem.sizes)
    names = problem.names + problem.probe_names
    parts = [slice(int(offsets[k]), int(offsets[k + 1])) for k in range(len(names))]
    scale_of = refs.numeric.value if refs.autodiff is None else refs.autodiff
    allowance = []
    for name, part in zip(names, parts, strict=True):
        # The rounding part of the band, in the analytic value's precision.
        dtype = np.asarray(analytic[name]).dtype
        ratio = (float_eps(dtype) if is_float_dtype(dtype) else EPS) / EPS
        scale = float(np.max(np.abs(scale_of[part]), initial=0.0))
        allowance.append(
            SAFETY_FACTOR
            * ratio
            * (refs.rounding[part] + ROUNDING_FACTOR * EPS * scale)
        )
    with jax.enable_x64(True):
        return taylor_tests(
            refs.at_points,
            problem.z,
            names,
            parts,
            [analytic[n] for n in names],
            refs.autodiff,
            allowance,
            noise=refs.noise,
        )


def _sweeps(
    problem: _Problem,
    refs: _References,
    comparisons: list[QuantityComparison],
    parts: Mapping[int, slice],
) -> tuple[StepSweep, ...]:
    """Sweep the step for the worst entries, in chunks of the compiled length."""
    names = problem.names + problem.probe_names
    where = {name: k for k, name in enumerate(names)}
    sweeps = []
    for q, entry, index in worst_entries(comparisons):
        k = where[q.name]
        coordinate = parts[k].start + int(
            np.ravel_multi_index(index, problem.shapes[k])
        )

        def evaluate(shifts: Array, i: int = coordinate) -> Array:
            # A compiled loss sees its usual chunk length; a plain one is
            # called once per point, so it gets no padding.
            n = shifts.size
            chunk = refs.chunk if refs.autodiff is not None else n
            size = -(-n // chunk) * chunk
            delta = np.zeros(size)
            delta[:n] = shifts
            index_ = np.full(size, i, dtype=np.int64)
            values = [
                refs.evaluate(index_[j : j + chunk], delta[j : j + chunk])
                for j in range(0, size, chunk)
            ]
            return np.concatenate(values)[:n]

        sweeps.append(sweep_entry(evaluate, float(problem.z[coordinate]), entry))
    return tuple(sweeps)


def _second_look(
    problem: _Problem, refs: _References, candidates: NDArray[np.int64]
) -> tuple[NumericEstimate, OneSided | None]:
    """Resolve unsettled entries with one-sided differences.

    Returns:
        The numeric estimate with entries that proved smooth at a smaller
        step replaced, and the kinks found (``None`` if none).
    """
    found = resolve_entries(
        refs.evaluate,
        problem.z,
        candidates,
        refs.steps[candidates],
        refs.noise,
        chunk=refs.chunk,
    )
    numeric = refs.numeric
    # Smooth at the default step changes nothing; only a smaller step does.
    finer = found.smooth & (found.level > 0)
    if finer.any():
        value, error, step = (
            numeric.value.copy(),
            numeric.error.copy(),
            numeric.step.copy(),
        )
        at = found.index[finer]
        value[at], error[at], step[at] = (
            found.value[finer],
            found.error[finer],
            found.step[finer],
        )
        numeric = NumericEstimate(value, error, step)
    kinks = None
    if found.kink.any():
        n = problem.z.size
        kink = np.zeros(n, bool)
        left, right = np.full(n, np.nan), np.full(n, np.nan)
        side_error = np.zeros(n)
        at = found.index[found.kink]
        kink[at] = True
        left[at] = found.left[found.kink]
        right[at] = found.right[found.kink]
        side_error[at] = found.side_error[found.kink]
        kinks = OneSided(kink, left, right, side_error)
    logger.debug(
        "second look at %d entries: %d smooth at a smaller step, %d kinks",
        candidates.size,
        int(finer.sum()),
        int(found.kink.sum()),
    )
    return numeric, kinks


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
    for fn, role in ((f, "f"), (vjp, "vjp")):
        if not callable(fn):
            raise InvalidTypeError(
                f"{role} must be callable, got {fn!r}", name=role, value=fn
            )
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
    # The cotangent is passed as data, so that the one loss (and its
    # compiled references) serves every cotangent and every call.
    loss, grad = _vjp_loss(f), _vjp_grad(vjp)
    results = []
    for k, c in enumerate(_cotangents(f, x, data, n_cotangents, seed)):
        try:
            result = compare_gradient(loss, grad, x, c, *data, rel_step=rel_step)
        except InputMutationError as err:
            raise _as_vjp_mutation(err, f, vjp) from err
        except NondeterministicLossError as err:
            raise NondeterministicLossError(
                str(err).replace("the loss function", "the forward function", 1),
                role="f",
                function=f,
                values=err.values,
            ) from err
        results.append((k, result))

    quantities = tuple(
        _renamed(q, f"{q.name} @ c{k}")
        for k, result in results
        for q in result.quantities
    )
    first = results[0][1]
    diagnosis = ""
    if any(r.verdict is Verdict.FAIL for _, r in results):
        # A backward pass that ignores the upstream cotangent, or uses it
        # only through its sum, is right for the all-ones cotangent.
        ones = jax.tree_util.tree_map(
            lambda c: np.ones_like(c), next(_cotangents(f, x, data, 1, seed))
        )
        at_ones = compare_gradient(loss, grad, x, ones, *data, rel_step=rel_step)
        quantities = quantities + tuple(
            _renamed(q, f"{q.name} @ ones") for q in at_ones.quantities
        )
        if at_ones.verdict is not Verdict.FAIL:
            failed = [f"c{k}" for k, r in results if r.verdict is Verdict.FAIL]
            diagnosis = (
                f"the backward pass is right for the all-ones cotangent but "
                f"wrong for the random cotangents {', '.join(failed)}: it "
                "ignores the upstream cotangent, or uses only its sum"
            )
    taylor = tuple(
        dataclasses.replace(t, quantity=f"{t.quantity} @ c{k}")
        for k, result in results
        for t in result.taylor
    )
    sweeps = tuple(
        dataclasses.replace(s, entry=f"{s.entry} @ c{k}")
        for k, result in results
        for s in result.sweeps
    )
    notes = [r.diagnosis for _, r in results if r.diagnosis]
    if notes and not diagnosis:
        diagnosis = notes[0]
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
        diagnosis=diagnosis,
        complex_step=first.complex_step,
        taylor=taylor,
        sweeps=sweeps,
    )


@functools.lru_cache(maxsize=CACHE_SIZE)
def _vjp_loss(f: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``loss(x, c, *data) = <c, f(x, *data)>``, one per ``f``."""

    def loss(x_: Any, c: Any, *d: Any) -> Any:
        y = f(x_, *d)
        terms = jax.tree_util.tree_map(lambda a, b: jnp.sum(a * b), y, c)
        return sum(jax.tree_util.tree_leaves(terms))

    loss.__qualname__ = getattr(f, "__qualname__", "f")
    return loss


@functools.lru_cache(maxsize=CACHE_SIZE)
def _vjp_grad(vjp: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``grad(x, c, *data) = vjp(x, c, *data)``, one per ``vjp``."""

    def grad(x_: Any, c: Any, *d: Any) -> Any:
        return vjp(x_, c, *d)

    grad.__qualname__ = getattr(vjp, "__qualname__", "vjp")
    return grad


def _as_vjp_mutation(
    err: InputMutationError, f: Callable[..., Any], vjp: Callable[..., Any]
) -> InputMutationError:
    """Name a mutation in the terms of a backward-pass check."""
    role, function = ("vjp", vjp) if err.role == "grad" else ("f", f)
    if err.argument == "params":
        argument = "x"
    elif err.argument == "data[0]":
        argument = "cotangent"
    else:
        argument = f"data[{int(err.argument[5:-1]) - 1}]"
    where = argument + (f" leaf {err.leaf}" if err.leaf else "")
    name = getattr(function, "__qualname__", repr(function))
    shown = ", ".join(
        f"[{','.join(map(str, i))}] {a:.6g} -> {b:.6g}" for i, a, b in err.entries[:3]
    )
    return InputMutationError(
        f"the {role} function {name} changed its input {where} in place: "
        f"{err.n_changed} entries changed ({shown}); it must not modify its "
        "arguments",
        role=role,
        function=function,
        argument=argument,
        leaf=err.leaf,
        entries=err.entries,
        n_changed=err.n_changed,
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
