"""Runs a configuration's cells with resume: each finished cell is a file on disk."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from nt_pntk.validation.config import Config
from nt_pntk.validation.metrics import measure_cell

RESULTS_CSV = "results.csv"


def _write_atomic(path: Path, text: str) -> None:
    """Write-then-rename, so a killed run never leaves a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_out_dir(cfg: Config, out: Path) -> None:
    """Refuses to mix cells of different configurations in one `--out`."""
    stamp = out / "config.json"
    settings = json.dumps(dataclasses.asdict(cfg), sort_keys=True, indent=1, default=list)
    if stamp.exists():
        if json.loads(stamp.read_text()) != json.loads(settings):
            raise ValueError(
                f"`--out` {str(out)!r} holds results of a different configuration "
                f"(see {stamp}); use a new directory or the same configuration to resume."
            )
    else:
        _write_atomic(stamp, settings)


def run_sweep(cfg: Config, out: str | os.PathLike, *, progress: bool = True) -> pd.DataFrame:
    """Measures every cell of `cfg` not already in `out/cells/`, then collects all rows.

    Killing the run loses at most the cell in progress; running again with the
    same `out` resumes, and the collected table equals an uninterrupted run's.

    Returns:
      The results, one row per (cell, phase), also written to `out/results.csv`.
    """
    out = Path(out)
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    _check_out_dir(cfg, out)

    cells = cfg.cells()
    todo = [c for c in cells if not (cells_dir / f"{c.key}.json").exists()]
    bar = tqdm(
        total=len(cells), initial=len(cells) - len(todo), desc="cells", unit="cell", disable=not progress
    )
    for cell in todo:
        bar.set_postfix_str(cell.key)
        rows = measure_cell(cell, cfg)
        _write_atomic(cells_dir / f"{cell.key}.json", json.dumps(rows))
        bar.update()
    bar.close()

    rows = [row for c in cells for row in json.loads((cells_dir / f"{c.key}.json").read_text())]
    table = pd.DataFrame(rows)
    _write_atomic(out / RESULTS_CSV, table.to_csv(index=False))
    return table
