"""Look-ahead active learning on the digits: the pNTK and the trace against random and maximum entropy.

    python scripts/active_learning_experiment.py [--quick] [--output DIR]

For each seed: a pool of 1,000 digits (the other 797 are the test set), 20 of them labelled at
random, the zoo's CNN (``--width``, ``--depth``) initialized from the seed. The model is the network
linearized at its initialization and trained to convergence on the labelled set: kernel regression
with its pNTK (as K ⊗ I_O), from its initial outputs f0, ridge ``--ridge`` (the paper retrains the
network each round and recomputes the NTK at the trained parameters; on this project's shared 2-core
machine that is out of reach, and in the wide limit the two agree). Each round records the model's
test accuracy and labels ``--per-round`` more pool digits by each strategy:

* ``lookahead-pntk``: `nt_pntk.active_learning.lookahead_scores` with the pNTK (the predicted label,
  ``criterion="norm"``), top scores;
* ``lookahead-trace``: the same with NT's default kernel, the trace (1/O) Σ_o Θ_oo;
* ``random``: uniformly at random;
* ``max-entropy``: the highest entropy of the softmax of the model's outputs.

Writes to ``--output``: ``results.csv`` (seed, strategy, round, labels, test accuracy, seconds to
select), ``table.md`` (accuracy mean ± std over the seeds per round and strategy), ``timing.csv``
and ``timing.md`` (one round of look-ahead, kernel and scores, with the pNTK and with the full eNTK,
NO × NO, side by side in this process, on ``--timing-pool`` digits; a rerun with another
``--timing-pool`` adds its rows), ``active_learning.png``
(accuracy against labels, one line per strategy, ± one std shaded).

Resumable: each seed's kernels are kept in ``cache/`` (named by the settings' hash) and each
(seed, strategy) keeps its rounds in ``cells/<strategy>-seed<seed>-<settings>.json``, rewritten after
each round; a rerun continues from the last finished round and recomputes nothing else. ``--quick``:
CI-sized (pool 120, 2 seeds, 3 rounds of 5, width 8).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

import nt_pntk
from nt_pntk import active_learning, regression
from nt_pntk.approximations import PNTK, FullENTK, Trace
from nt_pntk.experiments import data, models

STRATEGIES = ("lookahead-pntk", "lookahead-trace", "random", "max-entropy")
CLASSES = 10


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/active-learning"))
    parser.add_argument("--quick", action="store_true", help="CI-sized run")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--ridge", type=float, default=1e-3)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--timing-pool", type=int, default=300, help="pool of the pNTK-vs-eNTK timing")
    parser.add_argument("--no-timing", action="store_true", help="skip the pNTK-vs-eNTK timing")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.pool, args.initial, args.per_round, args.rounds = 2, 120, 10, 5, 3
        args.width, args.timing_pool = 8, 60
    return args


def settings(args: argparse.Namespace) -> dict:
    """What defines a cell's result besides its seed and strategy (its file name carries the hash)."""
    return {
        "pool": args.pool,
        "initial": args.initial,
        "per_round": args.per_round,
        "rounds": args.rounds,
        "model": "cnn",
        "width": args.width,
        "depth": args.depth,
        "ridge": args.ridge,
        "evaluation": "pntk-linearized-at-init",
        "version": 2,
    }


def settings_key(args: argparse.Namespace) -> str:
    return hashlib.sha256(json.dumps(settings(args), sort_keys=True).encode()).hexdigest()[:12]


