# SPDX-License-Identifier: MIT
"""Calibration: how often right derivations fail, and how small a mistake is found.

Two measurements, on generated cases whose derivations are right:

* the false alarm rate per condition: the verdicts (pass, fail,
  inconclusive, not-differentiable) of right derivations, with why each
  non-pass verdict came about;
* the detection threshold: the smallest relative error ``r``, injected
  into the largest entry of a right gradient or into the whole gradient,
  that the check still calls a failure, found by bisection on ``log r``.

Every case is drawn from a numpy generator seeded per condition and case
number, so a run is repeatable and a larger count extends a smaller one.
Delta-rule cases draw their architecture from a small fixed pool, so the
JAX references compile once per architecture, not once per case.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from gradcheck._check import compare_delta_rule
from gradcheck._compare import Verdict
from gradcheck._delta_rule import delta_rule
from gradcheck._gradient import compare_gradient
from gradcheck._networks import Network
from gradcheck._result import CheckResult

__all__ = ["CONDITIONS", "run_calibration"]

logger = logging.getLogger(__name__)

BF16 = ml_dtypes.bfloat16

# Architectures the delta-rule conditions draw from.
ARCHITECTURES = (
    Network((2, 3, 1), bias=True),
    Network((3, 4, 2), skips=((0, 2),), bias=True),
    Network((2, 3, 3, 1), skips=((0, 3), (1, 3)), bias=False),
    Network((4, 2, 3), bias=True),
)
BATCH = 4

# Non-pass verdicts explained in full per condition; the rest are counted.
MAX_EXPLAINED = 5

# Bisection on log10 r between these bounds, this many halvings.
R_LOW, R_HIGH, BISECTIONS = 1e-16, 1.0, 14


# ---------------------------------------------------------------------------
# Cases


def _draw_delta(
    rng: np.random.Generator, scale_range: tuple[float, float]
) -> tuple[Network, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    network = ARCHITECTURES[rng.integers(len(ARCHITECTURES))]
    scale = 10.0 ** rng.uniform(*np.log10(scale_range))
    params = {
        name: rng.normal(size=shape) * scale
        for name, shape in network.param_shapes().items()
    }
    x = rng.normal(size=(BATCH, network.sizes[0]))
    d = rng.uniform(size=(BATCH, network.sizes[-1]))
    return network, params, x, d


def _float32_delta_rule(network, params, x, d, eta):
    f32 = np.float32
    params = {name: value.astype(f32) for name, value in params.items()}
    return delta_rule(network, params, x.astype(f32), d.astype(f32), f32(eta))


def mlp_loss(params, x, t):
    """A tanh MLP with squared error, in jax.numpy."""
    h = jnp.tanh(x @ params["W1"] + params["b1"])
    return 0.5 * jnp.sum((h @ params["W2"] - t) ** 2)


def mlp_grad(params, x, t):
    """Its gradient by hand, in the dtype of the inputs."""
    p = {k: jnp.asarray(v) for k, v in params.items()}
    x, t = jnp.asarray(x), jnp.asarray(t)
    h = jnp.tanh(x @ p["W1"] + p["b1"])
    r = h @ p["W2"] - t
    dh = (r @ p["W2"].T) * (1 - h**2)
    return {"W1": x.T @ dh, "b1": dh.sum(0), "W2": h.T @ r}


def _draw_mlp(rng: np.random.Generator, scale: float = 1.0, dtype=np.float64):
    params = {
        "W1": rng.normal(size=(3, 4)) * scale,
        "b1": rng.normal(size=4) * scale,
        "W2": rng.normal(size=(4, 2)) * scale,
    }
    x, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    cast = {k: v.astype(dtype) for k, v in params.items()}
    return cast, x.astype(dtype), t.astype(dtype)


def quadratic_loss(params, x, t):
    """Least squares, ``0.5 * sum((x @ W + b - t)^2)``."""
    r = x @ params["W"] + params["b"] - t
    return 0.5 * jnp.sum(r**2)


def quadratic_grad(params, x, t):
    """Its gradient by hand."""
    r = x @ params["W"] + params["b"] - t
    return {"W": x.T @ r, "b": r.sum(axis=0)}


def kink_loss(params, x):
    """ReLU, abs and max terms whose kinks the cases put at or near params."""
    w, v, u = params["relu"], params["abs"], params["max"]
    return (
        jnp.sum(jax.nn.relu(w) * x[:3])
        + jnp.sum(jnp.abs(v) * x[3:6])
        + jnp.maximum(u[0], u[1]) * x[6]
        + 0.5 * jnp.sum(w**2)
    )


def kink_grad(params, x):
    """A right (sub)gradient: ReLU'(0) = 0, sign(0) = 0, the first of a tie."""
    w, v, u = params["relu"], params["abs"], params["max"]
    du = np.zeros(2)
    du[0 if u[0] >= u[1] else 1] = x[6]
    return {
        "relu": (w > 0) * x[:3] + w,
        "abs": np.sign(v) * x[3:6],
        "max": du,
    }


