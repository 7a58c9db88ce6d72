# SPDX-License-Identifier: MIT
"""One call, one result: check a delta-rule derivation on one network."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping

import numpy as np
from numpy.typing import NDArray

from gradcheck._behaviour import check_unchanged, snapshot
from gradcheck._compare import (
    QuantityComparison,
    Reference,
    Verdict,
    combine_verdicts,
    compare_quantity,
)
from gradcheck._complex_step import (
    ComplexStep,
    check_complex_step_option,
    delta_rule_complex_step,
)
from gradcheck._delta_evidence import delta_rule_sweeps, delta_rule_taylor
from gradcheck._delta_rule import delta_rule, quantity_names, required_quantity_names
from gradcheck._networks import Network, check_data, check_params
from gradcheck._numeric import EPS, default_steps
from gradcheck._precision import float_eps, is_float_dtype
from gradcheck._references import compute_references
from gradcheck._result import (
    CheckResult,
    first_failing,
    raise_on_failure,
)
from gradcheck._rounding import delta_rule_error_bounds
from gradcheck._screen import screen_delta_rule
from gradcheck._taylor import contradictions
from gradcheck.errors import (
    DerivationError,
    DerivationLoadError,
    GradcheckError,
    InvalidArgumentError,
    InvalidTypeError,
)

__all__ = [
    "Derivation",
    "compare_delta_rule",
    "check_delta_rule",
    "load_callable",
    "load_derivation",
]

Array = NDArray[np.float64]
Derivation = Callable[[Network, Mapping[str, Array], Array, Array, float], Mapping]

# The complex step is on by default up to this many parameters: its numpy
# forward pass costs about P^2 * batch, under a millisecond for the
# generated networks (up to 6 layers of 8 units).
COMPLEX_STEP_AUTO_PARAMS = 512


def _check_eta(eta: object) -> float:
    if isinstance(eta, (bool, np.bool_)) or not isinstance(
        eta, (int, float, np.integer, np.floating)
    ):
        raise InvalidTypeError(
            f"eta must be a float, got eta={eta!r}", name="eta", value=eta
        )
    if not (math.isfinite(eta) and eta > 0):
        raise InvalidArgumentError(
            f"eta must be a positive finite float, got eta={eta!r}",
            name="eta",
            value=eta,
        )
    return float(eta)  # numpy integers and floats become a plain float


def _dtype_of(value: object) -> np.dtype:
    """The float dtype of an analytic value; float64 for anything else."""
    dtype = np.asarray(value).dtype
    return dtype if is_float_dtype(dtype) else np.dtype(np.float64)


def _callable_name(fn: object) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}:{name}" if module else name


def _unchanged(given: dict[str, object], originals: dict[str, object]) -> bool:
    """Whether a derivation left the copies it was given as they were.

    The originals are validated, so finite, and ``==`` compares them
    exactly; a copy that changed is named by
    :func:`gradcheck._behaviour.check_unchanged`.
    """
    if given["params"].keys() != originals["params"].keys():  # type: ignore[union-attr]
        return False
    pairs = [
        (given["x"], originals["x"]),
        (given["d"], originals["d"]),
        *(
            (given["params"][k], v)  # type: ignore[index]
            for k, v in originals["params"].items()  # type: ignore[union-attr]
        ),
    ]
    return all(
        isinstance(ours, np.ndarray)
        and ours.dtype == theirs.dtype
        and np.array_equal(ours, theirs)
        for ours, theirs in pairs
    )


def _collect_analytic(
    network: Network, returned: object
) -> tuple[dict[str, object], tuple[str, ...]]:
    if not isinstance(returned, Mapping):
        raise InvalidTypeError(
            "a derivation must return a mapping from quantity names to arrays, "
            f"got {type(returned)!r}",
            name="derivation",
            value=returned,
        )
    known = quantity_names(network)
    unknown = [name for name in returned if name not in known]
    if unknown:
        raise InvalidArgumentError(
            f"the derivation returned unknown quantities {unknown}; the names "
            f"for the network {network.describe()} are {known}",
            name="derivation",
            value=unknown,
        )
    missing = [n for n in required_quantity_names(network) if n not in returned]
    if missing:
        raise InvalidArgumentError(
            f"the derivation must return the gradient of E, but {missing} are missing",
            name="derivation",
            value=missing,
        )
    not_provided = tuple(name for name in known if name not in returned)
    for name, value in returned.items():
        try:
            dtype = np.asarray(value).dtype
        except (TypeError, ValueError) as err:
            raise InvalidTypeError(
                f"the derivation's {name} must be an array of real numbers, "
                f"got a {type(value).__name__} that numpy cannot make one of "
                f"({err})",
                name="derivation",
                value=value,
            ) from err
        if dtype.kind not in "iu" and not is_float_dtype(dtype):
            raise InvalidTypeError(
                f"the derivation's {name} must be an array of real numbers, "
                f"got dtype {np.asarray(value).dtype}",
                name="derivation",
                value=value,
            )
    return dict(returned), not_provided


def compare_delta_rule(
    network: Network,
    params: Mapping[str, object],
    x: object,
    d: object,
    eta: float = 0.1,
    derivation: Derivation = delta_rule,
    *,
    rel_step: float | None = None,
    label: str = "",
    reproduce: str = "",
    references: Mapping[str, Reference] | None = None,
    method: str = "full",
    directions: int | None = None,
    seed: int = 0,
    complex_step: bool | None = None,
    taylor: bool = True,
    sweeps: bool = True,
) -> CheckResult:
    """Check a delta-rule derivation against finite differences and JAX.

    Every named quantity the derivation returns (``dE/dy``, ``dy/ds``,
    ``theta``, ``dE/dW``, ``dE/db``, ``Delta W``, ``Delta b``) is compared
    with its own definition as a derivative, entry by entry, with an
    acceptance band from the finite-difference error estimate (see
    :mod:`gradcheck._compare`).

    Args:
        network: the architecture.
        params: ``"W[u->v]"`` arrays of shape ``(n_u, n_v)`` and, with biases,
            ``"b[v]"`` arrays of shape ``(n_v,)``.
        x: inputs, shape ``(batch, n_0)``.
        d: targets in [0, 1], shape ``(batch, n_out)``.
        eta: the learning rate, positive.
        derivation: the implementation under test, with the signature of
            :func:`gradcheck.delta_rule`; the built-in one by default.
        rel_step: the finite-difference step relative to ``max(1, |w|)``;
            ``cbrt(eps)`` of float64 by default.
        label: a name for the check in reports.
        reproduce: how to reproduce the check, for reports.
        references: the references of this very point, as
            ``compute_references(network, params, x, d, eta, rel_step)``
            returns them, when the caller checks several derivations at one
            point and computes them once; computed here when omitted. Only
            with ``method="full"``.
        method: ``"full"`` takes finite differences along every parameter
            and probe column; ``"screen"`` compares projections on
            ``directions`` random directions per tensor with autodiff, to
            rounding, and autodiff with finite differences along the
            first (see :mod:`gradcheck._screen`), then checks in full the
            quantities that did not pass, so that a failure still names
            entries and the first wrong quantity.
            ``result.details["screen"]["quantities"][name]`` records, per
            screened quantity, the screen's own verdict (anything but
            ``"pass"`` sent it to the full check), its directions, how
            many had finite differences, the achieved relative band and
            the probability that an error of relative size 1e-2, 1e-4 or
            1e-6 went unseen; ``["checked_in_full"]`` lists what the full
            check judged.
        directions: directions per tensor for ``method="screen"``. By
            default, the first of each tensor's ``DEFAULT_DIRECTIONS`` (4),
            and all of them only for a quantity that one leaves
            unresolved (an error of 1% more likely to slip past it than
            ``MAX_MISS``, 1e-4) and that all of them could settle. The
            directions are independent, so the screen's miss probability
            is held to the same bound; each quantity records how many it
            took.
        seed: seeds the directions of ``method="screen"``.
        complex_step: tighten the numeric reference with the complex step
            (see :mod:`gradcheck._complex_step`) where it agrees with the
            central difference; ``None`` (the default) does so for networks
            of up to ``COMPLEX_STEP_AUTO_PARAMS`` parameters, where it costs
            a fraction of the references. With ``method="screen"`` it
            applies to the quantities checked in full.
        taylor: run the Taylor-remainder test on ``dE/dW`` and ``dE/db``
            (evidence in the result, never part of the verdict); with
            ``method="screen"``, only when every parameter gradient was
            checked in full.
        sweeps: sweep the finite-difference step for the worst entries of
            the quantities checked in full.

    Returns:
        The :class:`CheckResult`; it never raises on a wrong derivation.

    Raises:
        InvalidArgumentError: bad shapes, NaN or Inf in the inputs, a
            non-positive step or eta, or a derivation that returns unknown
            names or leaves out the gradient.
        InvalidTypeError: arguments of the wrong type.
    """
    # Unless told how many, a screen takes each tensor's first direction
    # and more only where that one leaves the miss probability too high.
    adaptive = directions is None
    directions = _check_method(method, directions, seed, references)
    if not isinstance(network, Network):
        raise InvalidTypeError(
            f"network must be a gradcheck.Network, got {type(network)!r}",
            name="network",
            value=network,
        )
    params = check_params(network, params)
    x, d = check_data(network, x, d)
    eta = _check_eta(eta)
    default_steps(np.zeros(1), rel_step)  # validates rel_step early
    complex_step = check_complex_step_option(complex_step)
    if not callable(derivation):
        raise InvalidTypeError(
            f"derivation must be callable, got {derivation!r}",
            name="derivation",
            value=derivation,
        )

    # The derivation gets copies, so a careless one cannot change the
    # values the references are computed from.
    originals = {"params": params, "x": x, "d": d}
    given = {
        "params": {k: v.copy() for k, v in params.items()},
        "x": x.copy(),
        "d": d.copy(),
    }
    try:
        returned = derivation(network, given["params"], given["x"], given["d"], eta)
    except GradcheckError:
        raise
    except Exception as err:
        raise DerivationError(
            f"the derivation {_callable_name(derivation)} raised "
            f"{type(err).__name__}: {err} on the network {network.describe()}",
            derivation=derivation,
        ) from err
    # A derivation that changes its inputs in place would corrupt the
    # caller's training loop; name it rather than check around it.
    if not _unchanged(given, originals):
        check_unchanged(snapshot(originals), given, "derivation", derivation)
    analytic, not_provided = _collect_analytic(network, returned)

    details: dict[str, object] = {}
    full = [name for name in quantity_names(network) if name in analytic]
    screened: dict[str, QuantityComparison] = {}
    if method == "screen":
        outcome = screen_delta_rule(
            network,
            params,
            x,
            d,
            eta,
            analytic,
            directions=directions,
            seed=seed,
            rel_step=rel_step,
            adaptive=adaptive,
        )
        screened = {c.name: c for c in outcome.comparisons}
        # Drill down: what did not pass the screen is checked in full, on
        # its own parameters and probe columns only.
        full = list(outcome.suspicious)
        details["screen"] = {
            "directions": directions,
            "adaptive": adaptive,
            "seed": seed,
            "quantities": outcome.details,
            "checked_in_full": full,
        }
    if references is None and full:
        references = compute_references(
            network,
            params,
            x,
            d,
            eta,
            rel_step,
            only=None if method == "full" else full,
            path=None if method == "full" else "structured",
        )
    references = references or {}
    step_record = ComplexStep("off", "complex_step=False")
    if complex_step is None:
        complex_step = network.n_params <= COMPLEX_STEP_AUTO_PARAMS
        step_record = ComplexStep(
            "off",
            f"automatic: more than {COMPLEX_STEP_AUTO_PARAMS} parameters; "
            "pass complex_step=True to use it",
        )
    if not full:
        step_record = ComplexStep("off", "nothing was checked in full")
    elif complex_step:
        references, step_record = delta_rule_complex_step(
            network, params, x, d, eta, references
        )

    # A derivation in lower precision is held to error bounds in its own
    # epsilon, which follow the terms each quantity is made of.
    bounds: dict[str, object] = {}
    if full and any(float_eps(_dtype_of(a)) > EPS for a in analytic.values()):
        bounds = delta_rule_error_bounds(network, params, x, d, eta)
    checked = {
        name: compare_quantity(
            name,
            analytic[name],
            references[name],
            batch_size=x.shape[0],
            error_bound=bounds.get(name),  # type: ignore[arg-type]
        )
        for name in full
    }
    comparisons = tuple(
        checked.get(name) or screened[name]
        for name in quantity_names(network)
        if name in analytic
    )
    verdict = combine_verdicts([c.verdict for c in comparisons])
    first_wrong = first_failing(comparisons)

    # Evidence beside the verdict: it never changes it.
    taylor_tests = ()
    gradients = [f"dE/d{name}" for name in network.param_shapes()]
    if taylor and all(name in references for name in gradients):
        taylor_tests = delta_rule_taylor(network, params, x, d, analytic, references)
    step_sweeps = (
        delta_rule_sweeps(network, params, x, d, eta, tuple(checked.values()))
        if sweeps and checked
        else ()
    )
    diagnosis = contradictions(
        taylor_tests,
        failed=[c.name for c in comparisons if c.verdict is Verdict.FAIL],
        passed=[c.name for c in comparisons if c.verdict is Verdict.PASS],
        unsettled=[c.name for c in comparisons if c.verdict is Verdict.INCONCLUSIVE],
    )
    return CheckResult(
        verdict=verdict,
        quantities=comparisons,
        first_wrong=first_wrong,
        subject=network.describe(),
        n_params=network.n_params,
        network=network,
        batch=x.shape[0],
        eta=eta,
        not_provided=not_provided,
        label=label,
        reproduce=reproduce,
        details=details,
        diagnosis=diagnosis,
        complex_step=step_record,
        taylor=taylor_tests,
        sweeps=step_sweeps,
    )


METHODS = ("full", "screen")
DEFAULT_DIRECTIONS = 4
# Past a few dozen directions per tensor a full check is as cheap and names
# entries; this bound keeps a typo from asking for terabytes of directions.
MAX_DIRECTIONS = 256


def _check_method(
    method: object, directions: object, seed: object, references: object
) -> int:
    """Validate the method's arguments; return the number of directions."""
    if not isinstance(method, str):
        raise InvalidTypeError(
            f"method must be a str, one of {METHODS}, got method={method!r}",
            name="method",
            value=method,
        )
    if method not in METHODS:
        raise InvalidArgumentError(
            f"method must be one of {METHODS}, got method={method!r}",
            name="method",
            value=method,
        )
    if method == "full":
        if directions is not None:
            raise InvalidArgumentError(
                "directions apply to method='screen' only, got "
                f"directions={directions!r} with method='full'",
                name="directions",
                value=directions,
            )
        return 0
    if references is not None:
        raise InvalidArgumentError(
            "references apply to method='full' only; a screen computes the "
            "references it needs",
            name="references",
            value=type(references).__name__,
        )
    if directions is None:
        directions = DEFAULT_DIRECTIONS
    for name, value, least in (("directions", directions, 1), ("seed", seed, 0)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, np.integer)
        ):
            raise InvalidTypeError(
                f"{name} must be an int, got {name}={value!r}", name=name, value=value
            )
        if value < least:
            raise InvalidArgumentError(
                f"{name} must be at least {least}, got {name}={value!r}",
                name=name,
                value=value,
            )
    if directions > MAX_DIRECTIONS:  # type: ignore[operator]
        raise InvalidArgumentError(
            f"directions must be at most {MAX_DIRECTIONS}, got "
            f"directions={directions!r}; use method='full' to check every entry",
            name="directions",
            value=directions,
        )
    return int(directions)  # type: ignore[arg-type]


