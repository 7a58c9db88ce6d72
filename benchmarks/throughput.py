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


def measure(
    count: int,
    workers: int,
    max_params: int = 100,
    seed_: int = 0,
    strategy: str = "seeded",
    single_thread: bool = False,
) -> dict[str, object]:
    """Generate and check ``count`` networks in ``workers`` processes.

    The wall clock starts when every worker has compiled and stops when the
    last one is done, so it covers drawing each case through Hypothesis as
    well as checking it. Each worker is a fresh (spawned) process with its
    own JAX; XLA and BLAS use their default threads per process unless
    ``single_thread``.

    Returns:
        The settings and the measured figures: ``checked``, ``wall_s``,
        ``per_s`` (networks per second, wall), ``cpu_ms`` (processor time
        per network, all workers), ``checking_ms`` (the checks alone, per
        network per worker), ``compile_s`` (the slowest worker's one-off
        compile), ``failed`` and ``inconclusive``.
    """
    per_worker = [count // workers + (i < count % workers) for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(workers + 1)
    jobs = [
        (seed_ + i, n, max_params, single_thread, strategy, barrier)
        for i, n in enumerate(per_worker)
    ]
    with context.Pool(workers) as pool:
        pending = pool.map_async(_fuzz, jobs)
        barrier.wait()
        start = time.perf_counter()
        results = pending.get()
        wall = time.perf_counter() - start

    checked = sum(r["checked"] for r in results)
    checking = sum(r["checking_s"] for r in results)
    cpu = sum(r["cpu_s"] for r in results)
    return {
        "count": count,
        "workers": workers,
        "max_params": max_params,
        "seed": seed_,
        "strategy": strategy,
        "single_thread": single_thread,
        "checked": checked,
        "wall_s": wall,
        "per_s": checked / wall,
        "cpu_ms": 1e3 * cpu / checked,
        "checking_ms": 1e3 * checking / checked,
        "compile_s": max(r["compile_s"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "inconclusive": sum(r["inconclusive"] for r in results),
    }


def format_summary(summary: dict) -> list[str]:
    """Return the lines that describe one :func:`measure` summary."""
    workers = summary["workers"]
    threads = "single-threaded" if summary["single_thread"] else "multi-threaded"
    return [
        f"{summary['checked']} networks of at most {summary['max_params']} "
        f"parameters from {summary['strategy']} cases, {workers} worker(s), "
        f"XLA {threads}",
        f"  generated and fully checked: {summary['per_s']:.1f} networks/s (wall)",
        f"  CPU time: {summary['cpu_ms']:.2f} ms per network, so "
        f"{1e3 * workers / summary['cpu_ms']:.1f} networks/s on {workers} free cores",
        f"  checking alone: {summary['checking_ms']:.2f} ms per network per worker"
        f" ({1e3 * workers / summary['checking_ms']:.1f} networks/s on {workers})",
        f"  one-off compile per worker: {summary['compile_s']:.1f} s "
        "(not counted above)",
        f"  verdicts: {summary['failed']} failed, "
        f"{summary['inconclusive']} inconclusive",
    ]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _configure(args.single_thread)
    sys.path.insert(0, os.getcwd())
    summary = measure(
        args.count,
        args.workers,
        args.max_params,
        args.seed,
        args.strategy,
        args.single_thread,
    )
    print("\n".join(format_summary(summary)))
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
