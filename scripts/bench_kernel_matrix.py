"""`kernel_matrix` against `nt.batch` with each of NT's implementations: a model × route table.

Usage: python scripts/bench_kernel_matrix.py [--results bench-kernel-matrix.json]
       [--cases fc cnn wide_resnet resnet fc-20000] [--kernels pntk trace] [--cell-timeout 1800]

For each case (a zoo network at init on N digits, 8×8×1) and kernel (the pNTK,
or NT's trace kernel ``trace_axes=(-1,)``), each cell runs in a process of its
own and times the whole call, compilation included, float32:

* ``nt.batch(fn, B, store_on_device=False)`` with NT's implementations 1
  (Jacobian contraction), 2 (NTK-vector products) and 3 (structured
  derivatives), the batch size B dividing N;
* ``kernel_matrix(fn, x, None, params)`` with ``implementation=0`` (AUTO): the
  route it chose, and its achieved FLOP rate, XLA's cost-analysis FLOPs of the
  programs it ran over the wall time, as a fraction of this machine's measured
  dense float32 matmul rate (`nt_pntk._src.measure.machine_rates`): over the
  whole call, and (in parentheses) over the tile loop alone, without choosing
  the route and compiling.

Every cell's kernel is kept on disk and compared with the case's first one
(relative Frobenius difference). The results file is a resumable record:
finished cells are skipped on a rerun, so a run cut short continues; a cell over
``--cell-timeout`` seconds is recorded as such (the table shows ``> T``). The
table's last columns: kernel_matrix's time over the fastest ``nt.batch``
(the goal is ≤ 0.8) and its FLOP rate fraction (the goal is ≥ 0.5 for FC).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name: (zoo model, builder options, N, nt.batch batch size)
CASES = {
    "fc": ("fc", {"width": 512, "depth": 3}, 4000, 500),
    "cnn": ("cnn", {"width": 64, "depth": 2}, 4000, 500),
    "wide_resnet": ("wide_resnet", {"width": 16}, 4000, 500),
    "resnet": ("resnet", {"width": 8, "depth": 10}, 4000, 500),
    "fc-20000": ("fc", {"width": 512, "depth": 3}, 20000, 1000),
    "smoke": ("fc", {"width": 64, "depth": 2}, 600, 200),  # seconds: checks the script runs
}
DEFAULT_CASES = ["fc", "cnn", "wide_resnet", "resnet", "fc-20000"]
METHODS = ("kernel_matrix", "nt.batch impl 3", "nt.batch impl 1", "nt.batch impl 2")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=Path("bench-kernel-matrix.json"))
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=DEFAULT_CASES)
    parser.add_argument("--kernels", nargs="+", choices=["pntk", "trace"], default=["pntk", "trace"])
    parser.add_argument("--cell-timeout", type=float, default=1800.0)
    parser.add_argument("--kernels-dir", type=Path, default=None, help="where cells keep kernels (a tmp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    kernels_dir = args.kernels_dir or Path(tempfile.gettempdir()) / "bench-kernel-matrix"
    kernels_dir.mkdir(parents=True, exist_ok=True)
    for case in args.cases:
        for kernel in args.kernels:
            for method in METHODS:
                key = f"{case} | {kernel} | {method}"
                if key in results:
                    continue
                spec = {"case": case, "kernel": kernel, "method": method}
                spec["path"] = str(kernels_dir / (key.replace(" | ", "_").replace(" ", "-") + ".npy"))
                results[key] = spawn(spec, args.cell_timeout)
                results[key]["difference"] = difference(results, case, kernel, spec["path"])
                args.results.write_text(json.dumps(results, indent=1))  # after every cell: resumable
                print(key, results[key], flush=True)
    print_table(results, args.cases, args.kernels, args.cell_timeout)
    return 0


def spawn(spec: dict, timeout: float) -> dict:
    argv = [sys.executable, __file__, "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=os.environ)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def difference(results: dict, case: str, kernel: str, path: str) -> float | None:
    """Relative Frobenius difference from the case's first other finished kernel."""
    import numpy as np

    if not Path(path).exists():
        return None
    for method in METHODS:
        record = results.get(f"{case} | {kernel} | {method}", {})
        reference = record.get("path", record.get("out"))  # "out": the key in records of earlier runs
        if reference and reference != path and Path(reference).exists():
            a, b = np.load(reference, mmap_mode="r"), np.load(path, mmap_mode="r")
            num = den = 0.0
            for i in range(0, a.shape[0], 1000):  # in blocks: a 20,000² kernel is 1.6 GB
                ai, bi = np.asarray(a[i : i + 1000], np.float64), np.asarray(b[i : i + 1000], np.float64)
                num, den = num + ((ai - bi) ** 2).sum(), den + (ai**2).sum()
            return float(np.sqrt(num / den))
    return None


