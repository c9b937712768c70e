"""Sweep configurations: TOML files a user can copy and edit, checked before any work."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import inspect
import itertools
import math
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from nt_pntk._src.experiments import models

#: The configurations shipped with the package (`--config quick|paper|ci`).
CONFIG_PACKAGE = "nt_pntk._src.experiments.validation.configs"
DATASETS = ("digits", "synthetic")
PHASES = ("init", "trained")
#: Every key a configuration's top level and each [[sweep]] table may have; any other is an error.
TOP_LEVEL_KEYS = (
    "name",
    "seeds",
    "n_train",
    "n_test",
    "ridge",
    "train_steps",
    "learning_rate",
    "bootstrap",
    "slope_band",
    "sweep",
)
SWEEP_KEYS = ("architecture", "widths", "outs", "data", "options", "n_train", "n_test", "implementation")


class ConfigError(ValueError):
    """A configuration field is missing or invalid; the message names the field."""

    exit_code = 2  # a usage error: the command line's wrapper exits with 2


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One architecture swept over widths (and output counts) on one dataset."""

    architecture: str
    widths: tuple[int, ...]
    outs: tuple[int, ...]
    data: str = "digits"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    n_train: int | None = None  # None: the configuration's
    n_test: int | None = None
    implementation: int = 3  # NT implementation for both kernels; 3 keeps memory lowest


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work: a network at one width, O and seed, measured at init and trained."""

    architecture: str
    width: int
    out: int
    data: str
    seed: int
    options: tuple[tuple[str, Any], ...]
    n_train: int
    n_test: int
    implementation: int

    @property
    def key(self) -> str:
        opts = "".join(f"_{k}{v}" for k, v in self.options)
        return (
            f"{self.architecture}{opts}_{self.data}_n{self.n_train}+{self.n_test}"
            f"_w{self.width}_o{self.out}_s{self.seed}"
        )


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    seeds: int
    n_train: int
    n_test: int
    ridge: float
    train_steps: int
    learning_rate: float
    bootstrap: int
    slope_band: tuple[float, float]
    sweeps: tuple[Sweep, ...]

    def cells(self) -> list[Cell]:
        """Every cell of the configuration, in a fixed order (widest last)."""
        cells = []
        for sweep in self.sweeps:
            options = tuple(sorted(sweep.options.items()))
            n_train = sweep.n_train or self.n_train
            n_test = sweep.n_test or self.n_test
            for width, out, seed in itertools.product(sweep.widths, sweep.outs, range(self.seeds)):
                cells.append(
                    Cell(
                        sweep.architecture,
                        width,
                        out,
                        sweep.data,
                        seed,
                        options,
                        n_train,
                        n_test,
                        sweep.implementation,
                    )
                )
        return cells


def shipped_configs() -> dict[str, Any]:
    """The configurations shipped inside the package: name -> `importlib.resources` file."""
    return {
        entry.name.removesuffix(".toml"): entry
        for entry in importlib.resources.files(CONFIG_PACKAGE).iterdir()
        if entry.name.endswith(".toml")
    }


def resolve(config: str) -> Any:
    """`config` as a file: a path to a TOML file, or the name of a shipped configuration."""
    path = Path(config)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"`--config` file {config!r} does not exist (or is not a file).")
        return path
    shipped = shipped_configs()
    if config not in shipped:
        raise ConfigError(
            f"`--config` must be one of {sorted(shipped)} or a path to a .toml file; got {config!r}."
        )
    return shipped[config]


def load(config: str) -> Config:
    """Reads and validates a configuration by name or path.

    Raises:
      ConfigError: naming the file and line of a TOML syntax error, or the first bad field.
    """
    path = resolve(config)
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        # tomllib's message carries the line and column.
        raise ConfigError(f"`--config` file {str(path)!r} is not valid TOML: {e}.") from None
    return parse(raw, default_name=Path(path.name).stem)


def parse(raw: dict[str, Any], default_name: str = "custom") -> Config:
    """Validates a configuration dictionary (the parsed TOML).

    Every key must be known (top level, each [[sweep]] table and its `options`),
    every number must be a number (not a bool) in range, and every sweep's model
    is built (no parameters are initialized) so that bad builder options stop here.

    Raises:
      ConfigError: naming the first bad field, what it got and what would work.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"A configuration must be a table of fields; got {raw!r}.")
    _check_keys(raw, TOP_LEVEL_KEYS, "", "the top level of the configuration")
    sweeps_raw = _field(raw, "sweep", list)
    if not sweeps_raw:
        raise ConfigError("`sweep` must list at least one [[sweep]] table.")
    sweeps = tuple(_parse_sweep(s, f"sweep[{i}]") for i, s in enumerate(sweeps_raw))
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"`name` must be a non-empty string; got {name!r}.")
    cfg = Config(
        name=name,
        seeds=_positive(raw, "seeds", int, 5),
        n_train=_positive(raw, "n_train", int, 64),
        n_test=_positive(raw, "n_test", int, 64),
        ridge=_positive(raw, "ridge", float, 1e-3),
        train_steps=_nonnegative_int(raw, "train_steps", 100),
        learning_rate=_positive(raw, "learning_rate", float, 0.5),
        bootstrap=_positive(raw, "bootstrap", int, 1000),
        slope_band=_slope_band(raw.get("slope_band", [-0.65, -0.35])),
        sweeps=sweeps,
    )
    for where, n_train, n_test in [("", cfg.n_train, cfg.n_test)] + [
        (f"sweep[{i}].", s.n_train or cfg.n_train, s.n_test or cfg.n_test) for i, s in enumerate(sweeps)
    ]:
        if n_train + n_test > 1797:
            raise ConfigError(
                f"`{where}n_train` + `{where}n_test` must be at most 1797 (the digits); "
                f"got {n_train + n_test}."
            )
    return cfg


