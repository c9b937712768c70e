"""The sketch's error, measured: sketched pNTK against the exact pNTK beside the pNTK against the eNTK.

    python scripts/sketch_sweep.py [--quick] [--output DIR]

On the digits (scikit-learn's 8×8 handwritten digits: real data, offline), for the zoo's FC (width
256), CNN (width 32), ResNet-10 (width 16) and ResNet-18 (width 8) at initialization, and for every
sketch dimension k,
seed and method of `nt_pntk.approximations.Sketch`:

* ``kernel_error``: ‖K̂ − K‖_F / ‖K‖_F, the sketched pNTK K̂ = ΦΦᵀ against the exact pNTK K on the
  training inputs;
* ``prediction_gap``: ‖f_K̂ − f_K‖_F / ‖f_K‖_F on the test inputs, both kernel-regression predictions
  of `nt_pntk.regression.predict` (ridge 1e-3, centred one-hot targets);

beside the same two numbers for the pNTK itself against the network's full eNTK Θ (NO×NO):
‖Θ − K ⊗ I_O‖_F / ‖Θ‖_F and ‖f_Θ − f_K‖_F / ‖f_Θ‖_F, as ``nt-pntk validate`` measures them. The
exact pNTK is (1/O) Σ_{o,o'} Θ_oo' of that eNTK (computed in blocks, float64 sums), a route
independent of the sketch's per-example gradients.

Writes to ``--output``: ``results.csv`` (one row per network × method × k × seed),
``reference.json`` (the pNTK against the eNTK, per network), ``slopes.csv`` (least-squares slope of
log error on log k, with a 95% interval that resamples the seeds within each k), ``table.md``, and
``sketch_sweep.png``/``.pdf`` (error and prediction gap against k, log-log, one panel per network,
the pNTK's own level as a horizontal line). Prints one verdict per network: the smallest k at which
the sketch's error is below the pNTK's own error on every seed.

Resumable: a rerun with the same ``--output`` reads the finished cells back from ``results.csv`` and
``reference.json``, matched by what they measured (network, width, depth, sizes, ridge, method, k,
seed), and computes only the others; the exact pNTK is kept in ``cache/`` (not results) with the
same identity inside. ``--quick`` is a CI-sized run (48 + 24 digits, k = 256 and 1,024).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np

from nt_pntk import approximations, regression
from nt_pntk._src.experiments.validation import fits, metrics
from nt_pntk._src.kernels.sketch import SKETCH_VERSION, sketch_rows
from nt_pntk.approximations import Sketch
from nt_pntk.experiments import data, models

#: label -> the zoo model's arguments.
NETWORKS = {
    "fc": {"architecture": "fc", "width": 256, "depth": 3},
    "cnn": {"architecture": "cnn", "width": 32, "depth": 3},
    "resnet10": {"architecture": "resnet", "width": 16, "depth": 10},
    "resnet18": {"architecture": "resnet", "width": 8, "depth": 18},
}
METHODS = ("tensorsketch", "countsketch")
OUTPUTS = 10
INIT_SEED = 0  # the network's parameters (one draw: the sweep varies the sketch's seed)
#: What identifies a network's reference measurement, and (with method, k, seed) a cell.
NETWORK_IDENTITY = ("network", "architecture", "width", "depth", "n_train", "n_test", "init_seed", "ridge")
# `sketch`: the version of S's definition (`sketch.SKETCH_VERSION`): a cell measured under another
# measured another sketch, and is measured again.
CELL_IDENTITY = (*NETWORK_IDENTITY, "sketch", "method", "k", "seed")
COLUMNS = (*CELL_IDENTITY, "parameters", "kernel_error", "prediction_gap", "accuracy", "seconds")
FULL = {"n_train": 300, "n_test": 150, "dims": (256, 1024, 4096, 16384)}
QUICK = {"n_train": 48, "n_test": 24, "dims": (256, 1024)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CI-sized run: 48 + 24 digits, k = 256, 1024")
    parser.add_argument("--output", type=Path, default=Path("runs/sketch-sweep"), help="results folder")
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--dims", nargs="+", type=int, help="the k swept (default: by --quick)")
    parser.add_argument("--seeds", type=int, default=3, help="sketch seeds 0 .. SEEDS-1 (default 3)")
    parser.add_argument("--n-train", type=int, help="training digits (default 300; quick 48)")
    parser.add_argument("--n-test", type=int, help="test digits (default 150; quick 24)")
    parser.add_argument("--ridge", type=float, default=1e-3, help="relative ridge of the regressions")
    parser.add_argument("--block", type=int, default=150, help="examples per eNTK block and feature chunk")
    parser.add_argument("--no-plot", action="store_true", help="skip the figure")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    args.n_train = args.n_train or sizes["n_train"]
    args.n_test = args.n_test or sizes["n_test"]
    args.dims = tuple(args.dims or sizes["dims"])
    if min(args.dims) < 1 or args.seeds < 1 or args.block < 1 or args.n_train < 2 or args.n_test < 1:
        parser.error("--dims, --seeds, --block and --n-test must be at least 1, --n-train at least 2")
    return args


# --- Identities: a result is found again by what it measured, not by where it was written ---------


def _normal(column: str, value) -> str:
    """One identity value as a canonical string (ints as ints, floats by repr), so that values read
    back from the CSV match those of a new run."""
    if column == "ridge":
        return repr(float(value))
    if column in ("width", "depth", "n_train", "n_test", "init_seed", "k", "seed"):
        return str(int(value))
    return str(value)


def identity(row: dict, columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_normal(c, row.get(c, "")) for c in columns)


def network_identity(label: str, args: argparse.Namespace) -> dict:
    return {
        "network": label,
        **NETWORKS[label],
        "n_train": args.n_train,
        "n_test": args.n_test,
        "init_seed": INIT_SEED,
        "ridge": args.ridge,
    }


def read_cells(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            sys.exit(
                f"{path} has the columns {reader.fieldnames}, not this script's {list(COLUMNS)}: "
                "give another --output (or move that file away)."
            )
        return list(reader)


def append_cell(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_references(path: Path) -> list[dict]:
    return json.loads(path.read_text())["networks"] if path.exists() else []


def write_references(path: Path, references: list[dict]) -> None:
    path.write_text(json.dumps({"networks": references}, indent=1) + "\n")


# --- Measurements ---------------------------------------------------------------------------------


def exact_kernels(
    model, params, x: jax.Array, y_train, labels_test, n_train: int, ridge: float, block: int
) -> dict:
    """The eNTK Θ by blocks, the exact pNTK K = (1/O) Σ Θ_oo' from it, and the pNTK's errors."""
    entk_fn = jax.jit(
        nt.empirical_ntk_fn(
            model.apply_fn,
            trace_axes=(),
            vmap_axes=0,
            implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION,
        )
    )
    entk, pntk, _ = metrics.kernels_by_blocks(entk_fn, None, x, params, block=block)
    train, test = slice(0, n_train), slice(n_train, None)
    f_entk = regression.predict(entk[train, train], y_train, entk[test, train], ridge=ridge)
    f_pntk = regression.predict(pntk[train, train], y_train, pntk[test, train], ridge=ridge)
    return {
        "pntk": pntk,
        "f_pntk": f_pntk,
        "err_pntk_entk": approximations.relative_error(entk, pntk),
        "pred_gap_pntk_entk": float(np.linalg.norm(f_entk - f_pntk) / np.linalg.norm(f_entk)),
        "accuracy_entk": float(np.mean(np.argmax(f_entk, 1) == labels_test)),
        "accuracy_pntk": float(np.mean(np.argmax(f_pntk, 1) == labels_test)),
    }


def features_fn(apply_fn, method: str, dim: int):
    """``phi(x, params, seed) -> (B, dim)``: `Sketch(dim, seed, method)`'s features, jitted once for
    every seed (the seed traced; `Sketch.kernel_fn(f).sketch_fn()` fixes it, one compile each)."""
    rows_fn = Sketch(dim=dim, method=method).kernel_fn(apply_fn)._rows_fn()

    @jax.jit
    def phi(x, params, seed):
        return sketch_rows(rows_fn(x, params), params, dim, seed)[:, 0, :]

    return phi


def features(phi, x: jax.Array, params, seed: int, block: int) -> np.ndarray:
    """`phi` of all of `x`, `block` inputs a call (the last block padded: one shape, one compile)."""
    out = []
    for start in range(0, len(x), block):
        chunk = x[start : start + block]
        real = len(chunk)
        if real < block and len(x) > block:
            chunk = jnp.concatenate([chunk, jnp.zeros((block - real, *chunk.shape[1:]), chunk.dtype)])
        out.append(np.asarray(phi(chunk, params, jnp.uint32(seed)), np.float64)[:real])
    return np.concatenate(out)


def _cache(path: Path, ident: dict, exact: dict | None = None) -> dict | None:
    """Reads (or with `exact`, writes) the exact pNTK and its regression, checked against `ident`."""
    if exact is not None:
        path.parent.mkdir(exist_ok=True)
        np.savez(path, identity=json.dumps(ident, sort_keys=True), pntk=exact["pntk"], f_pntk=exact["f_pntk"])
        return exact
    if not path.exists():
        return None
    with np.load(path) as z:
        if str(z["identity"]) != json.dumps(ident, sort_keys=True):
            return None
        return {"pntk": z["pntk"], "f_pntk": z["f_pntk"]}


def sweep_network(label: str, args: argparse.Namespace, done: set, references: list[dict]) -> int:
    """Measures the missing cells of one network; returns how many it computed (the reference too)."""
    ident = network_identity(label, args)
    cells = [
        {**ident, "sketch": SKETCH_VERSION, "method": method, "k": dim, "seed": seed}
        for method in args.methods
        for dim in args.dims
        for seed in range(args.seeds)
    ]
    missing = [c for c in cells if identity(c, CELL_IDENTITY) not in done]
    key = identity(ident, NETWORK_IDENTITY)
    has_reference = any(identity(r, NETWORK_IDENTITY) == key for r in references)
    if not missing and has_reference:
        return 0

    spec = NETWORKS[label]
    options = {"depth": spec["depth"]}
    model = models.get_model(spec["architecture"], width=spec["width"], outputs=OUTPUTS, **options)
    x_train, y_train, x_test, labels_test = data.digits_split(args.n_train, args.n_test, seed=0)
    x = jnp.asarray(np.concatenate([x_train, x_test]))
    y = data.centred_one_hot(y_train, OUTPUTS)
    _, params = model.init_fn(jax.random.PRNGKey(INIT_SEED), x.shape)
    parameters = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(params))
    train, test = slice(0, args.n_train), slice(args.n_train, None)
    # The name only finds the file; its content is checked against `ident` (`_cache`).
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    cache = args.output / "cache" / f"{label}-{digest}.npz"
    computed = 0

    exact = None if not has_reference else _cache(cache, ident)
    if exact is None:
        start = time.perf_counter()
        exact = exact_kernels(model, params, x, y, labels_test, args.n_train, args.ridge, args.block)
        _cache(cache, ident, exact)
        if not has_reference:
            references.append(
                {
                    **ident,
                    "parameters": parameters,
                    "err_pntk_entk": exact["err_pntk_entk"],
                    "pred_gap_pntk_entk": exact["pred_gap_pntk_entk"],
                    "accuracy_entk": exact["accuracy_entk"],
                    "accuracy_pntk": exact["accuracy_pntk"],
                    "seconds": time.perf_counter() - start,
                }
            )
            write_references(args.output / "reference.json", references)
            computed += 1
        print(f"{label}: eNTK and pNTK of {len(x)} inputs in {time.perf_counter() - start:.0f} s", flush=True)
    k_train = exact["pntk"][train, train]
    norm = np.linalg.norm(k_train)

    by_group: dict[tuple, list[dict]] = {}
    for c in missing:
        by_group.setdefault((c["method"], c["k"]), []).append(c)
    for (method, dim), group in by_group.items():
        phi = features_fn(model.apply_fn, method, dim)
        for cell in group:
            start = time.perf_counter()
            f = features(phi, x, params, cell["seed"], args.block)
            k_hat = f @ f.T
            f_hat = regression.predict(k_hat[train, train], y, k_hat[test, train], ridge=args.ridge)
            row = {
                **cell,
                "parameters": parameters,
                "kernel_error": float(np.linalg.norm(k_hat[train, train] - k_train) / norm),
                "prediction_gap": float(
                    np.linalg.norm(f_hat - exact["f_pntk"]) / np.linalg.norm(exact["f_pntk"])
                ),
                "accuracy": float(np.mean(np.argmax(f_hat, 1) == labels_test)),
                "seconds": round(time.perf_counter() - start, 3),
            }
            append_cell(args.output / "results.csv", row)
            done.add(identity(row, CELL_IDENTITY))
            computed += 1
            print(
                f"{label} {method} k={dim} seed={cell['seed']}: error {row['kernel_error']:.4f}, "
                f"prediction gap {row['prediction_gap']:.4f} ({row['seconds']:.1f} s)",
                flush=True,
            )
    return computed


# --- Summaries: slopes, verdicts, table, figure ---------------------------------------------------


def selected(rows: list[dict], references: list[dict], args: argparse.Namespace) -> tuple[list, dict]:
    """This run's cells (as floats where numeric) and its references by network label."""
    wanted = {
        identity(
            {**network_identity(label, args), "sketch": SKETCH_VERSION, "method": m, "k": k, "seed": s},
            CELL_IDENTITY,
        )
        for label in args.networks
        for m in args.methods
        for k in args.dims
        for s in range(args.seeds)
    }
    cells = [
        {**r, "k": int(r["k"]), "seed": int(r["seed"]), **{c: float(r[c]) for c in COLUMNS[-5:]}}
        for r in rows
        if identity(r, CELL_IDENTITY) in wanted
    ]
    keys = {identity(network_identity(label, args), NETWORK_IDENTITY): label for label in args.networks}
    refs = {
        keys[identity(r, NETWORK_IDENTITY)]: r for r in references if identity(r, NETWORK_IDENTITY) in keys
    }
    return cells, refs


