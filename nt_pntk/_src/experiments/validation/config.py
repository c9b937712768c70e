"""Sweep configurations: TOML files a user can copy and edit, checked before any work."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import itertools
import math
import re
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from nt_pntk._src import checks, deprecations, measure
from nt_pntk._src.experiments import models

#: The configurations shipped with the package (`--config quick|paper|ci`).
CONFIG_PACKAGE = "nt_pntk._src.experiments.validation.configs"
DATASETS = ("digits", "synthetic")
PHASES = ("init", "trained")
#: What a sweep varies: the zoo's `width` (the whole network), or the width of the readout's input
#: alone (a builder's `readout_width` option) with the body's `width` fixed.
VARIES = ("width", "readout_width")
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
    "asymptotic_level",
    "fit_widths",
    "block",
    "sweep",
)
SWEEP_KEYS = (
    "label",
    "architecture",
    "vary",
    "width",
    "widths",
    "outputs",
    "data",
    "options",
    "seeds",
    "phases",
    "n_train",
    "n_test",
    "implementation",
)
#: Keys of a [[sweep]] table renamed: the former name (key) is still read, with a
#: `DeprecationWarning` naming the new one (its `data` entry in `deprecations`: until 0.5.0).
RENAMED_SWEEP_KEYS = {"outs": "outputs"}
#: Inputs of every dataset: 8×8×1 images (the digits, and the synthetic data of the same shape).
INPUT_SHAPE = (-1, 8, 8, 1)
#: Bootstrap resamples at most: the intervals' percentiles are settled long before, and the
#: O-scaling fit resamples in a Python loop (a million resamples are minutes per sweep).
MAX_BOOTSTRAP = 100_000
#: Gradient-descent steps at most: each is one compiled call, a million are hours per cell.
MAX_TRAIN_STEPS = 1_000_000
#: Cells (widths × outputs × seeds, over the sweeps) at most: the paper's configuration has 342,
#: and each takes seconds to minutes.
MAX_CELLS = 100_000
LABEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class ConfigError(checks.UsageError):
    """A configuration field is missing or invalid; the message names the field (a usage error:
    exit code 2)."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One architecture swept over widths (and output counts) on one dataset."""

    architecture: str
    widths: tuple[int, ...]
    outputs: tuple[int, ...]
    data: str = "digits"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    n_train: int | None = None  # None: the configuration's
    n_test: int | None = None
    implementation: int = 3  # NT implementation for both kernels; 3 keeps memory lowest
    label: str = ""  # "": `default_label`
    vary: str = "width"
    width: int | None = None  # the fixed body width when `vary` is not "width"
    seeds: int | None = None  # None: the configuration's
    phases: tuple[str, ...] = PHASES

    @property
    def role(self) -> str:
        return role(self.vary, self.options)


def role(vary: str, options: Any) -> str:
    """ "readout" when the readout's input width is swept, "body" when it is fixed and the body swept."""
    if vary == "readout_width":
        return "readout"
    return "body" if "readout_width" in dict(options) else "theorem"