def _check_keys(raw: dict, known: tuple[str, ...] | list[str], prefix: str, where: str) -> None:
    """An unknown key is an error naming it, where it is, the closest known key and all of them."""
    for key in raw:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ConfigError(
            f"`{prefix}{key}` is not a known key of {where}.{hint} Known keys: {', '.join(known)}."
        )


def _builder_options(architecture: str) -> list[str]:
    """The zoo builder's keyword options (everything after `width` and `out`)."""
    parameters = inspect.signature(models.MODELS[architecture]).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _parse_sweep(raw: Any, where: str) -> Sweep:
    if not isinstance(raw, dict):
        raise ConfigError(f"`{where}` must be a table; got {raw!r}.")
    _check_keys(raw, SWEEP_KEYS, f"{where}.", f"a [[sweep]] table ({where})")
    arch = _field(raw, "architecture", str, where)
    if arch not in models.MODELS:
        raise ConfigError(f"`{where}.architecture` must be one of {sorted(models.MODELS)}; got {arch!r}.")
    widths = _int_list(raw, "widths", where)
    if any(b <= a for a, b in itertools.pairwise(widths)):
        raise ConfigError(f"`{where}.widths` must be strictly increasing; got {list(widths)}.")
    outs = _int_list(raw, "outs", where)
    data = raw.get("data", "digits")
    if data not in DATASETS:
        raise ConfigError(f"`{where}.data` must be one of {DATASETS}; got {data!r}.")
    options = _options(raw.get("options", {}), arch, widths[0], outs[0], where)
    sizes = {}
    for name in ("n_train", "n_test"):
        if name in raw:
            sizes[name] = _positive(raw, name, int, None, where)
    implementation = raw.get("implementation", 3)
    if (
        isinstance(implementation, bool)
        or not isinstance(implementation, int)
        or implementation not in (1, 2, 3)
    ):
        raise ConfigError(
            f"`{where}.implementation` must be the integer 1, 2 or 3 (an NT implementation); "
            f"got {implementation!r}."
        )
    return Sweep(arch, widths, outs, data, options, implementation=implementation, **sizes)


def _options(options: Any, arch: str, width: int, out: int, where: str) -> dict[str, Any]:
    """The builder's options, checked by name, type, and by building the first cell's model."""
    label = f"{where}.options"
    if not isinstance(options, dict):
        raise ConfigError(f"`{label}` must be a table of builder options; got {options!r}.")
    known = _builder_options(arch)
    builder = f"the {arch!r} builder (nt_pntk.models.{models.MODELS[arch].__name__})"
    if options and not known:
        raise ConfigError(f"`{label}` must be empty: {builder} takes no options; got {options!r}.")
    _check_keys(options, known, f"{label}.", builder)
    for key, value in options.items():
        # Every zoo option counts layers, blocks or groups (a bool would pass as 0 or 1).
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"`{label}.{key}` must be an integer >= 1; got {value!r}.")
    try:
        # Builds the stax layers only (no parameters): cheap, and catches what the builder refuses.
        models.get_model(arch, width=width, outputs=out, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"`{label}` = {options!r} does not build a {arch!r} model: {e}") from None
    return dict(options)


def _field(raw: dict, name: str, kind: type, where: str = "") -> Any:
    label = f"{where}.{name}" if where else name
    if name not in raw:
        raise ConfigError(f"`{label}` is missing.")
    if not isinstance(raw[name], kind):
        raise ConfigError(f"`{label}` must be a {kind.__name__}; got {raw[name]!r}.")
    return raw[name]


def _int_list(raw: dict, name: str, where: str) -> tuple[int, ...]:
    values = _field(raw, name, list, where)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ConfigError(f"`{where}.{name}` must be a non-empty list of integers >= 1; got {values!r}.")
    return tuple(values)


def _is_number(value: Any) -> bool:
    """A finite int or float; a bool is not a number here (True == 1 in Python)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _positive(raw: dict, name: str, kind: type, default: Any, where: str = "") -> Any:
    label = f"{where}.{name}" if where else name
    value = raw.get(name, default)
    if not _is_number(value) or value <= 0:
        raise ConfigError(f"`{label}` must be a positive finite number; got {value!r}.")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"`{label}` must be an integer; got {value!r}.")
    return kind(value)


def _nonnegative_int(raw: dict, name: str, default: int) -> int:
    value = raw.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"`{name}` must be an integer >= 0; got {value!r}.")
    return value


def _slope_band(band: Any) -> tuple[float, float]:
    if (
        not isinstance(band, (list, tuple))
        or len(band) != 2
        or not all(_is_number(b) for b in band)
        or not band[0] < band[1]
    ):
        raise ConfigError(
            f"`slope_band` must be [low, high], two finite numbers with low < high; got {band!r}."
        )
    return float(band[0]), float(band[1])
