"""Runs a configuration's cells with resume: each finished cell is a checked file on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from nt_pntk._src import checks, deprecations, files
from nt_pntk._src.experiments.validation.config import Cell, Config
from nt_pntk._src.experiments.validation.metrics import EXPECTED_SLOPES, cell_columns, measure_cell

RESULTS_CSV = "results.csv"
CONFIG_JSON = "config.json"
#: The columns of every row, in order: the cell's identity, the phase, the metrics.
IDENTITY_COLUMNS = ("key", "sweep", "role", "architecture", "data", "width", "out", "seed")
ROW_COLUMNS = (*IDENTITY_COLUMNS, "phase", *EXPECTED_SLOPES)


class OutDirError(checks.UsageError):
    """`--output` cannot hold this run's results; the message says why and what to do (a usage
    error, exit code 2: the fix is another `--output`, or removing a file in it)."""


class CellFileError(ValueError):
    """A cell file on disk is not what this cell's measurement wrote."""


def _canonical(rows: Any) -> str:
    return json.dumps(rows, sort_keys=True, separators=(",", ":"))


def _digest(rows: Any) -> str:
    return hashlib.blake2b(_canonical(rows).encode(), digest_size=16).hexdigest()


def cell_text(cell: Cell, rows: list[dict], seconds: float) -> str:
    """A cell file's contents: the cell's key, its rows, a digest of them and the measurement's seconds."""
    return json.dumps({"key": cell.key, "digest": _digest(rows), "rows": rows, "seconds": round(seconds, 3)})


def measured_seconds(cfg: Config, output: str | os.PathLike) -> float:
    """The seconds the measurements of `cfg`'s cells in `output` took, summed (after `run_sweep`)."""
    total = 0.0
    for cell in cfg.cells():
        stored = json.loads((Path(output) / "cells" / f"{cell.key}.json").read_text(encoding="utf-8"))
        total += float(stored["seconds"])
    return total