def check_delta_rule(*args: object, **kwargs: object) -> CheckResult:
    """Like :func:`compare_delta_rule`, but raise if the derivation is wrong.

    Raises:
        GradientMismatchError: an ``AssertionError`` whose message names the
            first wrong quantity and its worst entries; ``.result`` holds
            the full :class:`CheckResult`.
    """
    __tracebackhide__ = True
    return raise_on_failure(compare_delta_rule(*args, **kwargs))  # type: ignore[arg-type]


def load_derivation(target: str) -> Derivation:
    """Import a derivation given as ``"package.module:function"``.

    Raises:
        DerivationLoadError: the target is malformed, the module cannot be
            imported, or it has no such callable.
    """
    return load_callable(target, role="derivation")  # type: ignore[return-value]


def load_callable(target: str, role: str = "derivation") -> Callable[..., object]:
    """Import a callable given as ``"package.module:function"``.

    The function part may be dotted (``module:Class.method``). The module
    is imported with :func:`importlib.import_module`, so it must be on
    ``sys.path``.

    Args:
        target: the ``module:function`` string.
        role: what the callable is, for messages (``"derivation"``,
            ``"loss"``, ``"grad"``).

    Raises:
        DerivationLoadError: the target is malformed, the module cannot be
            imported (or raises while it is imported), or it has no such
            callable.
    """
    module_name, sep, attr = str(target).partition(":")
    if not sep or not module_name or not attr:
        raise DerivationLoadError(
            f"a {role} must be given as 'module:function', got {target!r}",
            target=target,
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise DerivationLoadError(
            f"cannot import module {module_name!r} for {role} {target!r}: {err}",
            target=target,
        ) from err
    except Exception as err:
        # A module that raises on import is the user's bug, not ours: say
        # so in one line rather than with gradcheck's traceback.
        raise DerivationLoadError(
            f"cannot import module {module_name!r} for {role} {target!r}: "
            f"{type(err).__name__}: {err}",
            target=target,
        ) from err
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DerivationLoadError(
                f"module {module_name!r} has no attribute {attr!r} ({role} {target!r})",
                target=target,
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise DerivationLoadError(
            f"{role} {target!r} is not callable, got {obj!r}", target=target
        )
    return obj