def default_label(sweep: Sweep) -> str:
    """The architecture, then what sets the sweep apart: `cnn`, `fc-synthetic`, `cnn-readout-body8`."""
    label = sweep.architecture + ("" if sweep.data == "digits" else f"-{sweep.data}")
    if sweep.role == "readout":
        label += f"-readout-body{sweep.width}"
    elif sweep.role == "body":
        label += f"-body-readout{sweep.options['readout_width']}"
    return label


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work: a network at one width, O and seed, measured at init (and trained).

    `width` is the swept value: the network's width, or the readout's input width when
    `vary` is "readout_width" (the body's width is then `fixed_width`).
    """

    architecture: str
    width: int
    outputs: int
    data: str
    seed: int
    options: tuple[tuple[str, Any], ...]
    n_train: int
    n_test: int
    implementation: int
    label: str = ""
    vary: str = "width"
    fixed_width: int | None = None
    phases: tuple[str, ...] = PHASES
    block: int = 16

    @property
    def key(self) -> str:
        opts = "".join(f"_{k}{v}" for k, v in self.options)
        body = "" if self.fixed_width is None else f"_width{self.fixed_width}"
        return (
            f"{self.label or self.architecture}{opts}{body}_{self.data}"
            f"_n{self.n_train}+{self.n_test}_{self.vary}{self.width}_o{self.outputs}_s{self.seed}"
        )

    @property
    def role(self) -> str:
        return role(self.vary, self.options)

    def model_arguments(self) -> dict[str, Any]:
        """`models.get_model`'s keyword arguments for this cell's network (all but `outputs`)."""
        if self.vary == "width":
            return {"width": self.width, **dict(self.options)}
        return {"width": self.fixed_width, **dict(self.options), self.vary: self.width}


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
    asymptotic_level: float = 0.2
    fit_widths: int = 3
    block: int = 16

    def cells(self) -> list[Cell]:
        """Every cell of the configuration, in a fixed order (widest last within a sweep)."""
        cells = []
        for sweep in self.sweeps:
            options = tuple(sorted(sweep.options.items()))
            n_train = sweep.n_train or self.n_train
            n_test = sweep.n_test or self.n_test
            seeds = range(sweep.seeds or self.seeds)
            for width, outputs, seed in itertools.product(sweep.widths, sweep.outputs, seeds):
                cells.append(
                    Cell(
                        sweep.architecture,
                        width,
                        outputs,
                        sweep.data,
                        seed,
                        options,
                        n_train,
                        n_test,
                        sweep.implementation,
                        label=sweep.label or default_label(sweep),
                        vary=sweep.vary,
                        fixed_width=sweep.width,
                        phases=sweep.phases,
                        block=self.block,
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
    sweeps_raw = _renamed_keys(sweeps_raw)
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
        learning_rate=_learning_rate(raw.get("learning_rate", 0.5)),
        bootstrap=_positive(raw, "bootstrap", int, 1000),
        slope_band=_slope_band(raw.get("slope_band", [-0.65, -0.35])),
        asymptotic_level=_positive(raw, "asymptotic_level", float, 0.2),
        fit_widths=_positive(raw, "fit_widths", int, 3),
        block=_positive(raw, "block", int, 16),
        sweeps=sweeps,
    )
    if cfg.fit_widths < 2:
        raise ConfigError(
            f"`fit_widths` must be at least 2 (a slope needs two widths); got {cfg.fit_widths}."
        )
    for where, n_train, n_test in [("", cfg.n_train, cfg.n_test)] + [
        (f"sweep[{i}].", s.n_train or cfg.n_train, s.n_test or cfg.n_test) for i, s in enumerate(sweeps)
    ]:
        if n_train + n_test > 1797:
            raise ConfigError(
                f"`{where}n_train` + `{where}n_test` must be at most 1797 (the digits); "
                f"got {n_train + n_test}."
            )
    _check_work(cfg)
    labels: dict[str, int] = {}
    for i, s in enumerate(sweeps):
        label = s.label or default_label(s)
        if label in labels:
            raise ConfigError(
                f"`sweep[{i}].label` must differ from every other sweep's; got {label!r}, also "
                f"sweep[{labels[label]}]'s (set `label` in one of them)."
            )
        labels[label] = i
    for i, s in enumerate(sweeps):
        _check_memory(cfg, s, f"sweep[{i}]")
    return cfg


def _renamed_keys(sweeps: list) -> list:
    """The [[sweep]] tables with each former key (`RENAMED_SWEEP_KEYS`) under its new name.

    One `DeprecationWarning` per former key, naming the tables that use it; a table with both
    names is an error.
    """
    for old, new in RENAMED_SWEEP_KEYS.items():
        users = [i for i, s in enumerate(sweeps) if isinstance(s, dict) and old in s]
        if not users:
            continue
        for i in users:
            if new in sweeps[i]:
                raise ConfigError(
                    f"`sweep[{i}].{old}` is the former name of `sweep[{i}].{new}`; give `{new}` only."
                )
        tables = ", ".join(f"sweep[{i}]" for i in users)
        deprecations.warn_data(
            "validation configuration", old, f"The [[sweep]] key `{old}` ({tables})", stacklevel=3
        )
        sweeps = [
            {(new if k == old else k): v for k, v in s.items()} if i in users else s
            for i, s in enumerate(sweeps)
        ]
    return sweeps


def _learning_rate(value: Any) -> float:
    """A fraction of gradient descent's stability limit: in (0, 1)."""
    if not _is_number(value) or not 0 < value < 1:
        raise ConfigError(
            "`learning_rate` must be a number in (0, 1): the step is this fraction of gradient "
            "descent's stability limit 2·n_train/λmax(pNTK), and at 1 or more training diverges; "
            f"got {value!r}."
        )
    return float(value)


def _check_work(cfg: Config) -> None:
    """Refuses amounts of work that would not finish: cells, training steps, resamples."""
    cells = sum(
        len(s.widths) * len(s.outputs) * (s.seeds or cfg.seeds) for s in cfg.sweeps
    )  # counted, not listed: `cfg.cells()` of a billion seeds would itself exhaust the memory
    if cells > MAX_CELLS:
        raise ConfigError(
            f"The configuration has {cells:,} cells (widths × outputs × seeds, summed over the sweeps), "
            f"more than the {MAX_CELLS:,} a run may have; lower `seeds` or shorten `widths` and `outputs`."
        )
    if cfg.train_steps > MAX_TRAIN_STEPS:
        raise ConfigError(
            f"`train_steps` must be at most {MAX_TRAIN_STEPS:,} (each step is one compiled call); "
            f"got {cfg.train_steps:,}."
        )
    if cfg.bootstrap > MAX_BOOTSTRAP:
        raise ConfigError(
            f"`bootstrap` must be at most {MAX_BOOTSTRAP:,} resamples (the intervals are settled "
            f"long before; more only cost time and memory after every cell was measured); got "
            f"{cfg.bootstrap:,}."
        )


def cell_memory(cfg: Config, sweep: Sweep, width: int, outputs: int) -> dict[str, int]:
    """Bytes that a cell of `sweep` at `width` and `outputs` needs at the least, by what holds them.

    ``"parameters"``: the parameters (three copies while training: the parameters, their
    gradient and the step's result); ``"kernels"``: the float64 eNTK (N, N, O, O) and pNTK
    (N, N) that the metrics read, N = n_train + n_test. A lower bound: Jacobian blocks and
    XLA's temporaries come on top.
    """
    arguments = {"width": width} if sweep.vary == "width" else {"width": sweep.width, sweep.vary: width}
    model = models.get_model(sweep.architecture, outputs=outputs, **sweep.options, **arguments)
    copies = 3 if "trained" in sweep.phases else 1
    n = (sweep.n_train or cfg.n_train) + (sweep.n_test or cfg.n_test)
    return {
        "parameters": copies * models.parameter_bytes(model.init_fn, INPUT_SHAPE),
        "kernels": 8 * n * n * (outputs * outputs + 1),
    }


def _check_memory(cfg: Config, sweep: Sweep, where: str) -> None:
    """Refuses a sweep whose largest cell cannot fit in this machine's memory, naming the option."""
    width, outputs = max(sweep.widths), max(sweep.outputs)
    need = cell_memory(cfg, sweep, width, outputs)
    memory = measure.physical_memory_bytes()
    if sum(need.values()) <= memory:
        return
    gib = 2**30
    parts = (
        f"parameters {need['parameters'] / gib:.3g} GiB, the eNTK and pNTK of "
        f"N = n_train + n_test inputs {need['kernels'] / gib:.3g} GiB"
    )
    if need["kernels"] >= need["parameters"]:
        fix = f"lower `{where}.outputs` (the eNTK grows as O²), or `n_train` and `n_test`"
        named = f"`{where}.outputs` = {list(sweep.outputs)}"
    else:
        fix = f"lower `{where}.widths` or the options that widen the network"
        named = f"`{where}.widths` = {list(sweep.widths)}"
    raise ConfigError(
        f"{named}: the cell of width {width:,} and O = {outputs:,} needs at least "
        f"{sum(need.values()) / gib:.3g} GiB ({parts}), more than this machine's "
        f"{memory / gib:.3g} GiB of memory; {fix}."
    )


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
    outputs = _int_list(raw, "outputs", where)
    data = raw.get("data", "digits")
    if data not in DATASETS:
        raise ConfigError(f"`{where}.data` must be one of {DATASETS}; got {data!r}.")
    vary = raw.get("vary", "width")
    if vary not in VARIES:
        raise ConfigError(f"`{where}.vary` must be one of {VARIES}; got {vary!r}.")
    fixed_width = None
    if vary == "width":
        if "width" in raw:
            raise ConfigError(
                f'`{where}.width` must be left out when the sweep varies the width (`vary` = "width"); '
                f"got {raw['width']!r}. Set `vary` to sweep another width with this one fixed."
            )
    else:
        if vary not in models.builder_options(arch):
            raise ConfigError(
                f"`{where}.vary` = {vary!r} must be an option of the {arch!r} builder; "
                f"it takes {models.builder_options(arch)}."
            )
        if "width" not in raw:
            raise ConfigError(f"`{where}.width` is missing: the fixed body width when `vary` = {vary!r}.")
        fixed_width = _positive(raw, "width", int, None, where)
    options = _options(raw.get("options", {}), arch, widths[-1], max(outputs), where, vary, fixed_width)
    sizes = {}
    for name in ("n_train", "n_test", "seeds"):
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
    label = raw.get("label", "")
    if "label" in raw and (not isinstance(label, str) or not label or not set(label) <= LABEL_CHARACTERS):
        raise ConfigError(
            f"`{where}.label` must be a non-empty string of letters, digits, `_`, `.` and `-`; got {label!r}."
        )
    phases = raw.get("phases", list(PHASES))
    if (
        not isinstance(phases, list)
        or not phases
        or any(p not in PHASES for p in phases)
        or list(phases) != [p for p in PHASES if p in phases]
    ):
        raise ConfigError(
            f"`{where}.phases` must list {list(PHASES)} or a part of it, in that order; got {phases!r}."
        )
    return Sweep(
        arch,
        widths,
        outputs,
        data,
        options,
        implementation=implementation,
        label=label,
        vary=vary,
        width=fixed_width,
        phases=tuple(phases),
        **sizes,
    )


def _options(
    options: Any,
    arch: str,
    width: int,
    outputs: int,
    where: str,
    vary: str = "width",
    fixed: int | None = None,
) -> dict[str, Any]:
    """The builder's options, checked by name, and by building the widest cell's model (the
    builder checks every size: the options and the swept width)."""
    label = f"{where}.options"
    if not isinstance(options, dict):
        raise ConfigError(f"`{label}` must be a table of builder options; got {options!r}.")
    known = models.builder_options(arch)
    builder = f"the {arch!r} builder (nt_pntk.experiments.models.{models.MODELS[arch].__name__})"
    if options and not known:
        raise ConfigError(f"`{label}` must be empty: {builder} takes no options; got {options!r}.")
    _check_keys(options, known, f"{label}.", builder)
    if vary in options:
        raise ConfigError(f"`{label}.{vary}` must be left out: the sweep varies it (`vary` = {vary!r}).")
    swept = {"width": width} if vary == "width" else {"width": fixed, vary: width}
    try:
        # Builds the stax layers only (no parameters): cheap, and the builder checks every size.
        models.get_model(arch, outputs=outputs, **options, **swept)
    except (TypeError, ValueError) as e:
        # The builder's message names its argument first (`checks`' convention): name its field here.
        argument = re.match(r"`(\w+)`", str(e))
        fields = {"outputs": f"{where}.outputs", vary: f"{where}.widths"}
        if vary != "width":
            fields["width"] = f"{where}.width"
        name = argument.group(1) if argument else ""
        field = fields.get(name, f"{label}.{name}" if name in options else label)
        sizes = ", ".join(f"{k}={v}" for k, v in {**swept, "outputs": outputs}.items())
        raise ConfigError(
            f"`{field}` does not build a {arch!r} model (the sweep's widest cell: {sizes}, "
            f"options {options!r}): {e}"
        ) from None
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