class Seed:
    """One seed's data split, network at initialization, its outputs and kernels (cached on disk)."""

    def __init__(self, args: argparse.Namespace, seed: int, cache: Path):
        self.seed, self.ridge = seed, args.ridge
        x_pool, y_pool, x_test, y_test = data.digits_split(args.pool, 1797 - args.pool, seed=seed)
        self.x_pool, self.y_pool, self.x_test, self.y_test = x_pool, y_pool, x_test, y_test
        self.initial = np.random.default_rng(seed).permutation(args.pool)[: args.initial]
        self.model = models.get_model("cnn", width=args.width, outputs=CLASSES, depth=args.depth)
        _, self.params = self.model.init_fn(jax.random.PRNGKey(seed), x_pool.shape)
        x = np.concatenate([x_pool, x_test])
        self.f0 = np.asarray(self.model.apply_fn(self.params, x), np.float64)
        self.n_pool = args.pool
        key = f"seed{seed}-{settings_key(args)}"
        # The pNTK of pool and test inputs (the model and a look-ahead kernel); the trace of the pool.
        self.pntk = self._kernel(cache / f"pntk-{key}.npy", PNTK(), x)
        self.trace = (
            self._kernel(cache / f"trace-{key}.npy", Trace(), x_pool)
            if "lookahead-trace" in args.strategies
            else None
        )

    def _kernel(self, path: Path, approximation, x) -> np.ndarray:
        if not path.exists():
            start = time.perf_counter()
            k = nt_pntk.kernel_matrix(
                approximation.kernel_fn(self.model.apply_fn), x, None, self.params, progress=False
            )
            np.save(path.with_suffix(".tmp.npy"), np.asarray(k, np.float64))
            os.replace(path.with_suffix(".tmp.npy"), path)
            print(
                f"seed {self.seed}: {approximation.name} kernel {k.shape}, "
                f"{time.perf_counter() - start:.1f} s"
            )
        return np.load(path)

    def predictions(self, labelled: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The linearized network trained on `labelled`: f0 + K(rows, L)(K_LL + λI)⁻¹(Y_L − f0(L))."""
        y_l = data.centred_one_hot(self.y_pool[labelled], CLASSES).astype(np.float64)
        k = self.pntk
        fit = regression.predict(
            k[np.ix_(labelled, labelled)],
            y_l - self.f0[labelled],
            k[np.ix_(rows, labelled)],
            ridge=self.ridge,
        )
        return self.f0[rows] + fit

    def accuracy(self, labelled: np.ndarray) -> float:
        test = np.arange(self.n_pool, len(self.f0))
        return float(np.mean(np.argmax(self.predictions(labelled, test), 1) == self.y_test))


def choose(run: Seed, strategy: str, labelled: np.ndarray, round_: int, args) -> np.ndarray:
    unlabelled = np.setdiff1d(np.arange(run.n_pool), labelled)
    if strategy == "random":
        rng = np.random.default_rng([run.seed, round_])
        return rng.choice(unlabelled, args.per_round, replace=False)
    if strategy == "max-entropy":
        logits = run.predictions(labelled, unlabelled)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        scores = -np.sum(p * np.log(p), axis=1)
    else:
        k = run.pntk if strategy == "lookahead-pntk" else run.trace
        lab, unl = labelled, unlabelled
        y_l = data.centred_one_hot(run.y_pool[lab], CLASSES).astype(np.float64)
        k_ll, k_ul, k_uu = k[np.ix_(lab, lab)], k[np.ix_(unl, lab)], k[np.ix_(unl, unl)]
        scores = active_learning.lookahead_scores(
            k_ll, k_ul, k_uu, y_l, run.f0[lab], run.f0[unl], ridge=args.ridge
        )
    return unlabelled[active_learning.select(scores, args.per_round)]


def run_cell(run: Seed, strategy: str, args, folder: Path) -> list[dict]:
    """All rounds of one (seed, strategy), resumed from its file; each round saved as it finishes."""
    path = folder / f"{strategy}-seed{run.seed}-{settings_key(args)}.json"
    rounds = json.loads(path.read_text())["rounds"] if path.exists() else []
    while len(rounds) <= args.rounds:
        r = len(rounds)
        labelled = np.asarray(rounds[-1]["next"] if rounds else run.initial, np.int64)
        accuracy = run.accuracy(labelled)
        start = time.perf_counter()
        last = r == args.rounds
        chosen = np.zeros(0, np.int64) if last else choose(run, strategy, labelled, r, args)
        seconds = time.perf_counter() - start
        rounds.append(
            {
                "round": r,
                "labels": len(labelled),
                "accuracy": accuracy,
                "select_seconds": seconds,
                "next": np.concatenate([labelled, chosen]).tolist(),
            }
        )
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"settings": settings(args), "seed": run.seed, "rounds": rounds}))
        os.replace(temporary, path)
        print(
            f"seed {run.seed} {strategy:16s} round {r:2d}: {len(labelled):4d} labels, "
            f"accuracy {accuracy:.4f}, select {seconds:.2f} s",
            flush=True,
        )
    return rounds


def timing(args, path: Path) -> list[dict]:
    """One round of look-ahead (kernel + scores) with the pNTK and with the full eNTK (NO × NO), side by
    side, on `--timing-pool` digits of seed 0 (`--initial` of them labelled); the second of two runs
    each. Rows of other pool sizes already in `path` are kept."""
    identity = json.dumps(
        {**settings(args), "timing_pool": args.timing_pool, "route": "kernel_fn"}, sort_keys=True
    )
    kept = list(csv.DictReader(path.open())) if path.exists() else []  # other pool sizes' rows
    if any(row["settings"] == identity for row in kept):
        return kept
    x, y, _, _ = data.digits_split(args.timing_pool, 0, seed=0)
    model = models.get_model("cnn", width=args.width, outputs=CLASSES, depth=args.depth)
    _, params = model.init_fn(jax.random.PRNGKey(0), x.shape)
    n = args.initial
    f0 = np.asarray(model.apply_fn(params, x), np.float64)
    y_l = data.centred_one_hot(y[:n], CLASSES).astype(np.float64)
    rows = []
    for name in ("pntk", "entk"):
        for _repeat in range(2):  # the first includes compilation; the second is reported
            start = time.perf_counter()
            # The same call for both (no tiling): the kernels' costs, not their routes', are compared.
            approximation = PNTK() if name == "pntk" else FullENTK()
            k = np.asarray(approximation.kernel_fn(model.apply_fn, vmap_axes=0)(x, None, params), np.float64)
            kernel_seconds = time.perf_counter() - start
            start = time.perf_counter()
            scores = active_learning.lookahead_scores(
                k[:n, :n], k[n:, :n], k[n:, n:], y_l, f0[:n], f0[n:], ridge=args.ridge
            )
            score_seconds = time.perf_counter() - start
        rows.append(
            {
                "kernel": name,
                "pool": len(x) - n,
                "labelled": n,
                "kernel_seconds": round(kernel_seconds, 3),
                "score_seconds": round(score_seconds, 3),
                "total_seconds": round(kernel_seconds + score_seconds, 3),
                "chosen": " ".join(map(str, n + active_learning.select(scores, args.per_round))),
                "settings": identity,
            }
        )
        print(f"timing {name}: kernel {kernel_seconds:.2f} s, scores {score_seconds:.2f} s", flush=True)
    rows = kept + rows
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def write_reports(results: list[dict], timings: list[dict], args, output: Path) -> None:
    with (output / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["seed", "strategy", "round", "labels", "accuracy", "select_seconds"]
        )
        writer.writeheader()
        writer.writerows(results)
    strategies = [s for s in STRATEGIES if any(r["strategy"] == s for r in results)]
    rounds = sorted({r["round"] for r in results})
    table = {
        (s, r): np.array([x["accuracy"] for x in results if x["strategy"] == s and x["round"] == r])
        for s in strategies
        for r in rounds
    }
    labels = {r: next(x["labels"] for x in results if x["round"] == r) for r in rounds}
    seeds = sorted({r["seed"] for r in results})
    lines = [
        f"Test accuracy (%) of the CNN (width {args.width}, depth {args.depth}) linearized at initialization "
        "(pNTK regression, trained to convergence on the labelled digits), "
        f"mean ± std over {len(seeds)} seeds; pool {args.pool}, +{args.per_round} labels per round.",
        "",
        "| labels | " + " | ".join(strategies) + " |",
        "|---:|" + "---:|" * len(strategies),
    ]
    for r in rounds:
        cells = [f"{100 * table[s, r].mean():.1f} ± {100 * table[s, r].std():.1f}" for s in strategies]
        lines.append(f"| {labels[r]} | " + " | ".join(cells) + " |")
    mean_over_rounds = [f"{100 * np.mean([table[s, r].mean() for r in rounds[1:]]):.1f}" for s in strategies]
    lines.append("| mean (rounds 1+) | " + " | ".join(mean_over_rounds) + " |")
    (output / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if timings:
        timing_lines = [
            "| kernel | pool | labelled | kernel (s) | look-ahead scores (s) | total (s) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for t in timings:
            timing_lines.append(
                f"| {t['kernel']} | {t['pool']} | {t['labelled']} | {float(t['kernel_seconds']):.2f} | "
                f"{float(t['score_seconds']):.2f} | {float(t['total_seconds']):.2f} |"
            )
        (output / "timing.md").write_text("\n".join(timing_lines) + "\n")
        print("\n".join(timing_lines))
    plot(table, strategies, rounds, labels, len(seeds), output / "active_learning.png")


def plot(table, strategies, rounds, labels, seeds: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [labels[r] for r in rounds]
    for s in strategies:
        mean = np.array([table[s, r].mean() for r in rounds]) * 100
        std = np.array([table[s, r].std() for r in rounds]) * 100
        ax.plot(x, mean, marker="o", ms=3, label=s)
        ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel("labelled digits")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Active learning on the digits, CNN, {seeds} seeds (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    output = args.output
    for folder in ("cells", "cache"):
        (output / folder).mkdir(parents=True, exist_ok=True)
    results = []
    for seed in range(args.seeds):
        run = Seed(args, seed, output / "cache")
        for strategy in args.strategies:
            for cell in run_cell(run, strategy, args, output / "cells"):
                row = {"seed": seed, "strategy": strategy, "round": cell["round"], "labels": cell["labels"]}
                row |= {"accuracy": cell["accuracy"], "select_seconds": round(cell["select_seconds"], 3)}
                results.append(row)
    timings = [] if args.no_timing else timing(args, output / "timing.csv")
    write_reports(results, timings, args, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
