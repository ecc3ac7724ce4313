"""The search space of `tune`: a small YAML (or JSON) file of settings and their ranges, checked against the
`train` settings (TrainConfig) before any trial runs; no torch, no Optuna import until a trial is drawn.

    lr:               {low: 1.0e-5, high: 3.0e-3, log: true}
    weight_decay:     {low: 1.0e-6, high: 1.0e-2, log: true}
    label_smoothing:  {low: 0.0, high: 0.2}
    augment_strength: {low: 0.0, high: 2.0}
    image_size:       {choices: [96, 128, 160]}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SkinOnnxError
from ..training.config import TrainConfig

#: The documented default space (docs/TUNING.md); a setting fixed on the command line drops out of it.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"low": 1e-5, "high": 3e-3, "log": True},
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "label_smoothing": {"low": 0.0, "high": 0.2},
    "augment_strength": {"low": 0.0, "high": 2.0},
    "image_size": {"choices": [96, 128, 160]},
}
#: Settings that say where and how fast a run goes, or name it: never searched.
NOT_TUNABLE = frozenset({"data", "name", "runs_dir", "checkpoint_dir", "device", "workers", "threads", "compile",
                         "cache_mb", "max_pixels", "progress", "track", "tracking_uri", "exclude_list",
                         "allow_leakage", "positive_class", "select", "seed"})
KEYS = {"low", "high", "log", "step", "choices"}


class SpaceError(SkinOnnxError):
    """A search-space file names an unknown setting, or a range that is empty or outside the setting's own."""


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a numeric range (``log``: sampled on a log scale; ``step`` for integers) or a list
    of choices."""

    name: str
    kind: str  # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        """Draw this setting for an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=self.step or 1)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def distribution(self):
        """The Optuna distribution (Ray Tune's OptunaSearch takes these)."""
        import optuna

        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log,
                                                        step=self.step or 1)
        return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log)

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        return isinstance(value, int | float) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name} in {list(self.choices)}"
        return f"{self.name} {self.low:g}..{self.high:g}{' (log)' if self.log else ''}"


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]
    source: str  # the file, or "the default space"

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def suggest(self, trial) -> dict[str, Any]:
        return {d.name: d.suggest(trial) for d in self.dimensions}

    def defaults(self, base: Any) -> dict[str, Any]:
        """The searched settings' values in ``base`` (today's defaults), where they lie in the space."""
        return {d.name: getattr(base, d.name) for d in self.dimensions if d.contains(getattr(base, d.name))}

    def distributions(self) -> dict[str, Any]:
        return {d.name: d.distribution() for d in self.dimensions}

    def to_dict(self) -> dict[str, Any]:
        return {d.name: ({"choices": list(d.choices)} if d.kind == "choice" else
                         {"low": d.low, "high": d.high, "log": d.log, **({"step": d.step} if d.step else {})})
                for d in self.dimensions}


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def tunable_settings() -> list[str]:
    return [name for name, f in _fields().items() if name not in NOT_TUNABLE]


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise SpaceError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _dimension(name: str, spec: Any, where: str) -> Dimension:
    fields = _fields()
    if name not in fields or name in NOT_TUNABLE:
        hint = "is not searchable (where or how fast a run goes)" if name in fields else "is not a `train` setting"
        raise SpaceError(f"{where}: unknown setting '{name}' ({hint}); searchable: {', '.join(tunable_settings())}")
    field, at = fields[name], f"{where}: '{name}'"
    kind = str(field.type).split(" ")[0]
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, Mapping):
        raise SpaceError(f"{at}: expected {{low: X, high: Y}} or {{choices: [...]}}, got {spec!r}")
    unknown = set(spec) - KEYS
    if unknown:
        raise SpaceError(f"{at}: unknown key(s) {sorted(unknown)} (allowed: {', '.join(sorted(KEYS))})")
    meta_low, meta_high, open_low = field.metadata["range"]
    allowed = field.metadata["choices"]
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{at}: empty range (choices must be a non-empty list)")
        for value in choices:
            try:
                TrainConfig(**{name: value})
            except (TypeError, SkinOnnxError) as exc:
                raise SpaceError(f"{at}: choice {value!r} is not allowed ({exc})") from None
            _within(value, meta_low, meta_high, open_low, at, allowed)
        return Dimension(name, "choice", choices=tuple(dict.fromkeys(choices)))
    if kind not in ("int", "float"):
        raise SpaceError(f"{at}: a {kind} setting is searched with choices: [...]")
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"{at}: needs both low and high (or choices)")
    low, high = _number(spec["low"], at), _number(spec["high"], at)
    log = bool(spec.get("log", False))
    if low >= high:
        raise SpaceError(f"{at}: empty range (low {low:g} must be below high {high:g})")
    if log and low <= 0:
        raise SpaceError(f"{at}: a log range needs low > 0 (got {low:g})")
    for value in (low, high):
        _within(value, meta_low, meta_high, open_low, at, allowed)
    step = spec.get("step")
    if kind == "int":
        if low != int(low) or high != int(high):
            raise SpaceError(f"{at}: an integer setting needs integer low/high")
        if step is not None and (log or not isinstance(step, int) or step < 1):
            raise SpaceError(f"{at}: step must be a positive integer (and not with log)")
        return Dimension(name, "int", low, high, log, step)
    if step is not None:
        raise SpaceError(f"{at}: step is for integer settings")
    return Dimension(name, "float", low, high, log)


def _within(value: Any, low: float | None, high: float | None, open_low: bool, at: str, allowed: tuple) -> None:
    if allowed:
        return  # TrainConfig checked the choice
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if (low is not None and (value < low or (open_low and value == low))) or (high is not None and value > high):
        shown_low, shown_high = "" if low is None else f"{low:g}", "" if high is None else f"{high:g}"
        bounds = f"{'(' if open_low else '['}{shown_low}, {shown_high}]"
        raise SpaceError(f"{at}: {value!r} is outside the setting's range {bounds}")


def parse_space(mapping: Any, where: str, fixed: Iterable[str] = ()) -> SearchSpace:
    """A space from a mapping of setting -> range; a setting also ``fixed`` on the command line is refused."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise SpaceError(f"{where}: expected a non-empty mapping of setting: range")
    clash = sorted(set(mapping) & set(fixed))
    if clash:
        raise SpaceError(f"{where}: '{clash[0]}' is both searched here and fixed on the command line "
                         f"(--{clash[0].replace('_', '-')}); drop one")
    return SearchSpace(tuple(_dimension(str(name), spec, where) for name, spec in mapping.items()), where)


def load_space(path: str | Path, fixed: Iterable[str] = ()) -> SearchSpace:
    """The space in a YAML or JSON file (read like `train --config` files)."""
    from ..training.config import read_config_file

    try:
        mapping = read_config_file(path)
    except SkinOnnxError as exc:
        raise SpaceError(str(exc.message).replace("--config", "--space", 1)) from None
    return parse_space(mapping, f"--space {path}", fixed)


def default_space(fixed: Iterable[str] = ()) -> SearchSpace:
    """:data:`DEFAULT_SPACE` less the settings fixed on the command line."""
    fixed = set(fixed)
    kept = {k: v for k, v in DEFAULT_SPACE.items() if k not in fixed}
    if not kept:
        raise SpaceError("every setting of the default space is fixed on the command line; pass --space FILE")
    return parse_space(kept, "the default space")
