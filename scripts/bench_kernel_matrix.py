"""Time and memory of `nt_pntk.tiled.kernel_matrix` against `nt.batch` and the Jacobian-contraction floor.

Usage: python scripts/bench_kernel_matrix.py [--n 20000] [--width 128] [--depth 3]
       [--budgets 1GiB 6GiB] [--rss-ns 5000 10000] [--small-n 4000] [--batch-size 500]
       [--repeats 2] [--json results.json]

Everything is the pNTK (`nt_pntk.empirical_pntk_fn(apply_fn, vmap_axes=0)`,
Jacobian contraction) of the zoo FC network (``--depth`` hidden layers of
``--width``, 10 outputs) at init, on N digits (8×8×1; above 1,797 the digits are
repeated with random one-pixel shifts and N(0, 0.05²) noise, see
``nt_pntk._kernel_cmd.digits``). Each measurement runs in its own process
(peak RSS = that process's ``ru_maxrss``; "over baseline" subtracts the RSS
after imports, data and parameters):

1. ours: `kernel_matrix(..., out=<tmp>.npy, memory_budget=B)` at N for each
   budget B, and at the ``--rss-ns`` for the first budget (memory flat in N);
2. the floor: N per-example gradients plus the Gram product of the upper
   triangle, N(N+1)/2 entries, from rates measured on 1024-example blocks
   (the same vmapped-gradient and Gram programs, warm, best of 3), measured in a
   process of its own before and after each run of ours (the CPU is shared, so
   rates drift: the mean of the two is used). Each time is also given as
   process CPU time (user + system, all threads), which the load of other
   processes on a shared machine changes far less than wall time;
3. side by side at ``--small-n`` (N divisible by ``--batch-size``): ours
   against ``nt.batch(pntk_fn, batch_size, store_on_device=False)`` (which
   computes every tile, both triangles, and each tile's two Jacobians),
   alternating, ``--repeats`` times; nt.batch at N is that time extrapolated as
   N² (labelled so: the Gram work dominates).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 2.0**20


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--budgets", nargs="+", default=["1GiB", "6GiB"])
    parser.add_argument("--rss-ns", type=int, nargs="*", default=[5000, 10000])
    parser.add_argument("--small-n", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="save all measurements here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    if args.small_n % args.batch_size:
        raise SystemExit("--small-n must be divisible by --batch-size (nt.batch needs it)")

    net = dict(width=args.width, depth=args.depth)
    results: dict = {"args": {k: v for k, v in vars(args).items() if k not in ("child", "json")}}
    print(f"FC width {args.width}, depth {args.depth}, 10 outputs; pNTK; {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-kernel-matrix-") as tmp:

        def ours(n: int, budget: str) -> dict:
            path = Path(tmp) / f"k{n}.npy"
            before = spawn(dict(kind="floor", n=n, **net))
            row = spawn(dict(kind="ours", n=n, budget=budget, out=str(path), **net))
            after = spawn(dict(kind="floor", n=n, **net))
            for suffix in ("", ".tiles"):
                target = Path(str(path) + suffix)
                if target.is_dir():
                    import shutil

                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            floor = (before["floor_s"] + after["floor_s"]) / 2
            floor_cpu = (before["floor_cpu_s"] + after["floor_cpu_s"]) / 2
            row.update(floor_before_s=before["floor_s"], floor_after_s=after["floor_s"], floor_s=floor)
            row.update(floor_cpu_s=floor_cpu)
            row["fraction_of_floor"] = floor / row["time_s"]
            row["fraction_of_floor_cpu"] = floor_cpu / row["cpu_s"]
            report(row)
            return row

        # Side by side at small N.
        side = []
        for _ in range(args.repeats):
            spec = dict(kind="ours", n=args.small_n, budget=args.budgets[0], out=None, **net)
            side.append(("ours", spawn(spec)))
            report(side[-1][1])
            spec = dict(kind="ntbatch", n=args.small_n, batch=args.batch_size, **net)
            side.append(("nt.batch", spawn(spec)))
            report(side[-1][1])
        best = {name: min(r["time_s"] for k, r in side if k == name) for name in ("ours", "nt.batch")}
        best_cpu = {name: min(r["cpu_s"] for k, r in side if k == name) for name in ("ours", "nt.batch")}
        results["side_by_side"] = [dict(r, who=k) for k, r in side]
        speedup, speedup_cpu = best["nt.batch"] / best["ours"], best_cpu["nt.batch"] / best_cpu["ours"]
        print(
            f"\nN={args.small_n} side by side (best of {args.repeats}): ours {best['ours']:.1f} s "
            f"({best_cpu['ours']:.1f} CPU s), nt.batch (batch {args.batch_size}) {best['nt.batch']:.1f} s "
            f"({best_cpu['nt.batch']:.1f} CPU s): ours {speedup:.2f}x faster "
            f"({speedup_cpu:.2f}x in CPU time)",
            flush=True,
        )
        results["speedup_small_n"] = speedup
        results["speedup_small_n_cpu"] = speedup_cpu

        runs = [ours(args.n, budget) for budget in args.budgets]
        runs += [ours(n, args.budgets[0]) for n in args.rss_ns]
        results["runs"] = runs
        extrapolated = best["nt.batch"] * (args.n / args.small_n) ** 2
        extrapolated_cpu = best_cpu["nt.batch"] * (args.n / args.small_n) ** 2
        results["nt_batch_extrapolated_s"] = extrapolated
        results["nt_batch_extrapolated_cpu_s"] = extrapolated_cpu
        print(f"\nSummary (N={args.n}):")
        for r in runs:
            if r["n"] != args.n:
                continue
            print(
                f"  ours, budget {r['budget']}: {r['time_s']:.0f} s ({r['cpu_s']:.0f} CPU s); floor "
                f"{r['floor_s']:.0f} s ({r['floor_cpu_s']:.0f} CPU s): {r['fraction_of_floor']:.2f} of the "
                f"floor ({r['fraction_of_floor_cpu']:.2f} in CPU time); {extrapolated / r['time_s']:.2f}x "
                f"faster than nt.batch extrapolated from N={args.small_n} ({extrapolated:.0f} s; "
                f"{extrapolated_cpu / r['cpu_s']:.2f}x in CPU time); peak RSS {r['peak_rss_mib']:.0f} MiB "
                f"({r['rss_over_baseline_mib']:.0f} over baseline)"
            )
        print("  peak RSS over baseline of ours, budget", args.budgets[0], "by N:")
        for r in sorted((r for r in runs if r["budget"] == args.budgets[0]), key=lambda r: r["n"]):
            print(f"    N={r['n']}: {r['rss_over_baseline_mib']:.0f} MiB (peak {r['peak_rss_mib']:.0f} MiB)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"saved {args.json}")
    return 0


def report(row: dict) -> None:
    keys = [k for k in row if k not in ("plan",)]
    print("  " + ", ".join(f"{k}={_fmt(row[k])}" for k in keys), flush=True)
    if "plan" in row:
        print(f"    plan: {row['plan']}", flush=True)


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else v


def spawn(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def current_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def setup(spec: dict):
    import jax

    import nt_pntk
    from nt_pntk.cli import kernel as _kernel_cmd
    from nt_pntk.experiments import models

    model = models.get_model("fc", width=spec["width"], outputs=10, depth=spec["depth"])
    x = _kernel_cmd.digits(spec["n"], seed=0)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, *x.shape[1:]))
    return model, x, params, nt_pntk.empirical_pntk_fn(model.apply_fn, vmap_axes=0)


def child(spec: dict) -> dict:
    _, x, params, pntk_fn = setup(spec)
    baseline = current_rss_mib()
    row = {"kind": spec["kind"], "n": spec["n"]}
    if spec["kind"] == "floor":
        (row["floor_s"], row["floor_cpu_s"], row["jac_s_per_example"], row["gram_s_per_entry"]) = floor(
            pntk_fn, x, params, spec["n"]
        )
        return row
    start, cpu_start = time.perf_counter(), time.process_time()
    if spec["kind"] == "ours":
        from nt_pntk._src.tiled import compute
        from nt_pntk.tiled import kernel_matrix

        plans = []
        run = compute.run_features

        def spy(programs, plan, *a, **k):
            plans.append(plan)
            return run(programs, plan, *a, **k)

        compute.run_features = spy
        out = spec["out"]
        k = kernel_matrix(pntk_fn, x, None, params, out=out, memory_budget=spec["budget"], progress=False)
        row["budget"] = spec["budget"]
        row["output"] = "npy" if out else "memory"
        p = plans[0]
        row["plan"] = dict(
            tile=p.tile, rows_resident=p.rows_resident, blocks=p.blocks1, estimate_mib=p.estimate / MIB
        )
    else:
        import neural_tangents as nt
        import numpy as np

        batched = nt.batch(pntk_fn, batch_size=spec["batch"], store_on_device=False)
        k = np.asarray(batched(x, None, params))
        row["batch"] = spec["batch"]
    row["time_s"] = time.perf_counter() - start
    row["cpu_s"] = time.process_time() - cpu_start
    row["shape"] = list(k.shape)
    row["baseline_rss_mib"] = baseline
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["rss_over_baseline_mib"] = row["peak_rss_mib"] - baseline
    return row


def floor(pntk_fn, x, params, n: int, block: int = 1024, repeats: int = 3) -> tuple[float, ...]:
    """Wall and CPU seconds for n per-example gradients plus n(n+1)/2 Gram entries, from warm 1024-blocks.

    Returns (wall, cpu, wall per example's gradients, wall per Gram entry).
    """
    import jax
    import numpy as np

    from nt_pntk._src.tiled import compute

    features = pntk_fn.features_fn()
    jac = jax.jit(lambda p, xb: list(features(xb, p)))
    gram = jax.jit(compute.gram)
    xa = jax.device_put(np.asarray(x[:block]))
    xb = jax.device_put(np.asarray(x[block : 2 * block] if len(x) >= 2 * block else x[:block]))
    ja, jb = jax.block_until_ready(jac(params, xa)), jax.block_until_ready(jac(params, xb))
    jax.block_until_ready(gram(ja, jb))

    def best(f):
        walls, cpus = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(f())
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        return min(walls), min(cpus)

    (jac_wall, jac_cpu), (gram_wall, gram_cpu) = best(lambda: jac(params, xa)), best(lambda: gram(ja, jb))
    examples, entries = n / block, n * (n + 1) / 2 / block**2
    return (
        examples * jac_wall + entries * gram_wall,
        examples * jac_cpu + entries * gram_cpu,
        jac_wall / block,
        gram_wall / block**2,
    )


if __name__ == "__main__":
    sys.exit(main())
