# SPDX-License-Identifier: MIT
"""Time repeated general checks of one loss, with and without the compile cache.

Usage: python benchmarks/cache_timing.py [--calls N]

Checks a small tanh MLP's hand-written gradient at N new points, first
clearing the cache of compiled references before every call (as every
call compiled before the cache), then keeping it. Prints seconds per call
for each and their ratio, measured in one run.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from gradcheck import Verdict, _gradient, compare_gradient


def loss(params, x, t):
    h = jnp.tanh(x @ params["W1"] + params["b1"])
    return 0.5 * jnp.sum((h @ params["W2"] + params["b2"] - t) ** 2)


def grad(params, x, t):
    h = np.tanh(x @ params["W1"] + params["b1"])
    r = h @ params["W2"] + params["b2"] - t
    dh = (r @ params["W2"].T) * (1 - h**2)
    return {"W1": x.T @ dh, "b1": dh.sum(0), "W2": h.T @ r, "b2": r.sum(0)}


def _points(calls: int):
    rng = np.random.default_rng(0)
    for _ in range(calls):
        params = {
            "W1": rng.normal(size=(4, 8)),
            "b1": rng.normal(size=8),
            "W2": rng.normal(size=(8, 3)),
            "b2": rng.normal(size=3),
        }
        yield params, rng.normal(size=(16, 4)), rng.normal(size=(16, 3))


def _time(calls: int, clear: bool) -> float:
    start = time.perf_counter()
    for params, x, t in _points(calls):
        if clear:
            _gradient._compiled.cache_clear()
            _gradient._TRACE_ERRORS.clear()
        result = compare_gradient(loss, grad, params, x, t)
        assert result.verdict is Verdict.PASS, result
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    compare_gradient(loss, grad, *next(_points(1)))  # warm JAX up once
    uncached = _time(args.calls, clear=True)
    cached = _time(args.calls, clear=False)
    print(f"calls per mode: {args.calls}")
    print(f"without cache: {uncached:.3f} s per call")
    print(f"with cache:    {cached:.3f} s per call")
    print(f"speed-up:      {uncached / cached:.1f}x")


if __name__ == "__main__":
    main()
