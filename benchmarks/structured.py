# SPDX-License-Identifier: MIT
"""Time full and screened checks of real-sized sigmoid networks.

For each architecture (batch 8, float64, biases, the built-in delta
rule), prints the wall time of ``gradcheck.compare_delta_rule`` with
``method="full"`` and ``method="screen"``: the first call in the process
for that shape (which compiles the JAX autodiff function) and the median
of warm calls; the peak of numpy and Python allocations during one warm
full check (tracemalloc) and the process's peak resident set so far
(``resource.getrusage``, which includes JAX and everything before it);
and the time of a screen that finds a planted error and drills down.

    python benchmarks/structured.py
    python benchmarks/structured.py --sizes 512-1024-512-10 --skip-full
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import tracemalloc


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="64-128-128-10,128-256-256-10",
        help="comma-separated architectures, layer widths joined by '-'",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--directions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="warm calls timed")
    parser.add_argument(
        "--plant",
        default="W[1->2]",
        help="the parameter whose gradient gets one wrong entry for the "
        "drill-down timing; empty for none",
    )
    parser.add_argument(
        "--skip-full", action="store_true", help="time screens only (large networks)"
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="also time the plain path (the whole forward pass vmapped over "
        "every shifted row), once",
    )
    return parser.parse_args(argv)


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    """Return the first call's seconds, the median of warm calls, the result."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        warm.append(time.perf_counter() - start)
    return first, statistics.median(warm), result


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    sys.path.insert(0, os.getcwd())
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import gradcheck
    from gradcheck._references import compute_references

    rows = []
    for text in args.sizes.split(","):
        sizes = tuple(int(n) for n in text.split("-"))
        network = gradcheck.Network(sizes, bias=True)
        rng = np.random.default_rng(0)
        params = gradcheck.init_params(network, rng)
        x = rng.normal(size=(args.batch, sizes[0]))
        d = rng.uniform(size=(args.batch, sizes[-1]))
        case = (network, params, x, d, 0.1)
        row = {"network": text, "P": network.n_params}

        def screen(derivation=gradcheck.delta_rule, case=case):
            return gradcheck.compare_delta_rule(
                *case, derivation, method="screen", directions=args.directions
            )

        first, warm, result = _timed(screen, args.repeats * 4)
        row |= {"screen first s": first, "screen warm ms": 1e3 * warm}
        row["verdict"] = str(result.verdict)
        bands = [
            facts["relative_band"]
            for facts in result.details["screen"]["quantities"].values()
            if facts["screened"]
        ]
        row["worst rel band"] = max(bands)

        if not args.skip_full:
            first, warm, result = _timed(
                lambda case=case: gradcheck.compare_delta_rule(*case), args.repeats
            )
            row |= {"full first s": first, "full warm s": warm}
            assert str(result.verdict) == "pass", result
            tracemalloc.start()
            gradcheck.compare_delta_rule(*case)
            row["full peak MiB (tracemalloc)"] = (
                tracemalloc.get_traced_memory()[1] / 2**20
            )
            tracemalloc.stop()
            row["peak RSS MiB (so far)"] = _rss_mib()
        if args.plain:
            start = time.perf_counter()
            compute_references(*case, path="plain")
            row["plain references s"] = time.perf_counter() - start

        if args.plant:
            plant = args.plant

            def planted(network, params, x, d, eta, plant=plant):
                q = gradcheck.delta_rule(network, params, x, d, eta)
                g = q[f"dE/d{plant}"].copy()
                g.flat[g.size // 2] += 1e-3 * np.abs(g).max()
                q[f"dE/d{plant}"] = g
                return q

            start = time.perf_counter()
            result = screen(planted)
            row[f"screen+drill {plant} s"] = time.perf_counter() - start
            row["found"] = f"{result.first_wrong}"
            row["peak RSS MiB (so far)"] = _rss_mib()
        rows.append(row)

    columns = list(dict.fromkeys(key for row in rows for key in row))
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(_format(row.get(key, "")) for key in columns))
    return 0


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