def _draw_kinks(rng: np.random.Generator, at: bool):
    # At the kink: exactly 0 (or an exact tie). Near it: 10^-12 to 10^-4
    # away, inside or outside the finite-difference step.
    def offset(n):
        if at:
            return np.zeros(n)
        return rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(-12, -4, n)

    base = rng.uniform(-1, 1)
    params = {
        "relu": offset(3),
        "abs": offset(3),
        "max": np.array([base + offset(1)[0], base]),
    }
    x = rng.choice([-1.0, 1.0], 7) * rng.uniform(0.5, 2.0, 7)
    return params, x


@dataclass(frozen=True)
class Condition:
    """One condition: how to draw a case and check its right derivation."""

    name: str
    description: str
    check: Callable[[np.random.Generator], CheckResult]


def _delta(scale_range, derivation=delta_rule):
    def check(rng):
        network, params, x, d = _draw_delta(rng, scale_range)
        return compare_delta_rule(network, params, x, d, 0.1, derivation)

    return check


def _mlp(scale=1.0, dtype=np.float64):
    def check(rng):
        params, x, t = _draw_mlp(rng, scale, dtype)
        return compare_gradient(mlp_loss, mlp_grad, params, x, t)

    return check


def _large(rng):
    params = {"W": rng.normal(size=(3, 2)) * 1e4, "b": rng.normal(size=2) * 1e4}
    x, t = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    return compare_gradient(quadratic_loss, quadratic_grad, params, x, t)


def _kinks(at: bool):
    def check(rng):
        params, x = _draw_kinks(rng, at)
        return compare_gradient(kink_loss, kink_grad, params, x)

    return check


CONDITIONS = (
    Condition(
        "delta-float64", "delta rule, float64, weights 0.1 to 3", _delta((0.1, 3))
    ),
    Condition(
        "delta-float32",
        "delta rule computed in float32, weights 0.1 to 30",
        _delta((0.1, 30), _float32_delta_rule),
    ),
    Condition(
        "delta-saturated", "delta rule, float64, weights 10 to 40", _delta((10, 40))
    ),
    Condition("large-magnitude", "least squares, params ~1e4, loss ~1e8", _large),
    Condition("kinks-at", "ReLU, abs and max exactly at their kinks", _kinks(True)),
    Condition(
        "kinks-near", "ReLU, abs and max 1e-12 to 1e-4 from kinks", _kinks(False)
    ),
    Condition("mlp-float32", "tanh MLP gradient in float32", _mlp(dtype=np.float32)),
    Condition("mlp-bfloat16", "tanh MLP gradient in bfloat16", _mlp(dtype=BF16)),
)


# ---------------------------------------------------------------------------
# False alarms


def _explain(result: CheckResult) -> str:
    """Say in one line why a check did not pass."""
    parts = [str(result.verdict)]
    if result.first_wrong:
        parts.append(f"first wrong {result.first_wrong}")
    for q in result.quantities:
        if q.verdict is Verdict.PASS:
            continue
        text = f"{q.name}: {q.verdict}"
        if q.note:
            text += f" ({q.note})"
        if q.worst:
            w = q.worst[0]
            text += (
                f"; worst {w.name} analytic {w.analytic:.6g} numeric "
                f"{w.numeric:.6g} autodiff {w.autodiff:.6g} band {w.band:.2g}"
            )
        parts.append(text)
        break
    return "; ".join(parts)


def _rng(seed: int, condition: int, case: int) -> np.random.Generator:
    return np.random.default_rng([seed, condition, case])


def _false_alarms(
    count: int, seed: int, progress: Callable[[str, int], None] | None
) -> dict[str, object]:
    out: dict[str, object] = {}
    for c, condition in enumerate(CONDITIONS):
        counts = {str(v): 0 for v in Verdict}
        explained: list[str] = []
        start = time.perf_counter()
        for k in range(count):
            result = condition.check(_rng(seed, c, k))
            counts[str(result.verdict)] += 1
            if result.verdict is not Verdict.PASS and len(explained) < MAX_EXPLAINED:
                explained.append(f"case {k}: {_explain(result)}")
            if progress is not None:
                progress(condition.name, k + 1)
        out[condition.name] = {
            "description": condition.description,
            "cases": count,
            "counts": counts,
            "fail_rate": counts["fail"] / count if count else math.nan,
            "explained": explained,
            "seconds": round(time.perf_counter() - start, 2),
        }
    return out


# ---------------------------------------------------------------------------
# Detection thresholds


def _injected(grad: Callable, r: float, whole: bool) -> Callable:
    """Return ``grad`` with relative error ``r`` in its largest entry, or all."""

    def wrong(*args):
        g = grad(*args)
        leaves, treedef = jax.tree_util.tree_flatten(g)
        leaves = [np.array(a, dtype=np.asarray(a).dtype) for a in leaves]
        if whole:
            leaves = [(a * (1 + r)).astype(a.dtype) for a in leaves]
        else:
            k = int(np.argmax([np.abs(a.astype(np.float64)).max() for a in leaves]))
            a = leaves[k]
            i = int(np.argmax(np.abs(a.astype(np.float64))))
            a.flat[i] = a.flat[i] * a.dtype.type(1 + r)
        return jax.tree_util.tree_unflatten(treedef, leaves)

    return wrong


