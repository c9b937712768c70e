"""Data attribution on the digits, scored by the linear datamodeling score (LDS).

    python scripts/attribution_experiment.py [--quick] [--output DIR]

A small MLP (the zoo's FC, 2 hidden layers of 128 ReLU units, 10 outputs) is trained with Adam on
cross-entropy on 500 training digits; 100 test digits are attributed to the training digits by
scores (`nt_pntk.attribution`) from kernels of the *trained* network:

* the exact pNTK, the trace kernel (``approximations.Trace``, the baseline kernel), and the sketched
  pNTK at k = 256, 1,024, 4,096 (``Sketch(dim=k).kernel_fn(f).sketch_fn()``, scored from features);
* each by the kernel surrogate (Engel et al.: kernel regression on the network's training logits,
  S_xi = K(x, x_i)⟨α_i, r_x⟩, r_x the test margin's readout) and TRAK-style (the regression weight
  times the residual 1 - p_i and the readouts' agreement), at each ridge of ``--ridges``;
* a control: random scores (standard normal).

The ground truth: ``--subsets`` random halves of the training set (subset s drawn by NumPy's
``default_rng([seed, s])``), each a network retrained from scratch *from the same initialization*
(the full network's, ``PRNGKey(seed)``) with the same steps: the retrained networks differ only by
their data, so the LDS measures attribution, not the noise of initialization. Its margin on each
test digit (logit of the correct class minus the largest other) is what the scores predict by
their sum over the subset. LDS: the Spearman correlation over the subsets, averaged over the test
digits, with a 95% bootstrap interval over the test digits (2,000 resamples).

Also per kernel: the surrogate's faithfulness (Spearman correlation of the kernel regression's test
margins with the network's, and of all its test logits with the network's) and the seconds to
compute the kernel (or features) and the scores.

Writes to ``--output`` (default validation/results/attribution): ``subsets.jsonl`` (one line per
retrained subset, appended as it finishes, identified by a hash of its indices and of the data and
training settings: a rerun retrains only the missing ones, and ``--subsets 200`` adds more),
``results.csv`` (one row per kernel × method × ridge), ``table.md``, ``table.rst`` (for the guide)
and ``attribution_lds.png``.
``--quick``: 120 + 30 digits, 12 subsets, 200 steps, k = 256 (seconds; for CI and a smoke test).
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
import numpy as np
import scipy.stats

from nt_pntk import attribution, regression
from nt_pntk.approximations import PNTK, Sketch, Trace
from nt_pntk.experiments import data, models

BOOTSTRAPS = 2000
CSV_FIELDS = [
    "kernel",
    "k",
    "method",
    "ridge",
    "lds",
    "lds_low",
    "lds_high",
    "faithfulness_margin",
    "faithfulness_logits",
    "kernel_seconds",
    "score_seconds",
    "n_train",
    "n_test",
    "subsets",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("validation/results/attribution"))
    parser.add_argument("--quick", action="store_true", help="CI-sized: 120 + 30 digits, 12 subsets")
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--subsets", type=int, default=100)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1000, help="full-batch Adam steps")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--ks", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--ridges", type=float, nargs="+", default=[1e-3, 1e-1])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.subsets, args.steps, args.ks = 120, 30, 12, 200, [256]
    return args


# ---- training ----------------------------------------------------------------------------------


def make_trainer(apply_fn, steps: int, learning_rate: float):
    """``train(params, x, y)``: full-batch Adam on the mean cross-entropy, `steps` steps in one scan."""

    def loss(params, x, y):
        logits = apply_fn(params, x)
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0])

    @jax.jit
    def train(params, x, y):
        def step(state, t):
            params, m, v = state
            grads = jax.grad(loss)(params, x, y)
            m = jax.tree.map(lambda a, g: 0.9 * a + 0.1 * g, m, grads)
            v = jax.tree.map(lambda a, g: 0.999 * a + 0.001 * g * g, v, grads)
            rate = learning_rate * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)  # Adam's bias correction
            params = jax.tree.map(lambda p, a, b: p - rate * a / (jnp.sqrt(b) + 1e-8), params, m, v)
            return (params, m, v), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        steps_t = jnp.arange(1, steps + 1, dtype=jnp.float32)
        (params, _, _), _ = jax.lax.scan(step, (params, zeros, zeros), steps_t)
        return params

    return train


# ---- the retrained subsets (resumable) ------------------------------------------------------------


def subset_indices(seed: int, s: int, n_train: int) -> np.ndarray:
    return np.sort(np.random.default_rng([seed, s]).choice(n_train, n_train // 2, replace=False))


def subset_key(indices: np.ndarray, settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True).encode() + np.asarray(indices, np.int64).tobytes()
    return hashlib.sha256(blob).hexdigest()[:20]


def load_subsets(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    return {row["key"]: row for row in map(json.loads, path.read_text().splitlines()) if row}


def retrain_subsets(args, settings, train, params0, x_train, y_train, x_test, y_test, apply_fn):
    path = args.output / "subsets.jsonl"
    done = load_subsets(path)
    masks, margins = [], []
    for s in range(args.subsets):
        indices = subset_indices(args.seed, s, args.n_train)
        key = subset_key(indices, settings)
        if key not in done:
            start = time.perf_counter()
            params = train(params0, x_train[indices], y_train[indices])
            logits = np.asarray(apply_fn(params, x_test), np.float64)
            row = {
                "key": key,
                "subset": s,
                "seconds": round(time.perf_counter() - start, 3),
                "test_accuracy": float(np.mean(logits.argmax(1) == y_test)),
                "margins": attribution.margins(logits, y_test).round(6).tolist(),
            }
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[key] = row
            print(f"subset {s}: {row['seconds']} s, test accuracy {row['test_accuracy']:.3f}", flush=True)
        mask = np.zeros(args.n_train, bool)
        mask[indices] = True
        masks.append(mask)
        margins.append(done[key]["margins"])
    return np.array(masks), np.array(margins, np.float64)


# ---- scores ---------------------------------------------------------------------------------------


def spearman(a, b) -> float:
    return float(scipy.stats.spearmanr(np.ravel(a), np.ravel(b)).statistic)


def bootstrap(per_test: np.ndarray, seed: int) -> tuple[float, float]:
    values = per_test[~np.isnan(per_test)]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (BOOTSTRAPS, len(values)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def kernels(apply_fn, params, x_train, x_test, ks, seed):
    """label -> (k, ("kernel", K_all) or ("features", Φ_all), seconds), inputs ordered train then test.

    Each is computed twice and the second call timed: the seconds exclude JAX's compilation.
    """
    x_all = jnp.concatenate([x_train, x_test])
    functions = {"pNTK": (0, PNTK().kernel_fn(apply_fn)), "trace": (0, Trace().kernel_fn(apply_fn))}
    for k in ks:
        functions[f"sketched pNTK k={k}"] = (k, Sketch(dim=k, seed=seed).kernel_fn(apply_fn).sketch_fn())
    out = {}
    for label, (k, function) in functions.items():
        call = (lambda f=function: f(x_all, params)) if k else (lambda f=function: f(x_all, None, params))
        jax.block_until_ready(call())
        start = time.perf_counter()
        value = np.asarray(jax.block_until_ready(call()), np.float64)
        seconds = time.perf_counter() - start
        out[label] = (k, ("features", value) if k else ("kernel", (value + value.T) / 2), seconds)
    return out


def score_all(args, apply_fn, params, x_train, y_train, x_test, y_test, masks, subset_margins):
    n = args.n_train
    train_logits = np.asarray(apply_fn(params, x_train), np.float64)
    test_logits = np.asarray(apply_fn(params, x_test), np.float64)
    test_readout = attribution.margin_readout(test_logits, y_test)
    train_readout = attribution.margin_readout(train_logits, y_train)
    q = attribution.residuals(train_logits, y_train)
    network_margins = attribution.margins(test_logits, y_test)
    rows = []

    def record(kernel, k, method, ridge, scores, kernel_seconds, score_seconds, faithful=(np.nan, np.nan)):
        lds = attribution.linear_datamodeling_score(scores, masks, subset_margins)
        low, high = bootstrap(lds.per_test, args.seed)
        values = (kernel, k, method, ridge, lds.mean, low, high, *faithful, kernel_seconds, score_seconds)
        rows.append(dict(zip(CSV_FIELDS, (*values, n, args.n_test, len(masks)), strict=True)))
        print(
            f"{kernel:>22} {method:>9} ridge {ridge:g}: LDS {lds.mean:.3f} [{low:.3f}, {high:.3f}]",
            flush=True,
        )

    start = time.perf_counter()
    random_scores = np.random.default_rng(args.seed).standard_normal((args.n_test, n))
    record("random", 0, "control", 0.0, random_scores, 0.0, time.perf_counter() - start)
    for label, (k, (kind, matrix), kernel_seconds) in kernels(
        apply_fn, params, x_train, x_test, args.ks, args.seed
    ).items():
        for ridge in args.ridges:
            start = time.perf_counter()
            if kind == "kernel":
                k_tt, k_st = matrix[:n, :n], matrix[n:, :n]
                surrogate = attribution.surrogate_scores(k_st, k_tt, train_logits, test_readout, ridge=ridge)
                seconds = time.perf_counter() - start
                predicted = regression.predict(k_tt, train_logits, k_st, ridge=ridge)
                start = time.perf_counter()
                trak = attribution.trak_scores(
                    k_st, k_tt, q, test_readout=test_readout, train_readout=train_readout, ridge=ridge
                )
            else:
                phi_train, phi_test = matrix[:n], matrix[n:]
                surrogate = attribution.surrogate_feature_scores(
                    phi_test, phi_train, train_logits, test_readout, ridge=ridge
                )
                seconds = time.perf_counter() - start
                predicted = regression.predict_features(phi_train, train_logits, phi_test, ridge=ridge)
                start = time.perf_counter()
                trak = attribution.trak_feature_scores(
                    phi_test,
                    phi_train,
                    q,
                    test_readout=test_readout,
                    train_readout=train_readout,
                    ridge=ridge,
                )
            trak_seconds = time.perf_counter() - start
            surrogate_margins = np.sum(predicted * test_readout, axis=1)
            faithful = (spearman(surrogate_margins, network_margins), spearman(predicted, test_logits))
            record(label, k, "surrogate", ridge, surrogate, kernel_seconds, seconds, faithful)
            record(label, k, "TRAK", ridge, trak, kernel_seconds, trak_seconds)
    return rows


# ---- report ---------------------------------------------------------------------------------------


def write_report(args, rows, full_accuracy, subset_accuracy, command):
    with (args.output / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in row.items()})
    random_high = next(r["lds_high"] for r in rows if r["kernel"] == "random")
    lines = [
        f"LDS on {args.n_test} test digits over {rows[0]['subsets']} "
        f"random halves of {args.n_train} training digits; the zoo's FC (2 × {args.width} ReLU), "
        f"{args.steps} full-batch Adam steps (lr {args.learning_rate:g}): test accuracy "
        f"{full_accuracy:.3f} on all the training digits, {subset_accuracy:.3f} on average on a half.",
        "",
        f"Command: `{command}`",
        "",
        "| kernel | method | ridge | LDS (95% CI) | faithfulness: margins / logits | kernel s (warm) "
        "| scores s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        faithful = (
            "—"
            if np.isnan(r["faithfulness_margin"])
            else f"{r['faithfulness_margin']:.3f} / {r['faithfulness_logits']:.3f}"
        )
        beats = "" if r["kernel"] == "random" or r["lds_low"] > random_high else " (not above random)"
        lines.append(
            f"| {r['kernel']} | {r['method']} | {r['ridge']:g} | {r['lds']:.3f} "
            f"({r['lds_low']:.3f}, {r['lds_high']:.3f}){beats} | {faithful} | {r['kernel_seconds']:.2f} | "
            f"{r['score_seconds']:.3f} |"
        )
    (args.output / "table.md").write_text("\n".join(lines) + "\n")
    # The same table for the user guide (reStructuredText: the docs build has no Markdown parser).
    rst = [".. list-table::", "   :header-rows: 1", ""]
    for cells in [line.strip("|").split(" | ") for line in lines[4:5] + lines[6:]]:
        rst += [f"   * - {cells[0].strip()}", *(f"     - {cell.strip()}" for cell in cells[1:])]
    (args.output / "table.rst").write_text("\n".join(rst) + "\n")
    plot(args, rows)


def plot(args, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r['kernel']}\n{r['method']} λ={r['ridge']:g}" for r in rows]
    values = [r["lds"] for r in rows]
    errors = [[r["lds"] - r["lds_low"] for r in rows], [r["lds_high"] - r["lds"] for r in rows]]
    colours = [
        "grey" if r["kernel"] == "random" else "C0" if r["method"] == "surrogate" else "C1" for r in rows
    ]
    ax.barh(range(len(rows)), values, xerr=errors, color=colours)
    ax.set_yticks(range(len(rows)), labels, fontsize=6)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlabel("LDS (Spearman, mean over test digits; 95% bootstrap CI)")
    ax.set_title(
        f"Data attribution on the digits: {args.n_train} train, {args.n_test} test, FC 2×{args.width}"
    )
    fig.tight_layout()
    fig.savefig(args.output / "attribution_lds.png", dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = data.digits_split(args.n_train, args.n_test, seed=args.seed)
    model = models.get_model("fc", width=args.width, outputs=10, depth=2)
    _, params0 = model.init_fn(jax.random.PRNGKey(args.seed), x_train.shape)
    settings = {
        "n_train": args.n_train,
        "n_test": args.n_test,
        "data_seed": args.seed,
        "model": ["fc", args.width, 2],
        "steps": args.steps,
        "learning_rate": args.learning_rate,
        "optimizer": "adam full-batch cross-entropy",
    }
    train = make_trainer(model.apply_fn, args.steps, args.learning_rate)
    y_train_j = jnp.asarray(y_train)
    start = time.perf_counter()
    params = train(params0, x_train, y_train_j)
    full_accuracy = float(np.mean(np.asarray(model.apply_fn(params, x_test)).argmax(1) == y_test))
    print(
        f"full training set: {time.perf_counter() - start:.1f} s, test accuracy {full_accuracy:.3f}",
        flush=True,
    )
    masks, subset_margins = retrain_subsets(
        args, settings, train, params0, x_train, y_train_j, x_test, y_test, model.apply_fn
    )
    subset_accuracy = float(np.mean(subset_margins > 0))
    rows = score_all(args, model.apply_fn, params, x_train, y_train, x_test, y_test, masks, subset_margins)
    command = shlex.join(
        ["python", "scripts/attribution_experiment.py", *(sys.argv[1:] if argv is None else argv)]
    )
    write_report(args, rows, full_accuracy, subset_accuracy, command)
    print((args.output / "table.md").read_text())


if __name__ == "__main__":
    main()
