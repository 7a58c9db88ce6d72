# SPDX-License-Identifier: MIT
"""Time gradcheck and other gradient checkers side by side, on the same networks.

Every checker gets the same sigmoid networks with biases (64-128-128-10,
26,122 parameters, and 128-256-256-10, 101,386), a batch of 8, float64,
and the same seeded weights, inputs and targets, with the loss
``E = 1/2 sum (d - y)^2`` summed over the batch:

* ``forward``: one numpy forward pass and loss, the unit of cost;
* ``gradcheck``: ``compare_delta_rule`` of the hand-written delta rule,
  every named quantity of every entry against finite differences and JAX;
* ``gradcheck-screen``: ``compare_delta_rule(..., method="screen")``, the
  screening mode as it runs by default (the first of 4 random directions
  per tensor, all 4 where one is not enough), skipped where this gradcheck
  lacks it; it keeps the directions of its last seed, so
  ``gradcheck-screen-new-seed`` times it with a new seed on every call,
  drawing them afresh, and ``gradcheck-screen-4`` takes all 4 directions
  of every tensor;
* ``torch``, ``torch-fast``: ``torch.autograd.gradcheck`` of the same loss
  written in torch, full and with ``fast_mode=True``;
* ``scipy``: ``scipy.optimize.check_grad`` (forward differences, step
  ``sqrt(eps)``, every direction) of the numpy loss and the hand-written
  gradient;
* ``jax-check-grads``: ``jax.test_util.check_grads(loss, (params,),
  order=1, modes=["rev"])``, one random direction;
* ``jax-fd``: ``jax.grad`` against central differences of every entry,
  ``jit(vmap(...))`` over chunks of entries.

Each checker is called once (the first call, compiling whatever it
compiles) and then repeated: as often as fits in ``--budget`` seconds,
between 1 and ``--max-repeats`` times; the median of the repeats is the
figure. A checker that compiles nothing and whose first call alone
exceeds the budget is timed by that one call. The checkers that take
under 0.1 s are then timed again side by side: ``--rounds`` rounds that
call each of them once, in a rotating order, so that the load of a shared
machine falls on all of them alike; the median of those calls is their
figure. Every checker must pass
the right gradient; each is then run once more with a planted error (one
entry of the first weight gradient off by 1% of the largest entry), to
show whether it notices.

The fuzzing throughput of ``benchmarks/throughput.py`` (generated small
networks, fully checked, per second) is measured in the same run, and
``--scale`` adds a screening check of a network of a million parameters
with its peak memory.

Usage::

    python benchmarks/peers.py                 # both sizes, every checker
    python benchmarks/peers.py --quick         # the small size, few repeats
    python benchmarks/peers.py --checkers gradcheck,torch-fast --sizes small

Timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import inspect
import math
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

SIZES = {
    "small": (64, 128, 128, 10),
    "large": (128, 256, 256, 10),
}
SCALE_SIZES = (512, 1024, 512, 10)
BATCH = 8
ETA = 0.1

# The planted error: this fraction of the largest gradient entry, added to
# the first entry of the first weight gradient. It is far above every
# checker's tolerance, so a full check must flag it; a check along random
# directions sees it only through that entry's share of each direction.
PLANT_FRACTION = 1e-2

# Directions per tensor that compare_delta_rule draws by default for the
# screening mode, of which it takes the first, and all where one is not
# enough; gradcheck-screen-4 takes them all.
DIRECTIONS = 4

# Pass criteria for the peers that return a number rather than a verdict.
# scipy's check_grad returns the 2-norm of analytic minus forward
# differences; with its step sqrt(eps), each entry is off by about
# sqrt(eps) times the curvature, so the norm is held to a small fraction
# of the gradient's norm.
SCIPY_RTOL = 1e-4
# Central differences with step cbrt(eps) * max(1, |w|) are good to about
# eps^(2/3) relative; entries are held to atol + rtol * |analytic|, with
# atol relative to the largest entry.
FD_RTOL = 1e-5
FD_ATOL = 1e-7

# Floats per chunk of shifted parameter rows in jax-fd, so that a chunk of
# P-long rows stays near 32 MB whatever the network: on the small network,
# chunks of 128 rows ran as fast as chunks of 2048, and faster than 512.
FD_CHUNK_FLOATS = 4 * 2**20


# ---------------------------------------------------------------------------
# The problem every checker sees


@dataclass
class Problem:
    """One network and point: parameters, inputs, targets, flat and named."""

    name: str
    sizes: tuple[int, ...]
    network: object
    params: dict[str, Array]
    x: Array
    d: Array
    shapes: dict[str, tuple[int, ...]]
    cache: dict[str, object] = field(default_factory=dict)

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes.values())

    def flat(self) -> Array:
        return np.concatenate([self.params[n].ravel() for n in self.shapes])

    def unflatten(self, z: object, reshape: Callable = np.reshape) -> dict:
        params, start = {}, 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            params[name] = reshape(z[start : start + size], shape)
            start += size
        return params


def make_problem(name: str, sizes: tuple[int, ...], seed: int = 0) -> Problem:
    """Draw the seeded network, point and targets that every checker gets."""
    from gradcheck import Network, init_params

    network = Network(sizes, bias=True)
    rng = np.random.default_rng(seed)
    params = init_params(network, rng)
    x = rng.normal(size=(BATCH, sizes[0]))
    d = rng.uniform(size=(BATCH, sizes[-1]))
    return Problem(name, sizes, network, params, x, d, network.param_shapes())


def _sigmoid(s: Array) -> Array:
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def numpy_loss(problem: Problem, z: Array) -> float:
    """Return E at the flat parameters ``z``, in numpy."""
    params = problem.unflatten(z)
    network = problem.network
    y = {0: problem.x}
    for v in range(1, network.n_layers):
        s = sum(y[u] @ params[f"W[{u}->{v}]"] for u in network.predecessors(v))
        y[v] = _sigmoid(s + params[f"b[{v}]"])
    return 0.5 * float(np.sum((problem.d - y[network.n_layers - 1]) ** 2))


def numpy_grad(problem: Problem, z: Array, planted: bool = False) -> Array:
    """Return the hand-written gradient (gradcheck.delta_rule), flat."""
    from gradcheck import delta_rule

    grads = delta_rule(problem.network, problem.unflatten(z), problem.x, problem.d, ETA)
    g = np.concatenate([grads[f"dE/d{n}"].ravel() for n in problem.shapes])
    return _plant(g) if planted else g


def _plant(g: Array) -> Array:
    g = np.array(g, copy=True)
    g[0] += PLANT_FRACTION * np.max(np.abs(g))
    return g


# ---------------------------------------------------------------------------
# The checkers: each returns True when it finds the gradient right.


def _run_forward(problem: Problem, planted: bool) -> bool:
    return math.isfinite(numpy_loss(problem, problem.flat()))


def _planted_derivation(network, params, x, d, eta):
    from gradcheck import delta_rule

    out = dict(delta_rule(network, params, x, d, eta))
    first = next(iter(network.param_shapes()))
    grad = out[f"dE/d{first}"].copy()
    grad.flat[0] += PLANT_FRACTION * max(
        float(np.max(np.abs(out[f"dE/d{n}"]))) for n in network.param_shapes()
    )
    out[f"dE/d{first}"] = grad
    return out


def _compare(problem: Problem, planted: bool, **options: object) -> object:
    """Run ``compare_delta_rule`` of the delta rule (planted or not) on a problem."""
    from gradcheck import compare_delta_rule, delta_rule

    derivation = _planted_derivation if planted else delta_rule
    return compare_delta_rule(
        problem.network,
        problem.params,
        problem.x,
        problem.d,
        ETA,
        derivation=derivation,
        **options,
    )


def _run_gradcheck(problem: Problem, planted: bool, **options: object) -> bool:
    from gradcheck import Verdict

    return _compare(problem, planted, **options).verdict == Verdict.PASS


def _run_screen(problem: Problem, planted: bool) -> bool:
    return _run_gradcheck(problem, planted, method="screen")


def _run_screen_all(problem: Problem, planted: bool) -> bool:
    return _run_gradcheck(problem, planted, method="screen", directions=DIRECTIONS)


def _run_screen_new_seed(problem: Problem, planted: bool) -> bool:
    seed = problem.cache["screen-seed"] = problem.cache.get("screen-seed", 0) + 1
    return _run_gradcheck(problem, planted, method="screen", seed=seed)


def screen_miss(problem: Problem, directions: int | None) -> float:
    """Return the largest miss probability at an error of 1% a screen records.

    Over every quantity of the delta rule, screened along ``directions``
    per tensor (by default, as many as it takes) at this problem's point
    (see ``gradcheck._screen``): how likely the screen was to let a 1%
    error of any one of them through.
    """
    result = _compare(problem, False, method="screen", directions=directions)
    quantities = result.details["screen"]["quantities"].values()
    return max(facts["miss_probability"]["0.01"] for facts in quantities)


# What a screen by default takes: the gradcheck-screen row's and the
# million-parameter screen's directions.
DEFAULT_SCREEN = f"1 direction per tensor, {DIRECTIONS} where 1 is not enough"

# The screening checkers, by the directions per tensor they ask for.
SCREEN_DIRECTIONS = {
    "gradcheck-screen": None,
    "gradcheck-screen-new-seed": None,
    "gradcheck-screen-4": DIRECTIONS,
}


def full_check_peak_mb(problem: Problem) -> float:
    """Return the peak of numpy and Python allocations in one full check, MiB.

    Measured with ``tracemalloc``, which numpy reports its arrays to; JAX's
    own buffers are not counted, and neither is what was allocated before.
    """
    import tracemalloc

    tracemalloc.start()
    try:
        _run_gradcheck(problem, planted=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def screen_missing() -> str | None:
    """Say why the screening mode cannot run here, or return None if it can."""
    from gradcheck import compare_delta_rule

    if "method" not in inspect.signature(compare_delta_rule).parameters:
        return (
            "not run: this gradcheck's compare_delta_rule has no method= "
            "argument (the screening mode is not merged yet)"
        )
    return None


def _torch_loss(problem: Problem) -> Callable:
    import torch

    x = torch.from_numpy(problem.x)
    d = torch.from_numpy(problem.d)
    network = problem.network

    def loss(z):
        params = problem.unflatten(z, reshape=lambda a, shape: a.reshape(shape))
        y = {0: x}
        for v in range(1, network.n_layers):
            s = sum(y[u] @ params[f"W[{u}->{v}]"] for u in network.predecessors(v))
            y[v] = torch.sigmoid(s + params[f"b[{v}]"])
        return 0.5 * torch.sum((d - y[network.n_layers - 1]) ** 2)

    return loss


def _torch_planted(loss: Callable) -> Callable:
    """Wrap the torch loss so that its backward pass carries the planted error."""
    import torch

    class Planted(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return loss(z)

        @staticmethod
        def backward(ctx, grad_output):
            (z,) = ctx.saved_tensors
            with torch.enable_grad():
                w = z.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(loss(w), w)
            return grad_output * torch.from_numpy(_plant(g.numpy()))

    return Planted.apply


def _run_torch(problem: Problem, planted: bool, fast: bool = False) -> bool:
    import torch

    loss = problem.cache.get("torch-loss")
    if loss is None:
        loss = problem.cache["torch-loss"] = _torch_loss(problem)
    fn = _torch_planted(loss) if planted else loss
    z = torch.from_numpy(problem.flat()).requires_grad_(True)
    return bool(
        torch.autograd.gradcheck(fn, (z,), fast_mode=fast, raise_exception=False)
    )


def _run_scipy(problem: Problem, planted: bool) -> bool:
    from scipy.optimize import check_grad

    z = problem.flat()
    error = check_grad(
        lambda w: numpy_loss(problem, w),
        lambda w: numpy_grad(problem, w, planted),
        z,
    )
    return bool(error <= SCIPY_RTOL * np.linalg.norm(numpy_grad(problem, z)))


def _jax_loss(problem: Problem) -> Callable:
    from gradcheck import squared_error

    network = problem.network

    def loss(params):
        return squared_error(network, params, problem.x, problem.d)

    return loss


def _run_check_grads(problem: Problem, planted: bool) -> bool:
    import jax
    import jax.numpy as jnp
    from jax.test_util import check_grads

    loss = _jax_loss(problem)
    if planted:
        first = next(iter(problem.shapes))
        right = loss

        @jax.custom_vjp
        def loss(params):
            return right(params)

        def forward(params):
            return right(params), params

        def backward(params, cotangent):
            g = dict(jax.grad(right)(params))
            delta = PLANT_FRACTION * max(jnp.max(jnp.abs(a)) for a in g.values())
            g[first] = g[first].at[(0,) * g[first].ndim].add(delta)
            return ({k: cotangent * a for k, a in g.items()},)

        loss.defvjp(forward, backward)

    params = {k: jnp.asarray(v) for k, v in problem.params.items()}
    try:
        check_grads(loss, (params,), order=1, modes=["rev"])
    except AssertionError:
        return False
    return True


def _jax_fd_functions(problem: Problem) -> tuple[Callable, Callable, int]:
    import jax
    import jax.numpy as jnp

    loss = _jax_loss(problem)

    def flat_loss(z):
        return loss(problem.unflatten(z, reshape=jnp.reshape))

    @jax.jit
    def differences(z, index, step):
        def one(i, h):
            up = flat_loss(z.at[i].add(h))
            down = flat_loss(z.at[i].add(-h))
            return (up - down) / (2 * h)

        return jax.vmap(one)(index, step)

    chunk = 2 ** int(math.log2(max(16, FD_CHUNK_FLOATS // problem.n_params)))
    return jax.jit(jax.grad(flat_loss)), differences, chunk


def _run_jax_fd(problem: Problem, planted: bool) -> bool:
    import jax.numpy as jnp

    if "jax-fd" not in problem.cache:
        problem.cache["jax-fd"] = _jax_fd_functions(problem)
    grad, differences, chunk = problem.cache["jax-fd"]
    z = problem.flat()
    g = np.asarray(grad(jnp.asarray(z)))
    if planted:
        g = _plant(g)

    # Fixed-length chunks (the last one padded), so that it compiles once.
    steps = np.cbrt(np.finfo(np.float64).eps) * np.maximum(1.0, np.abs(z))
    size = -(-z.size // chunk) * chunk
    index = np.zeros(size, dtype=np.int64)
    index[: z.size] = np.arange(z.size)
    step = np.ones(size)
    step[: z.size] = steps
    zj = jnp.asarray(z)
    numeric = np.concatenate(
        [
            np.asarray(differences(zj, index[i : i + chunk], step[i : i + chunk]))
            for i in range(0, size, chunk)
        ]
    )[: z.size]
    atol = FD_ATOL * np.max(np.abs(g))
    return bool(np.all(np.abs(numeric - g) <= atol + FD_RTOL * np.abs(g)))


@dataclass(frozen=True)
class Checker:
    """A gradient checker to time: how it runs and what it checks."""

    name: str
    description: str
    checks: str
    run: Callable[[Problem, bool], bool]
    needs: str | None = None
    compiles: bool = False
    missing: Callable[[], str | None] | None = None


CHECKERS = {
    c.name: c
    for c in (
        Checker(
            "forward",
            "one numpy forward pass and loss",
            "-",
            _run_forward,
        ),
        Checker(
            "gradcheck",
            "gradcheck.compare_delta_rule(..., derivation=gradcheck.delta_rule)",
            "every entry, every quantity",
            _run_gradcheck,
            compiles=True,
        ),
        Checker(
            "gradcheck-screen",
            'compare_delta_rule(..., method="screen")',
            DEFAULT_SCREEN,
            _run_screen,
            compiles=True,
            missing=screen_missing,
        ),
        Checker(
            "gradcheck-screen-new-seed",
            'compare_delta_rule(..., method="screen", seed=<new each call>)',
            "as gradcheck-screen, drawn afresh",
            _run_screen_new_seed,
            compiles=True,
            missing=screen_missing,
        ),
        Checker(
            "gradcheck-screen-4",
            f'compare_delta_rule(..., method="screen", directions={DIRECTIONS})',
            f"{DIRECTIONS} random directions per tensor",
            _run_screen_all,
            compiles=True,
            missing=screen_missing,
        ),
        Checker(
            "torch",
            "torch.autograd.gradcheck(loss, (z,))",
            "every entry",
            lambda p, planted: _run_torch(p, planted),
            needs="torch",
        ),
        Checker(
            "torch-fast",
            "torch.autograd.gradcheck(loss, (z,), fast_mode=True)",
            "1 random direction",
            lambda p, planted: _run_torch(p, planted, fast=True),
            needs="torch",
        ),
        Checker(
            "scipy",
            "scipy.optimize.check_grad(loss, delta_rule, z) (forward differences)",
            "every entry",
            _run_scipy,
            needs="scipy",
        ),
        Checker(
            "jax-check-grads",
            'jax.test_util.check_grads(loss, (params,), order=1, modes=["rev"])',
            "1 random direction",
            _run_check_grads,
            compiles=True,
        ),
        Checker(
            "jax-fd",
            "jax.grad against central differences, jit(vmap) over chunks",
            "every entry",
            _run_jax_fd,
            compiles=True,
        ),
    )
}


def select_checkers(spec: str | None) -> list[str]:
    """Return the checker names a comma-separated ``--checkers`` value selects.

    ``None``, ``""`` and ``"all"`` select every checker. ``forward`` and
    ``gradcheck`` (the units the ratios divide by) are always included,
    and the order is always that of :data:`CHECKERS`.

    Raises:
        ValueError: a name is not a known checker.
    """
    if not spec or spec == "all":
        return list(CHECKERS)
    names = {name.strip() for name in spec.split(",") if name.strip()}
    unknown = sorted(names - set(CHECKERS))
    if unknown:
        raise ValueError(
            f"unknown checkers {unknown}; choose from {', '.join(CHECKERS)}"
        )
    names |= {"forward", "gradcheck"}
    return [name for name in CHECKERS if name in names]


def select_sizes(spec: str | None) -> list[str]:
    """Return the size names a comma-separated ``--sizes`` value selects.

    ``"none"`` selects none, for a run of the throughput or ``--scale`` alone.
    """
    if not spec or spec == "all":
        return list(SIZES)
    if spec == "none":
        return []
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SIZES))
    if unknown:
        raise ValueError(f"unknown sizes {unknown}; choose from {', '.join(SIZES)}")
    return [name for name in SIZES if name in names]


def missing_reason(checker: Checker) -> str | None:
    """Say why a checker cannot run in this environment, or return None."""
    if checker.needs is not None:
        try:
            __import__(checker.needs)
        except ImportError:
            return (
                f"not run: {checker.needs} is not installed (nox -s bench installs it)"
            )
    if checker.missing is not None:
        return checker.missing()
    return None


# ---------------------------------------------------------------------------
# Timing


def choose_repeats(
    first_s: float, budget_s: float, max_repeats: int, compiles: bool
) -> int:
    """Return how many timed repeats follow the first call.

    As many as fit in the budget at the first call's pace, between 1 and
    ``max_repeats``. A checker that compiles nothing and whose first call
    alone took the whole budget gets 0: its first call is the figure.
    """
    if not compiles and first_s >= budget_s:
        return 0
    fits = int(budget_s // first_s) if first_s > 0 else max_repeats
    return max(1, min(max_repeats, fits))


def time_checker(
    checker: Checker,
    problem: Problem,
    budget_s: float,
    max_repeats: int,
    repeats: int | None = None,
    planted: bool = True,
    planted_limit_s: float = math.inf,
) -> dict[str, object]:
    """Time one checker on one problem and see that it does real work.

    The checker is called once, then ``repeats`` times (by default as many
    as :func:`choose_repeats` allows); every call must find the right
    gradient right. With ``planted``, it is called once more with the
    planted error, unless its first call took over ``planted_limit_s``.

    Returns:
        The row: ``first_s``, ``median_s`` (seconds; ``None`` for a checker
        that cannot run here, with the reason in ``note``), ``repeats``,
        ``samples_s``, ``right_passes`` and ``planted_flagged`` (``None``
        when not run), and what the checker is.
    """
    row: dict[str, object] = {
        "size": problem.name,
        "sizes": list(problem.sizes),
        "n_params": problem.n_params,
        "checker": checker.name,
        "description": checker.description,
        "checks": checker.checks,
        "first_s": None,
        "median_s": None,
        "repeats": 0,
        "samples_s": [],
        "right_passes": None,
        "planted_flagged": None,
        "note": "",
    }
    reason = missing_reason(checker)
    if reason is not None:
        row["note"] = reason
        return row

    start = time.perf_counter()
    passes = [checker.run(problem, False)]
    first = time.perf_counter() - start
    n = (
        repeats
        if repeats is not None
        else choose_repeats(first, budget_s, max_repeats, checker.compiles)
    )
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        passes.append(checker.run(problem, False))
        samples.append(time.perf_counter() - start)
    row.update(
        first_s=first,
        median_s=statistics.median(samples) if samples else first,
        repeats=len(samples) if samples else 1,
        samples_s=samples or [first],
        right_passes=all(passes),
    )
    if not samples:
        row["note"] = "timed by its first call alone"
    if checker.name == "forward" or not planted:
        return row
    if first > planted_limit_s:
        row["note"] = (
            f"{row['note']}; " if row["note"] else ""
        ) + f"planted error not run (first call over {planted_limit_s:g} s)"
    else:
        row["planted_flagged"] = not checker.run(problem, True)
    return row


# Checkers whose median is under this many seconds are timed again side by
# side (see `interleave`): a few milliseconds move by a third from one
# stretch of a shared machine to the next, more than they differ.
INTERLEAVE_BELOW_S = 0.1


def interleave(
    rows: list[dict[str, object]],
    problem: Problem,
    rounds: int,
    below_s: float = INTERLEAVE_BELOW_S,
) -> list[dict[str, object]]:
    """Time the fast checkers again, one call each per round, side by side.

    Timed one after another, each checker's repeats meet a different
    stretch of the machine's load; here every round calls each checker
    whose median was under ``below_s`` once, in an order that rotates from
    round to round, so that slow stretches fall on all of them alike. Their
    rows take the median of these ``rounds`` calls as their figure; the
    rest are returned as they were.
    """
    fast = [
        row
        for row in rows
        if row["median_s"] is not None
        and row["median_s"] < below_s
        and row["right_passes"]
    ]
    if rounds < 1 or len(fast) < 2:
        return rows
    from gradcheck._bench_report import format_seconds

    samples: dict[str, list[float]] = {row["checker"]: [] for row in fast}
    passes: dict[str, bool] = dict.fromkeys(samples, True)
    names = list(samples)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            passed = CHECKERS[name].run(problem, False)
            samples[name].append(time.perf_counter() - start)
            passes[name] = passes[name] and passed
    out = []
    for row in rows:
        name = row["checker"]
        if name in samples:
            row = {
                **row,
                "median_s": statistics.median(samples[name]),
                "alone_s": row["median_s"],
                "repeats": rounds,
                "samples_s": samples[name],
                "right_passes": passes[name],
                "note": (f"{row['note']}; " if row["note"] else "")
                + f"side by side; alone {format_seconds(row['median_s'])}",
            }
        out.append(row)
    return out


# ---------------------------------------------------------------------------
# The million-parameter screening figure, in a process of its own so that
# its peak memory is its own


def _scale_job(args: tuple[tuple[int, ...], int, bool]) -> dict[str, object]:
    sizes, seed, planted = args
    from gradcheck import compare_delta_rule

    problem = make_problem("scale", sizes, seed)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timings = {}
    verdicts = {}
    runs = [("right", None)] + ([("planted", _planted_derivation)] if planted else [])
    for label, derivation in runs:
        options = {"derivation": derivation} if derivation else {}
        start = time.perf_counter()
        result = compare_delta_rule(
            problem.network,
            problem.params,
            problem.x,
            problem.d,
            ETA,
            method="screen",
            **options,
        )
        timings[label] = time.perf_counter() - start
        verdicts[label] = str(result.verdict)
        if label == "planted":
            verdicts["first_wrong"] = result.first_wrong
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "sizes": list(sizes),
        "n_params": problem.n_params,
        "directions": DEFAULT_SCREEN,
        "right_s": timings["right"],
        "right_verdict": verdicts["right"],
        "planted_s": timings.get("planted"),
        "planted_verdict": verdicts.get("planted", "not run"),
        "planted_first_wrong": verdicts.get("first_wrong"),
        "maxrss_mb_before": before / 1024,
        "maxrss_mb": peak / 1024,
        "note": "",
    }


def measure_scale(
    sizes: tuple[int, ...], seed: int, planted: bool = True
) -> dict[str, object]:
    """Screen a large network (right, and planted unless told not to).

    Runs in a process of its own, whose peak memory it reports.
    """
    reason = screen_missing()
    if reason is not None:
        return {"sizes": list(sizes), "note": reason}
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_scale_job, ((sizes, seed, planted),))


# ---------------------------------------------------------------------------
# The run


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from gradcheck.cli import _non_negative_int, _positive_float, _positive_int

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the small size, a budget of 5 s, 3 repeats at most, planted "
        "errors only for checks under 30 s, 100 networks of throughput",
    )
    parser.add_argument(
        "--sizes", help=f"comma-separated, of {', '.join(SIZES)}; or none"
    )
    parser.add_argument("--checkers", help=f"comma-separated, of {', '.join(CHECKERS)}")
    parser.add_argument(
        "--budget",
        type=_positive_float,
        default=30.0,
        help="seconds of repeats per checker",
    )
    parser.add_argument("--max-repeats", type=_positive_int, default=7)
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        help="a fixed number of repeats (overrides --budget)",
    )
    parser.add_argument(
        "--no-planted",
        action="store_true",
        help="skip the planted-error runs, --scale's too",
    )
    parser.add_argument(
        "--planted-limit",
        type=_positive_float,
        default=120.0,
        help="skip the planted-error run of a checker whose first call took "
        "longer, in seconds (default 120; the tests plant errors for every "
        "checker on a tiny network)",
    )
    parser.add_argument(
        "--throughput",
        type=_non_negative_int,
        default=400,
        help="networks for the fuzzing throughput (0 skips it)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help=f"screen a {'-'.join(map(str, SCALE_SIZES))} network too",
    )
    parser.add_argument(
        "--rounds",
        type=_non_negative_int,
        default=200,
        help="rounds in which the checkers faster than "
        f"{INTERLEAVE_BELOW_S:g} s run again side by side, one call each, "
        "for their medians (0 skips it)",
    )
    parser.add_argument("--seed", type=_non_negative_int, default=0)
    parser.add_argument("--out", default="reports", help="where bench.html goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or "small"
        args.budget = min(args.budget, 5.0)
        args.max_repeats = min(args.max_repeats, 3)
        args.throughput = min(args.throughput, 100)
        args.planted_limit = min(args.planted_limit, 30.0)
        args.rounds = min(args.rounds, 20)
    return args


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("numpy", "jax", "scipy", "torch", "hypothesis", "gradcheck"):
        # The installed distribution's version: gradcheck has no
        # __version__ of its own.
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def _at_most(p: float) -> str:
    """Write ``p`` to two significant digits, rounded up, so "at most" holds."""
    if not (math.isfinite(p) and p > 0):
        return f"{p:g}"
    unit = 10.0 ** (math.floor(math.log10(p)) - 1)
    return f"{math.ceil(p / unit) * unit:.2g}"


def _environment() -> dict[str, object]:
    env: dict[str, object] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": _versions(),
    }
    with contextlib.suppress(ImportError):
        import torch

        env["torch_threads"] = torch.get_num_threads()
    return env


def _throughput(count: int, seed: int) -> list[dict[str, object]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import throughput

    return [
        throughput.measure(count, workers, seed_=seed, strategy="seeded")
        for workers in (2, 1)
    ]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        sizes = select_sizes(args.sizes)
        names = select_checkers(args.checkers)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import jax

    jax.config.update("jax_enable_x64", True)
    from gradcheck._bench_report import (
        add_ratios,
        format_seconds,
        format_table,
        write_bench_report,
    )

    started = datetime.now(UTC)
    start = time.perf_counter()
    sections = []
    for size in sizes:
        problem = make_problem(size, SIZES[size], args.seed)
        print(
            f"\n{size}: {'-'.join(map(str, problem.sizes))}, "
            f"P = {problem.n_params:,}, batch {BATCH}, float64",
            flush=True,
        )
        rows = []
        for name in names:
            row = time_checker(
                CHECKERS[name],
                problem,
                args.budget,
                args.max_repeats,
                args.repeats,
                planted=not args.no_planted,
                planted_limit_s=args.planted_limit,
            )
            print(
                f"  {name}: first call {format_seconds(row['first_s'])}, median "
                f"{format_seconds(row['median_s'])} of {row['repeats']} "
                f"{row['note']}".rstrip(),
                flush=True,
            )
            if name in SCREEN_DIRECTIONS and row["right_passes"]:
                miss = screen_miss(problem, SCREEN_DIRECTIONS[name])
                row["miss_1pct"] = miss
                row["note"] = (
                    f"{row['note']}; " if row["note"] else ""
                ) + f"misses a 1% error with probability at most {_at_most(miss)}"
            rows.append(row)
        if args.rounds:
            rows = interleave(rows, problem, args.rounds)
            print(
                f"  side by side, {args.rounds} rounds: "
                + ", ".join(
                    f"{row['checker']} {format_seconds(row['median_s'])}"
                    for row in rows
                    if "side by side" in row["note"]
                ),
                flush=True,
            )
        rows = add_ratios(rows)
        print(format_table(rows), flush=True)
        peak = None
        if "gradcheck" in names:
            peak = full_check_peak_mb(problem)
            print(f"  full check peak allocations (tracemalloc): {peak:.1f} MiB")
        sections.append(
            {
                "name": size,
                "sizes": list(problem.sizes),
                "n_params": problem.n_params,
                "rows": rows,
                "full_check_peak_mb": peak,
            }
        )

    throughput = []
    if args.throughput:
        throughput = _throughput(args.throughput, args.seed)
        for summary in throughput:
            print("\n" + "\n".join(_throughput_lines(summary)), flush=True)

    scale = None
    if args.scale:
        scale = measure_scale(SCALE_SIZES, args.seed, planted=not args.no_planted)
        print("\n" + "\n".join(_scale_lines(scale)), flush=True)

    rows = [row for section in sections for row in section["rows"]]
    disagreements = [
        f"{row['size']} {row['checker']}"
        for row in rows
        if row["right_passes"] is False
    ]
    summary = {
        "title": "gradcheck beside other gradient checkers",
        "started": started.isoformat(timespec="seconds"),
        "duration_s": time.perf_counter() - start,
        "settings": {
            "batch": BATCH,
            "eta": ETA,
            "seed": args.seed,
            "budget_s": args.budget,
            "max_repeats": args.max_repeats,
            "repeats": args.repeats,
            "rounds": args.rounds,
            "interleave_below_s": INTERLEAVE_BELOW_S,
            "directions": DIRECTIONS,
            "plant_fraction": PLANT_FRACTION,
            "planted": not args.no_planted,
            "planted_limit_s": args.planted_limit,
            "scipy_rtol": SCIPY_RTOL,
            "fd_rtol": FD_RTOL,
            "fd_atol": FD_ATOL,
            "argv": sys.argv[1:] if argv is None else list(argv),
        },
        "environment": _environment(),
        "sizes": sections,
        "throughput": throughput,
        "scale": scale,
        "disagreements": disagreements,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    html, _ = write_bench_report(summary, args.out)
    print(f"\nreport: {html}")
    if disagreements:
        print(f"right gradient not passed by: {', '.join(disagreements)}")
        return 1
    return 0


def _scale_lines(scale: dict) -> list[str]:
    from gradcheck._bench_report import format_seconds

    head = f"scale: {'-'.join(map(str, scale['sizes']))}"
    if "n_params" not in scale:
        return [f"{head}: {scale['note']}"]
    return [
        f"{head}, P = {scale['n_params']:,}, screening with {scale['directions']}",
        f"  right gradient: {format_seconds(scale['right_s'])}, "
        f"{scale['right_verdict']}",
        f"  planted error: {format_seconds(scale['planted_s'])}, "
        f"{scale['planted_verdict']} at {scale['planted_first_wrong']}"
        if scale["planted_s"] is not None
        else "  planted error: not run",
        f"  peak memory (maxrss): {scale['maxrss_mb']:.0f} MB",
    ]


def _throughput_lines(summary: dict) -> list[str]:
    import throughput

    return throughput.format_summary(summary)


if __name__ == "__main__":
    sys.exit(main())
