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
from nt_pntk._src.experiments.validation.config import RENAMED_SWEEP_KEYS, Cell, Config
from nt_pntk._src.experiments.validation.metrics import EXPECTED_SLOPES, cell_columns, measure_cell

RESULTS_CSV = "results.csv"
CONFIG_JSON = "config.json"
#: The columns of every row, in order: the cell's identity, the phase, the metrics.
IDENTITY_COLUMNS = ("key", "sweep", "role", "architecture", "data", "width", "outputs", "seed")
ROW_COLUMNS = (*IDENTITY_COLUMNS, "phase", *EXPECTED_SLOPES)
#: Columns renamed, former name -> name: the rows of an older run's cell files are read under
#: the current names, with a `DeprecationWarning` (its `data` entry in `deprecations`: until 0.5.0).
RENAMED_COLUMNS = {"out": "outputs"}
#: The same for the [[sweep]] records of an older run's `config.json` (`config.RENAMED_SWEEP_KEYS`).
RENAMED_SWEEP_FIELDS = RENAMED_SWEEP_KEYS


def current_columns(table: pd.DataFrame, function: str) -> pd.DataFrame:
    """`table` (rows of `results.csv`, or `slopes.csv`) with its former column names replaced.

    A table of an older release, read from its CSV, has a former name (`RENAMED_COLUMNS`):
    `function` reads it under the current name with a `DeprecationWarning` (until the next
    release). A table with both names is a `ValueError`.
    """
    former = [old for old in RENAMED_COLUMNS if old in table.columns]
    if not former:
        return table
    both = [old for old in former if RENAMED_COLUMNS[old] in table.columns]
    if both:
        raise ValueError(
            f"{function}(): the table has both `{RENAMED_COLUMNS[both[0]]}` and its former name "
            f"`{both[0]}`; keep `{RENAMED_COLUMNS[both[0]]}` only."
        )
    names = ", ".join(f"`{old}`" for old in former)
    deprecations.warn_data(
        "validation table",
        former[0],
        f"{function}(): a table with the former column {names} (an older release's CSV)",
        stacklevel=3,
    )
    return table.rename(columns=RENAMED_COLUMNS)


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

    A file of an older run, whose rows have a former column name (`RENAMED_COLUMNS`), is read
    with the current names (`run_sweep` warns); the digest is checked on the rows as written.

    Raises:
      CellFileError: the file is unreadable, edited, from an older format or of another cell.
    """
    return _read_cell(path, cell)[0]


def _read_cell(path: Path, cell: Cell) -> tuple[list[dict], bool]:
    """`read_cell`'s rows, and whether the file had a former column name."""
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
    former = isinstance(rows, list) and any(isinstance(r, dict) and RENAMED_COLUMNS.keys() & r for r in rows)
    if former:
        rows = [_renamed(row, RENAMED_COLUMNS) if isinstance(row, dict) else row for row in rows]
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
    return rows, former


def _renamed(record: dict, renamed: dict[str, str]) -> dict:
    """`record` with each former key of `renamed` replaced by its new name, in its place."""
    return {renamed.get(k, k): v for k, v in record.items()}


#: Fields that only change the fits and the report, not what a cell measures: a finished
#: output directory can be re-reported with other values of these (no cell is measured again).
REPORT_FIELDS = ("bootstrap", "slope_band", "asymptotic_level", "fit_widths")


def _settings(cfg: Config) -> dict:
    """The configuration's measurement settings, as `config.json` records them."""
    settings = json.loads(json.dumps(dataclasses.asdict(cfg), default=list))
    return {k: v for k, v in settings.items() if k not in REPORT_FIELDS}


def _check_output_dir(cfg: Config, output: Path) -> tuple[bool, bool]:
    """Checks `output` before anything is written to it: whether its config stamp must be
    written, and whether the stamp has a former field name.

    Refuses a path that is not a directory, an unreadable stamp, and a stamp of a
    different configuration when cells are already there (results are never mixed). A stamp
    of an older run, with a former field name (`RENAMED_SWEEP_FIELDS`), is compared under
    the current names.
    """
    if output.exists() and not output.is_dir():
        raise OutDirError(
            f"`--output` {str(output)!r} is a file, not a directory; pass a directory (new or used)."
        )
    stamp = output / CONFIG_JSON
    if not stamp.exists():
        return True, False
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        why = None if isinstance(recorded, dict) else f"it holds a {type(recorded).__name__}, not an object"
    except (OSError, ValueError) as e:
        why = f"it is not readable JSON ({e})"
    if why is not None:
        raise OutDirError(
            f"`--output` {str(output)!r} has a corrupt configuration record {str(stamp)!r}: {why}. "
            f"Delete {str(stamp)!r} to resume with this configuration, or choose another `--output`."
        )
    sweeps = recorded.get("sweeps")
    former = isinstance(sweeps, list) and any(
        isinstance(s, dict) and RENAMED_SWEEP_FIELDS.keys() & s for s in sweeps
    )
    if former:
        sweeps = [_renamed(s, RENAMED_SWEEP_FIELDS) if isinstance(s, dict) else s for s in sweeps]
        recorded = {**recorded, "sweeps": sweeps}
    if recorded == _settings(cfg):
        return False, former
    if any((output / "cells").glob("*.json")):
        raise OutDirError(
            f"`--output` {str(output)!r} holds results of a different configuration "
            f"(see {stamp}); use a new directory or the same configuration to resume."
        )
    return True, False  # a stamp without results (a run that failed before its first cell): replace it


def _warn_former_names(output: Path, cells: int, stamp: bool) -> None:
    """One `DeprecationWarning` for an output directory of an older run, read under the current names."""
    where = [f"the column `{old}` in {cells} cell files" for old in RENAMED_COLUMNS] if cells else []
    where += [f"the field `{old}` in {CONFIG_JSON}" for old in RENAMED_SWEEP_FIELDS] if stamp else []
    deprecations.warn_data(
        "validation output",
        "out",
        f"`--output` {str(output)!r} holds results of an older release ({' and '.join(where)}), read "
        "under the current names: reading the former names",
        stacklevel=2,
    )


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
    output = Path(deprecations.renamed("run_sweep", "out", out, "output", output, required=True))
    write_stamp, former_stamp = _check_output_dir(cfg, output)
    cells_dir = output / "cells"
    try:
        cells_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutDirError(f"`--output` {str(output)!r}: cannot create {str(cells_dir)!r} ({e}).") from None
    if write_stamp:
        files.atomic_write(output / CONFIG_JSON, json.dumps(_settings(cfg), sort_keys=True, indent=1))

    cells = cfg.cells()
    rows_of: dict[str, list[dict]] = {}
    todo = []
    former_cells = 0
    for cell in cells:
        path = cells_dir / f"{cell.key}.json"
        if not path.exists():
            todo.append(cell)
            continue
        try:
            rows_of[cell.key], former = _read_cell(path, cell)
            former_cells += former
        except CellFileError as e:
            print(
                f"nt-pntk validate: {path} failed its check: {e}; measuring that cell again.", file=sys.stderr
            )
            todo.append(cell)
    if former_cells or former_stamp:
        _warn_former_names(output, former_cells, former_stamp)
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
    files.atomic_write(output / RESULTS_CSV, table.to_csv(index=False))
    return table
