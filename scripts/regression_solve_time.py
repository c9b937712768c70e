"""Time kernel regression with an N×N kernel (K ⊗ I_O, an N×N Cholesky) against the full NO×NO eNTK.

Usage: python scripts/regression_solve_time.py [--n 500] [--outputs 10] [--m 100] [--repeats 5] [--finite-t]

Both go through `nt_pntk.regression.predict` (float64, ridge relative to the
mean diagonal), on random positive definite kernels of the eNTK's shapes: an
(N, N) kernel, and an (N, N, O, O) eNTK built from random Jacobians (plus the
ridge). Prints the
median wall time of each over --repeats runs and their ratio (theory: ~O³ for
the factorization, less overall since both also form the predictions).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from nt_pntk import regression


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, BLAS threads)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="training inputs N (default: 500)")
    parser.add_argument("--outputs", type=int, default=10, help="outputs O (default: 10)")
    parser.add_argument("--m", type=int, default=100, help="test inputs M (default: 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; median (default: 5)")
    parser.add_argument("--finite-t", action="store_true", help="also time t=1 (eigendecompositions)")
    args = parser.parse_args()

    n, outputs, m = args.n, args.outputs, args.m
    rng = np.random.default_rng(0)
    features = 256  # a low-rank eNTK; the ridge makes the systems positive definite
    jac = rng.standard_normal((n + m, outputs, features)) / np.sqrt(features)
    entk_all = np.einsum("aoq,bpq->abop", jac, jac)
    entk, entk_test = entk_all[:n, :n], entk_all[n:, :n]
    k = np.einsum("aboo->ab", entk) / outputs  # an N×N kernel of the same data (NT's trace)
    k_test = np.einsum("aboo->ab", entk_test) / outputs
    y = np.eye(outputs)[rng.integers(0, outputs, n)]
    ridge = 1e-3

    times = [None, 1.0] if args.finite_t else [None]
    print(f"N={n}, O={outputs}, M={m}: median of {args.repeats} runs of regression.predict (ridge {ridge:g})")
    for t in times:
        kron_s = median_time(lambda t=t: regression.predict(k, y, k_test, ridge=ridge, t=t), args.repeats)
        full_s = median_time(
            lambda t=t: regression.predict(entk, y, entk_test, ridge=ridge, t=t), args.repeats
        )
        print(
            f"t={t}: N×N (K ⊗ I_O) {kron_s * 1e3:.2f} ms, NO×NO eNTK {full_s * 1e3:.1f} ms, "
            f"ratio {full_s / kron_s:.0f}x"
        )


if __name__ == "__main__":
    main()
