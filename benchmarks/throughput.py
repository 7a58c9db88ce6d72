# SPDX-License-Identifier: MIT
"""Measure fuzzing throughput: generated networks fully checked per second.

Each worker process runs its own Hypothesis stream of delta-rule cases
(``gradcheck.strategies.delta_rule_cases``, different seeds per worker),
keeps those with at most ``--max-params`` parameters, and checks each with
``compare_delta_rule``: every named quantity (dE/dy, dy/ds, theta, dE/dW,
dE/db, Delta W, Delta b) against finite differences and JAX autodiff, with
the measured rounding allowance. Compilation happens once per worker
before the clock starts and is reported on its own.

The same run then times the references of a few fresh architectures on the
plain path (functions compiled for each shape, as every new architecture
needed before the shared padded function) and on the padded path, in one
process, so that their ratio is measured under the same load.

Usage::

    python benchmarks/throughput.py --count 300 --workers 2
    python benchmarks/throughput.py --single-thread   # XLA on one thread

Timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import time


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="networks in all")
    parser.add_argument("--max-params", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--strategy",
        choices=["seeded", "drawn"],
        default="seeded",
        help="seeded_delta_rule_cases (arrays from a drawn seed) or "
        "delta_rule_cases (every entry drawn by Hypothesis)",
    )
    parser.add_argument(
        "--plain", type=int, default=4, help="fresh architectures on the plain path"
    )
    parser.add_argument(
        "--single-thread",
        action="store_true",
        help="run XLA and numpy on one thread per process",
    )
    return parser.parse_args(argv)


def _configure(single_thread: bool) -> None:
    """Set thread counts before JAX and numpy are imported."""
    if single_thread:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"


def _warm_up(max_params: int) -> float:
    """Compile the padded function for every row count up to max_params."""
    import numpy as np

    from gradcheck import Network, compare_delta_rule, init_params

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for width in (1, 2, 4, 6, 8):
        network = Network((width, width, 1), bias=True)
        if network.n_params > max_params:
            break
        x, d = rng.normal(size=(3, width)), rng.uniform(size=(3, 1))
        compare_delta_rule(network, init_params(network, rng), x, d)
    return time.perf_counter() - start


def _fuzz(args: tuple[int, int, int, bool, str, object]) -> dict[str, float]:
    """Generate and check ``count`` cases in this process; return timings."""
    seed_, count, max_params, single_thread, strategy, barrier = args
    _configure(single_thread)
    from hypothesis import HealthCheck, Phase, given, seed, settings

    from gradcheck import Verdict, compare_delta_rule
    from gradcheck import strategies as gst

    compile_s = _warm_up(max_params)
    if barrier is not None:
        barrier.wait()
    verdicts: dict[str, int] = {}
    checking = 0.0
    checked = 0

    class Enough(BaseException):
        pass

    if strategy == "seeded":
        cases = gst.seeded_delta_rule_cases
    else:
        cases = gst.delta_rule_cases

    @seed(seed_)
    @settings(
        max_examples=50 * count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def fuzz(case):
        nonlocal checking, checked
        if case.network.n_params > max_params:
            return
        start = time.perf_counter()
        result = compare_delta_rule(*case.args)
        checking += time.perf_counter() - start
        verdicts[str(result.verdict)] = verdicts.get(str(result.verdict), 0) + 1
        checked += 1
        if checked >= count:
            raise Enough

    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.suppress(Enough):
        fuzz()
    total = time.perf_counter() - start
    return {
        "checked": checked,
        "total_s": total,
        "cpu_s": time.process_time() - cpu,
        "checking_s": checking,
        "compile_s": compile_s,
        "failed": verdicts.get(str(Verdict.FAIL), 0),
        "inconclusive": verdicts.get(str(Verdict.INCONCLUSIVE), 0),
    }


def _compare_paths(n: int, seed_: int) -> tuple[float, float]:
    """Return seconds per fresh architecture on the plain and padded paths."""
    import numpy as np

    from gradcheck import Network, init_params
    from gradcheck._references import compute_references

    rng = np.random.default_rng(seed_ + 1000)
    networks: list[Network] = []
    while len(networks) < n:
        i = len(networks)
        network = Network(
            tuple(int(w) for w in rng.integers(1, 6, size=3 + i % 2)),
            skips=((0, 2),) if i % 2 else (),
            bias=bool(i % 3),
        )
        if network not in networks:
            networks.append(network)
    cases = []
    for i, network in enumerate(networks):
        batch = 1 + i % 4
        x = rng.normal(size=(batch, network.sizes[0]))
        d = rng.uniform(size=(batch, network.sizes[-1]))
        cases.append((network, init_params(network, rng), x, d, 0.1))
    _warm_up(100)
    timings = []
    for padded in (False, True):
        start = time.perf_counter()
        for case in cases:
            compute_references(*case, padded=padded)
        timings.append((time.perf_counter() - start) / n)
    return timings[0], timings[1]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _configure(args.single_thread)
    sys.path.insert(0, os.getcwd())
    per_worker = [
        args.count // args.workers + (i < args.count % args.workers)
        for i in range(args.workers)
    ]
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(args.workers + 1)
    with context.Pool(args.workers) as pool:
        pending = pool.map_async(
            _fuzz,
            [
                (
                    args.seed + i,
                    n,
                    args.max_params,
                    args.single_thread,
                    args.strategy,
                    barrier,
                )
                for i, n in enumerate(per_worker)
            ],
        )
        barrier.wait()
        start = time.perf_counter()
        results = pending.get()
        wall = time.perf_counter() - start

    checked = sum(r["checked"] for r in results)
    checking = sum(r["checking_s"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
    print(
        f"{checked} networks of at most {args.max_params} parameters from "
        f"{args.strategy} cases, {args.workers} worker(s), XLA "
        f"{'single-threaded' if args.single_thread else 'multi-threaded'}"
    )
    print(f"  generated and fully checked: {checked / wall:.1f} networks/s (wall)")
    print(
        f"  CPU time: {1e3 * cpu / checked:.2f} ms per network, so "
        f"{args.workers * checked / cpu:.1f} networks/s on {args.workers} free cores"
    )
    print(
        f"  checking alone: {1e3 * checking / checked:.2f} ms per network per worker"
        f" ({checked / checking * args.workers:.1f} networks/s on {args.workers})"
    )
    print(
        f"  one-off compile per worker: "
        f"{max(r['compile_s'] for r in results):.1f} s (not counted above)"
    )
    print(
        f"  verdicts: {sum(r['failed'] for r in results)} failed, "
        f"{sum(r['inconclusive'] for r in results)} inconclusive"
    )
    if args.plain:
        plain, padded = _compare_paths(args.plain, args.seed)
        print(
            f"  references per fresh architecture: plain path {1e3 * plain:.0f} ms "
            f"(compiles each shape), padded path {1e3 * padded:.1f} ms, "
            f"ratio {plain / padded:.0f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