def slopes(cells: list[dict], args: argparse.Namespace) -> list[dict]:
    """Least-squares slope of log(metric) on log k per network and method, with a 95% interval that
    resamples the seeds within each k (`fits.ragged_slope`, as the validation fits width)."""
    out = []
    for label in args.networks:
        for method in args.methods:
            part = [c for c in cells if c["network"] == label and c["method"] == method]
            row = {"network": label, "method": method}
            for metric in ("kernel_error", "prediction_gap"):
                logs = {
                    k: np.log([c[metric] for c in part if c["k"] == k])
                    for k in sorted({c["k"] for c in part})
                }
                slope, low, high = fits.ragged_slope(logs, bootstrap=2000, rng=np.random.default_rng(0))
                row.update({f"{metric}_slope": slope, f"{metric}_low": low, f"{metric}_high": high})
            out.append(row)
    return out


def smallest_k(cells: list[dict], label: str, method: str, metric: str, level: float) -> int | None:
    """The smallest k at which every seed's `metric` is below `level` (None: at no k swept)."""
    for k in sorted({c["k"] for c in cells}):
        values = [c[metric] for c in cells if c["network"] == label and c["method"] == method and c["k"] == k]
        if values and max(values) < level:
            return k
    return None


def verdicts(cells: list[dict], refs: dict, args: argparse.Namespace) -> list[str]:
    def at(label: str, metric: str, level: float) -> str:
        found = [smallest_k(cells, label, m, metric, level) for m in args.methods]
        return ", ".join(
            f"{'none swept' if k is None else f'k = {k:,}'} ({m})"
            for k, m in zip(found, args.methods, strict=True)
        )

    lines = []
    for label in args.networks:
        if label not in refs:
            continue
        ref, spec = refs[label], NETWORKS[label]

        lines.append(
            f"{label} (width {spec['width']}, {int(ref['parameters']):,} parameters): the pNTK's own error "
            f"against the eNTK is {ref['err_pntk_entk']:.3g} (prediction gap "
            f"{ref['pred_gap_pntk_entk']:.3g}); the sketch's error is below it from "
            f"{at(label, 'kernel_error', ref['err_pntk_entk'])}, its prediction gap from "
            f"{at(label, 'prediction_gap', ref['pred_gap_pntk_entk'])}, on every seed."
        )
    return lines