def _smallest_detected(is_detected: Callable[[float], bool]) -> float:
    """Bisect on log10 r for the smallest r called a failure (inf if none)."""
    if not is_detected(R_HIGH):
        return math.inf
    if is_detected(R_LOW):
        return R_LOW
    lo, hi = math.log10(R_LOW), math.log10(R_HIGH)
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        if is_detected(10.0**mid):
            hi = mid
        else:
            lo = mid
    return 10.0**hi


def _delta_detected(dtype):
    def setup(rng):
        network, params, x, d = _draw_delta(rng, (0.3, 3))

        def base(network, params, x, d, eta):
            if dtype is np.float64:
                return delta_rule(network, params, x, d, eta)
            return _float32_delta_rule(network, params, x, d, eta)

        def detected(r, whole):
            wrong = _injected_delta(base, r, whole)
            result = compare_delta_rule(network, params, x, d, 0.1, wrong)
            return result.verdict is Verdict.FAIL

        return detected

    return setup


def _injected_delta(base, r, whole):
    def wrong(network, params, x, d, eta):
        out = base(network, params, x, d, eta)
        names = [n for n in out if n.startswith("dE/d")]
        if whole:
            return out | {n: (out[n] * (1 + r)).astype(out[n].dtype) for n in names}
        name = max(names, key=lambda n: float(np.abs(out[n]).max()))
        value = np.array(out[name])
        i = int(np.argmax(np.abs(value)))
        value.flat[i] = value.flat[i] * value.dtype.type(1 + r)
        return out | {name: value}

    return wrong


def _mlp_detected(dtype):
    def setup(rng):
        params, x, t = _draw_mlp(rng, 1.0, dtype)

        def detected(r, whole):
            wrong = _injected(mlp_grad, r, whole)
            result = compare_gradient(mlp_loss, wrong, params, x, t)
            return result.verdict is Verdict.FAIL

        return detected

    return setup


THRESHOLDS = (
    ("delta-float64", _delta_detected(np.float64)),
    ("delta-float32", _delta_detected(np.float32)),
    ("mlp-float64", _mlp_detected(np.float64)),
    ("mlp-float32", _mlp_detected(np.float32)),
)


def _thresholds(
    count: int, seed: int, progress: Callable[[str, int], None] | None
) -> dict[str, object]:
    out: dict[str, object] = {}
    for t, (name, setup) in enumerate(THRESHOLDS):
        found = {"one-entry": [], "whole-gradient": []}
        for k in range(count):
            detected = setup(_rng(seed, 100 + t, k))
            for mode, whole in (("one-entry", False), ("whole-gradient", True)):
                found[mode].append(
                    _smallest_detected(lambda r, w=whole, f=detected: f(r, w))
                )
            if progress is not None:
                progress(f"threshold {name}", k + 1)
        out[name] = {
            mode: {
                "cases": len(values),
                "median": float(np.median(values)) if values else math.nan,
                "min": float(np.min(values)) if values else math.nan,
                "max": float(np.max(values)) if values else math.nan,
            }
            for mode, values in found.items()
        }
    return out


def run_calibration(
    count: int,
    threshold_count: int,
    seed: int = 0,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, object]:
    """Measure false alarms and detection thresholds.

    Args:
        count: right cases per condition for the false alarm rates.
        threshold_count: cases per setting for the detection thresholds.
        seed: seeds every case.
        progress: called as ``progress(what, done)`` after each case.

    Returns:
        A JSON-ready dict: ``false_alarms`` per condition (counts per
        verdict, the fail rate, explanations of the first few non-pass
        verdicts, seconds), ``thresholds`` per setting (the median, least
        and largest detected relative error, one entry and whole
        gradient), and the settings.
    """
    start = time.perf_counter()
    with jax.enable_x64(True):
        false_alarms = _false_alarms(count, seed, progress)
        thresholds = _thresholds(threshold_count, seed, progress)
    return {
        "settings": {
            "count": count,
            "threshold_count": threshold_count,
            "seed": seed,
            "bisection": {"low": R_LOW, "high": R_HIGH, "steps": BISECTIONS},
        },
        "false_alarms": false_alarms,
        "thresholds": thresholds,
        "total_cases": count * len(CONDITIONS),
        "duration_s": round(time.perf_counter() - start, 1),
    }


def iter_rows(calibration: dict) -> Iterator[tuple[str, ...]]:
    """Yield the false-alarm table as rows of strings, header first."""
    yield ("condition", "cases", "pass", "fail", "inconcl.", "not-diff.", "fail rate")
    for name, row in calibration["false_alarms"].items():
        c = row["counts"]
        yield (
            name,
            str(row["cases"]),
            str(c["pass"]),
            str(c["fail"]),
            str(c["inconclusive"]),
            str(c["not-differentiable"]),
            f"{row['fail_rate']:.3%}",
        )