def child(spec: dict) -> dict:
    import jax
    import neural_tangents as nt
    import numpy as np

    import nt_pntk
    from nt_pntk._src import measure
    from nt_pntk.cli.kernel import digits
    from nt_pntk.experiments import models

    name, options, n, batch = CASES[spec["case"]]
    model = models.get_model(name, outputs=10, **options)
    x = digits(n, seed=0)
    _, params = model.init_fn(jax.random.PRNGKey(0), (-1, *x.shape[1:]))
    approximation = (
        nt_pntk.approximations.PNTK() if spec["kernel"] == "pntk" else nt_pntk.approximations.Trace()
    )
    method = spec["method"]
    implementation = 0 if method == "kernel_matrix" else int(method[-1])
    fn = approximation.kernel_fn(model.apply_fn, vmap_axes=0, implementation=implementation)
    row: dict = {"n": n, "path": spec["path"]}
    start = time.perf_counter()
    if method == "kernel_matrix":
        kernel, stats = nt_pntk.kernel_matrix(fn, x, None, params, progress=False, stats=True)
        row["seconds"] = time.perf_counter() - start
        row["route"], row["tile"], row["flops"] = stats.route, stats.plan.tile, stats.flops
        row["run_seconds"] = stats.run_seconds
        row["matmul_flops_per_s"] = measure.machine_rates().flops_per_s
    else:
        kernel = nt.batch(fn, batch_size=batch, store_on_device=False)(x, None, params)
        kernel = np.asarray(kernel)
        row["seconds"] = time.perf_counter() - start
    np.save(spec["path"], np.asarray(kernel))
    return row


def print_table(results: dict, cases: list[str], kernels: list[str], timeout: float) -> None:
    def cell(key: str) -> str:
        r = results.get(key)
        if r is None:
            return "—"
        if "timeout" in r:
            return f"> {r['timeout']:.0f} s"
        if "error" in r:
            memory = "bad_alloc" in r["error"] or "out of memory" in r["error"].lower()
            return "out of memory" if memory else "error"
        return f"{r['seconds']:.1f} s"

    print(
        f"\n| model, N | kernel | {' | '.join(METHODS)} | route | km / best nt.batch | FLOP rate | max diff |"
    )
    print("|---" * (len(METHODS) + 6) + "|")
    for case in cases:
        name, options, n, _ = CASES[case]
        for kernel in kernels:
            keys = {m: f"{case} | {kernel} | {m}" for m in METHODS}
            ours = results.get(keys["kernel_matrix"], {})
            nt_times = [
                results[k]["seconds"]
                for m, k in keys.items()
                if m != "kernel_matrix" and "seconds" in results.get(k, {})
            ]
            # A timed-out nt.batch cell took at least the timeout: a lower bound for "best" only if all did.
            timed_out = [results[k]["timeout"] for k in keys.values() if "timeout" in results.get(k, {})]
            best = min(nt_times) if nt_times else (min(timed_out) if timed_out else None)
            ratio = f"{ours['seconds'] / best:.2f}" if "seconds" in ours and best else "—"
            if not nt_times and timed_out and ratio != "—":
                ratio = f"< {ratio}"
            rate = "—"
            if "flops" in ours:  # over the whole call, and over the tile loop alone
                whole = ours["flops"] / ours["seconds"] / ours["matmul_flops_per_s"]
                rate = f"{whole:.2f}"
                if "run_seconds" in ours:
                    rate += f" ({ours['flops'] / ours['run_seconds'] / ours['matmul_flops_per_s']:.2f})"
            diffs = [results[k].get("difference") for k in keys.values() if k in results]
            diffs = [d for d in diffs if d is not None]
            shown = f"{max(diffs):.1e}" if diffs else "—"
            label = f"{name} {options}, {n}"
            row = " | ".join(cell(keys[m]) for m in METHODS)
            print(f"| {label} | {kernel} | {row} | {ours.get('route', '—')} | {ratio} | {rate} | {shown} |")


if __name__ == "__main__":
    sys.exit(main())