def _spread(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ({min(values):.4f}–{max(values):.4f})"


def table(cells: list[dict], refs: dict, slope_rows: list[dict], lines: list[str], args) -> str:
    out = [
        "# The sketched pNTK's error against the exact pNTK, beside the pNTK's against the eNTK",
        "",
        f"Digits, {args.n_train} training + {args.n_test} test inputs, O = {OUTPUTS}, networks at "
        f"initialization (seed {INIT_SEED}); {args.seeds} sketch seeds; ridge {args.ridge:g} (relative to "
        "the mean diagonal), centred one-hot targets. *Kernel error*: ‖K̂ − K‖_F / ‖K‖_F on the training "
        "inputs; *prediction gap*: ‖f_K̂ − f_K‖_F / ‖f_K‖_F on the test inputs; mean over the seeds "
        "(min–max). The last two columns are the pNTK's own error and prediction gap against the eNTK "
        f"(Θ, NO×NO) of the same network. `{args.command}` reproduces it.",
        "",
        "| network | method | k | kernel error | prediction gap | accuracy: sketch (pNTK) | "
        "pNTK vs eNTK error | pNTK vs eNTK prediction gap |",
        "|---|---|---:|---|---|---:|---:|---:|",
    ]
    for label in args.networks:
        ref = refs.get(label)
        for method in args.methods:
            for k in args.dims:
                part = [c for c in cells if c["network"] == label and c["method"] == method and c["k"] == k]
                if not part:
                    continue
                out.append(
                    f"| {label} | {method} | {k:,} | {_spread([c['kernel_error'] for c in part])} | "
                    f"{_spread([c['prediction_gap'] for c in part])} | "
                    f"{np.mean([c['accuracy'] for c in part]):.3f}"
                    + (f" ({ref['accuracy_pntk']:.3f}) | " if ref else " | ")
                    + (
                        f"{ref['err_pntk_entk']:.4f} | {ref['pred_gap_pntk_entk']:.4f} |"
                        if ref
                        else "– | – |"
                    )
                )
    out += [
        "",
        "Slopes of log error on log k (least squares over every seed; 95% interval resampling the seeds "
        "within each k; an unbiased sketch's is −1/2):",
        "",
        "| network | method | kernel error slope | prediction gap slope |",
        "|---|---|---|---|",
    ]
    for s in slope_rows:
        fitted = [
            f"{s[f'{m}_slope']:.3f} [{s[f'{m}_low']:.3f}, {s[f'{m}_high']:.3f}]"
            for m in ("kernel_error", "prediction_gap")
        ]
        out.append(f"| {s['network']} | {s['method']} | {fitted[0]} | {fitted[1]} |")
    out += ["", *[f"- {line}" for line in lines], ""]
    return "\n".join(out)


def plot(cells: list[dict], refs: dict, slope_rows: list[dict], args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics_ = (
        ("kernel_error", "err_pntk_entk", r"kernel error $\|\hat K - K\|_F / \|K\|_F$"),
        ("prediction_gap", "pred_gap_pntk_entk", r"prediction gap $\|f_{\hat K} - f_K\|_F / \|f_K\|_F$"),
    )
    fig, axes = plt.subplots(2, len(args.networks), figsize=(4 * len(args.networks), 6.5), squeeze=False)
    markers = {"tensorsketch": "o", "countsketch": "s"}
    for j, label in enumerate(args.networks):
        for i, (metric, ref_metric, name) in enumerate(metrics_):
            ax = axes[i, j]
            for method in args.methods:
                ks = sorted({c["k"] for c in cells if c["network"] == label and c["method"] == method})
                if not ks:
                    continue
                values = [
                    [
                        c[metric]
                        for c in cells
                        if c["network"] == label and c["method"] == method and c["k"] == k
                    ]
                    for k in ks
                ]
                mean = np.array([np.mean(v) for v in values])
                low, high = mean - [min(v) for v in values], [max(v) for v in values] - mean
                slope = next(s for s in slope_rows if s["network"] == label and s["method"] == method)
                ax.errorbar(
                    ks,
                    mean,
                    yerr=[low, high],
                    marker=markers[method],
                    capsize=3,
                    linestyle="-",
                    label=f"{method} (slope {slope[f'{metric}_slope']:.2f})",
                )
            if label in refs:
                ax.axhline(refs[label][ref_metric], color="0.3", linestyle="--", label="pNTK vs eNTK")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            spec = NETWORKS[label]
            if i == 0:
                ax.set_title(f"{label} (width {spec['width']})")
            else:
                ax.set_xlabel("sketch dimension k")
            if j == 0:
                ax.set_ylabel(name)
            ax.legend(fontsize=7)
    fig.suptitle(
        f"Sketched pNTK vs exact pNTK on {args.n_train} + {args.n_test} digits (mean, min–max over "
        f"{args.seeds} seeds); dashed: the pNTK's own level against the eNTK",
        fontsize=9,
    )
    fig.tight_layout()
    for fmt in ("png", "pdf"):
        fig.savefig(path.with_suffix(f".{fmt}"), dpi=150)
    plt.close(fig)


def write_summaries(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    cells, refs = selected(
        read_cells(args.output / "results.csv"), read_references(args.output / "reference.json"), args
    )
    slope_rows = slopes(cells, args)
    with (args.output / "slopes.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(slope_rows[0]))
        writer.writeheader()
        writer.writerows(slope_rows)
    lines = verdicts(cells, refs, args)
    (args.output / "table.md").write_text(table(cells, refs, slope_rows, lines, args))
    if not args.no_plot:
        plot(cells, refs, slope_rows, args, args.output / "sketch_sweep.png")
    return slope_rows, lines


def main(argv: list[str] | None = None) -> dict:
    """Runs the sweep; returns ``{"computed": cells and references measured now, "slopes", "verdicts"}``."""
    args = parse_args(argv)
    args.command = shlex.join(
        ["python", "scripts/sketch_sweep.py", *(sys.argv[1:] if argv is None else argv)]
    )
    args.output.mkdir(parents=True, exist_ok=True)
    done = {identity(r, CELL_IDENTITY) for r in read_cells(args.output / "results.csv")}
    references = read_references(args.output / "reference.json")
    start = time.perf_counter()
    computed = sum(sweep_network(label, args, done, references) for label in args.networks)
    slope_rows, lines = write_summaries(args)
    for line in lines:
        print(line)
    total = len(args.networks) * len(args.methods) * len(args.dims) * args.seeds
    print(
        f"{computed} measured now ({total} cells + {len(args.networks)} references in all), "
        f"{time.perf_counter() - start:.0f} s; results in {args.output}"
    )
    return {"computed": computed, "slopes": slope_rows, "verdicts": lines}


if __name__ == "__main__":
    main()