def read_cell(path: Path, cell: Cell) -> list[dict]:
    """The rows of `cell` from its file, checked against the cell and the digest.

    Raises:
      CellFileError: the file is unreadable, edited, from an older format or of another cell.
    """
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CellFileError(f"unreadable ({e})") from None
    if not isinstance(stored, dict) or set(stored) != {"key", "digest", "rows", "seconds"}:
        raise CellFileError("not a cell file of this version (a table of `key`, `digest`, `rows`, `seconds`)")
    seconds = stored["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise CellFileError(f"its `seconds` must be a number >= 0; got {seconds!r}")
    if stored["key"] != cell.key:
        raise CellFileError(f"holds cell {stored['key']!r}, not {cell.key!r}")
    rows = stored["rows"]
    if stored["digest"] != _digest(rows):
        raise CellFileError("its rows do not match its digest (edited after it was written)")
    identity = cell_columns(cell)
    if not isinstance(rows, list) or len(rows) != len(cell.phases):
        raise CellFileError(f"must hold {len(cell.phases)} rows, one per phase {cell.phases}")
    for phase, row in zip(cell.phases, rows, strict=True):
        if not isinstance(row, dict) or tuple(row) != ROW_COLUMNS:
            raise CellFileError(f"its {phase!r} row does not have the columns {list(ROW_COLUMNS)}")
        if {k: row[k] for k in identity} != identity or row["phase"] != phase:
            raise CellFileError(f"its {phase!r} row is not of this cell and phase: {row}")
        if any(isinstance(row[m], bool) or not isinstance(row[m], (int, float)) for m in EXPECTED_SLOPES):
            raise CellFileError(f"its {phase!r} row has a metric that is not a number: {row}")
    return rows


#: Fields that only change the fits and the report, not what a cell measures: a finished
#: output directory can be re-reported with other values of these (no cell is measured again).
REPORT_FIELDS = ("bootstrap", "slope_band", "asymptotic_level", "fit_widths")


def _settings(cfg: Config) -> dict:
    """The configuration's measurement settings, as `config.json` records them."""
    settings = json.loads(json.dumps(dataclasses.asdict(cfg), default=list))
    return {k: v for k, v in settings.items() if k not in REPORT_FIELDS}


def _check_output_dir(cfg: Config, out: Path) -> bool:
    """Checks `out` before anything is written to it; True when its config stamp must be written.

    Refuses a path that is not a directory, an unreadable stamp, and a stamp of a
    different configuration when cells are already there (results are never mixed).
    """
    if out.exists() and not out.is_dir():
        raise OutDirError(
            f"`--output` {str(out)!r} is a file, not a directory; pass a directory (new or used)."
        )
    stamp = out / CONFIG_JSON
    if not stamp.exists():
        return True
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        why = None if isinstance(recorded, dict) else f"it holds a {type(recorded).__name__}, not an object"
    except (OSError, ValueError) as e:
        why = f"it is not readable JSON ({e})"
    if why is not None:
        raise OutDirError(
            f"`--output` {str(out)!r} has a corrupt configuration record {str(stamp)!r}: {why}. "
            f"Delete {str(stamp)!r} to resume with this configuration, or choose another `--output`."
        )
    if recorded == _settings(cfg):
        return False
    if any((out / "cells").glob("*.json")):
        raise OutDirError(
            f"`--output` {str(out)!r} holds results of a different configuration "
            f"(see {stamp}); use a new directory or the same configuration to resume."
        )
    return True  # a stamp without results (a run that failed before its first cell): replace it


def run_sweep(
    cfg: Config,
    output: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    out: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Measures every cell of `cfg` not already in `output/cells/`, then collects all rows.

    Killing the run loses at most the cell in progress; running again with the
    same `output` resumes, and the collected table equals an uninterrupted run's.
    A cell file that fails its check (`read_cell`) is reported on stderr and
    measured again, never merged.

    Args:
      cfg: the configuration.
      output: the results' directory (``out``, its former name, is deprecated).
      progress: show a progress bar.

    Returns:
      The results, one row per (cell, phase), also written to `output/results.csv`.

    Raises:
      OutDirError: `output` is a file, or holds another configuration's results or a corrupt record.
    """
    out = Path(deprecations.renamed("run_sweep", "out", out, "output", output, required=True))
    write_stamp = _check_output_dir(cfg, out)
    cells_dir = out / "cells"
    try:
        cells_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutDirError(f"`--output` {str(out)!r}: cannot create {str(cells_dir)!r} ({e}).") from None
    if write_stamp:
        files.atomic_write(out / CONFIG_JSON, json.dumps(_settings(cfg), sort_keys=True, indent=1))

    cells = cfg.cells()
    rows_of: dict[str, list[dict]] = {}
    todo = []
    for cell in cells:
        path = cells_dir / f"{cell.key}.json"
        if not path.exists():
            todo.append(cell)
            continue
        try:
            rows_of[cell.key] = read_cell(path, cell)
        except CellFileError as e:
            print(
                f"nt-pntk validate: {path} failed its check: {e}; measuring that cell again.", file=sys.stderr
            )
            todo.append(cell)
    # Seed by seed across the sweeps: a run cut short has every sweep's widths, with fewer seeds.
    todo.sort(key=lambda c: c.seed)
    bar = tqdm(
        total=len(cells), initial=len(cells) - len(todo), desc="cells", unit="cell", disable=not progress
    )
    for cell in todo:
        bar.set_postfix_str(cell.key)
        path = cells_dir / f"{cell.key}.json"
        start = time.perf_counter()
        rows = measure_cell(cell, cfg)
        files.atomic_write(path, cell_text(cell, rows, time.perf_counter() - start))
        try:  # read back as a resumed run would: the same numbers, and a check of the measurement's rows
            rows_of[cell.key] = read_cell(path, cell)
        except CellFileError as e:
            raise RuntimeError(
                f"the measurement of cell {cell.key} wrote a bad cell file {path}: {e}"
            ) from None
        bar.update()
    bar.close()

    table = pd.DataFrame([row for c in cells for row in rows_of[c.key]])
    files.atomic_write(out / RESULTS_CSV, table.to_csv(index=False))
    return table
