"""Sweep configurations: TOML files a user can copy and edit, checked before any work."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from nt_pntk import models

#: Where `--config NAME` looks: the repository's `validation/configs/`.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "validation" / "configs"
DATASETS = ("digits", "synthetic")
PHASES = ("init", "trained")


class ConfigError(ValueError):
    """A configuration field is missing or invalid; the message names the field."""


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


def resolve(config: str) -> Path:
    """`config` as a path: a TOML file, or a name in `validation/configs/`."""
    path = Path(config)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"`--config` file {config!r} does not exist.")
        return path
    named = CONFIG_DIR / f"{config}.toml"
    if not named.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
        raise ConfigError(f"`--config` must be one of {names} or a path to a .toml file; got {config!r}.")
    return named


def load(config: str) -> Config:
    """Reads and validates a configuration by name or path.

    Raises:
      ConfigError: naming the first bad field.
    """
    path = resolve(config)
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    return parse(raw, default_name=path.stem)


def parse(raw: dict[str, Any], default_name: str = "custom") -> Config:
    """Validates a configuration dictionary (the parsed TOML)."""
    sweeps_raw = _field(raw, "sweep", list)
    if not sweeps_raw:
        raise ConfigError("`sweep` must list at least one [[sweep]] table.")
    sweeps = tuple(_parse_sweep(s, f"sweep[{i}]") for i, s in enumerate(sweeps_raw))
    band = tuple(float(b) for b in raw.get("slope_band", (-0.65, -0.35)))
    if len(band) != 2 or not band[0] < band[1]:
        raise ConfigError(f"`slope_band` must be [low, high] with low < high; got {band!r}.")
    cfg = Config(
        name=str(raw.get("name", default_name)),
        seeds=_positive(raw, "seeds", int, 5),
        n_train=_positive(raw, "n_train", int, 64),
        n_test=_positive(raw, "n_test", int, 64),
        ridge=_positive(raw, "ridge", float, 1e-3),
        train_steps=_nonnegative_int(raw, "train_steps", 100),
        learning_rate=_positive(raw, "learning_rate", float, 0.5),
        bootstrap=_positive(raw, "bootstrap", int, 1000),
        slope_band=band,
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


def _parse_sweep(raw: Any, where: str) -> Sweep:
    if not isinstance(raw, dict):
        raise ConfigError(f"`{where}` must be a table; got {raw!r}.")
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
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"`{where}.options` must be a table of builder options; got {options!r}.")
    sizes = {}
    for name in ("n_train", "n_test"):
        if name in raw:
            sizes[name] = _positive(raw, name, int, None, where)
    implementation = raw.get("implementation", 3)
    if implementation not in (1, 2, 3):
        raise ConfigError(
            f"`{where}.implementation` must be 1, 2 or 3 (an NT implementation); got {implementation!r}."
        )
    return Sweep(arch, widths, outs, data, dict(options), implementation=implementation, **sizes)


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


def _positive(raw: dict, name: str, kind: type, default: Any, where: str = "") -> Any:
    label = f"{where}.{name}" if where else name
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"`{label}` must be a positive number; got {value!r}.")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"`{label}` must be an integer; got {value!r}.")
    return kind(value)


def _nonnegative_int(raw: dict, name: str, default: int) -> int:
    value = raw.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"`{name}` must be an integer >= 0; got {value!r}.")
    return value
