"""Unit normalisation with pint.

One module-level :class:`pint.UnitRegistry`, created on first use (it takes most of a second).
A unit spelling resolves through a table of common IoT spellings (``C`` is degree Celsius here, not
coulomb; ``F`` is degree Fahrenheit, not farad), then through pint's own unit names, symbols and
aliases, with SI prefixes (``hPa``, ``mV``, ``kWh``). Plurals (``volts``, ``furlongs``) are NOT
accepted: a spelling must be a registered name. Compound units (``m/s``, ``W/m^2``) are accepted when
every name in them is.

Values are converted a whole NumPy array at a time (offset units such as degF and K included), and the
result is rounded to 12 significant digits of the larger of input and output magnitude, so that
``212 degF`` is exactly ``100 degC`` and ``32 degF`` exactly ``0`` rather than ``5.7e-14``.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

_lock = threading.Lock()
_registry: Any = None

#: Common spellings that pint reads differently or not at all.
ALIASES: dict[str, str] = {
    "C": "degC",
    "°C": "degC",
    "℃": "degC",
    "degC": "degC",
    "F": "degF",
    "°F": "degF",
    "℉": "degF",
    "degF": "degF",
    "K": "kelvin",
    "%": "percent",
    "%RH": "percent",
    "RH": "percent",
    "pct": "percent",
}
#: Word spellings, matched case-insensitively.
WORD_ALIASES: dict[str, str] = {
    "celsius": "degC",
    "centigrade": "degC",
    "fahrenheit": "degF",
    "kelvin": "kelvin",
    "percent": "percent",
    "fraction": "fraction",
    "dimensionless": "dimensionless",
}

_TOKEN = re.compile(r"[^\s\d.*/^()+\-]+")


class UnknownUnit(ValueError):
    """A unit spelling that is not a known unit."""


class IncompatibleUnit(ValueError):
    """A unit that cannot be converted to the wanted one (another dimension)."""


def registry() -> Any:
    """The shared pint registry (created lazily, thread-safe)."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                import pint

                ureg: Any = pint.UnitRegistry(cache_folder=None)
                ureg.define("fraction = 1 = frac")
                _registry = ureg
    return _registry


def _known_name(ureg: Any, name: str) -> bool:
    units = ureg._units
    if name in units:
        return True
    return any(p and name.startswith(p) and name[len(p) :] in units for p in ureg._prefixes)


_resolved: dict[str, Any] = {}
_unknown: set[str] = set()


def resolve_unit(spelling: str) -> Any:
    """The pint unit for a spelling; :class:`UnknownUnit` if it is not one. Both answers are cached
    (each cache bounded: unbounded garbage in the unit tag must not grow memory forever)."""
    hit = _resolved.get(spelling)
    if hit is not None:
        return hit
    if spelling in _unknown:
        raise UnknownUnit(spelling)
    try:
        unit = _resolve(spelling)
    except UnknownUnit:
        with _lock:
            if len(_unknown) > 10_000:
                _unknown.clear()
            _unknown.add(spelling)
        raise
    with _lock:
        if len(_resolved) > 10_000:
            _resolved.clear()
        _resolved[spelling] = unit
    return unit


def _resolve(spelling: str) -> Any:
    ureg = registry()
    s = spelling.strip()
    name = ALIASES.get(s) or WORD_ALIASES.get(s.lower()) or s
    tokens = _TOKEN.findall(name)
    if not tokens or not all(_known_name(ureg, t) for t in tokens):
        raise UnknownUnit(spelling)
    try:
        return ureg.parse_units(name)
    except Exception:
        raise UnknownUnit(spelling) from None


def same_unit(a: str, b: str) -> bool:
    """Whether two spellings name the same unit (both must be known)."""
    return bool(resolve_unit(a) == resolve_unit(b))


@dataclass(frozen=True, slots=True)
class Conversion:
    """Converts arrays from one unit to another (``identity``: nothing to do)."""

    source: Any
    target: Any
    identity: bool

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if self.identity:
            return values
        ureg = registry()
        x = np.asarray(values, dtype=np.float64)
        y = np.asarray(ureg.Quantity(x, self.source).to(self.target).magnitude, dtype=np.float64)
        return _round_sig(x, y)


_conversions: dict[tuple[str, str], Conversion] = {}


def conversion(source: str, target: str) -> Conversion:
    """How to convert from ``source`` to ``target`` spelling.

    Raises :class:`UnknownUnit` (either spelling) or :class:`IncompatibleUnit`.
    """
    key = (source, target)
    hit = _conversions.get(key)
    if hit is not None:
        return hit
    src = resolve_unit(source)
    dst = resolve_unit(target)
    if src == dst:
        conv = Conversion(src, dst, True)
    else:
        ureg = registry()
        try:
            ureg.Quantity(np.array([1.0]), src).to(dst)
        except Exception:
            raise IncompatibleUnit(f"{source} -> {target}") from None
        conv = Conversion(src, dst, False)
    with _lock:
        if len(_conversions) > 10_000:
            _conversions.clear()
        _conversions[key] = conv
    return conv


def convert(values: np.ndarray, source: str, target: str) -> np.ndarray:
    """``values`` in ``source`` units, expressed in ``target`` units."""
    return conversion(source, target)(values)


def _round_sig(x: np.ndarray, y: np.ndarray, digits: int = 12) -> np.ndarray:
    """Round ``y`` to ``digits`` significant digits of ``max(|x|, |y|, 1)`` (removes the float noise of
    offset conversions). Non-finite values pass through."""
    with np.errstate(all="ignore"):
        mag = np.maximum(np.maximum(np.abs(x), np.abs(y)), 1.0)
        scale = 10.0 ** (digits - 1 - np.floor(np.log10(mag)))
        r = np.round(y * scale) / scale
    return np.where(np.isfinite(r), r, y)
