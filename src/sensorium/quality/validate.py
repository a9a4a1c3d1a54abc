"""Vectorised validation of one measurement's batch.

Every check computes a boolean mask over the rows with NumPy / Arrow compute; reject reasons are
built as Arrow string arrays for the failing rows only, then grouped per row with polars. No check
loops over rows in Python (building the :class:`~sensorium.schema.Reject` objects walks the rejected
rows once, as the API asks for a list).

Checks, in the order their reasons are listed:

1. ``unit:<field>`` — values of fields whose rule has a canonical unit are converted from the row's
   ``unit`` tag. An unknown unit always rejects. A unit of another dimension rejects only when it
   fits none of the row's unit-ruled fields: on a multi-field line ``unit=degF temperature=..,
   humidity=..`` the tag is taken to describe temperature only. Converted values replace the originals
   (an integer column that needs converting becomes ``float64``). The ``unit`` tag is rewritten: to
   the canonical unit when every converted field of the row shares one canonical unit, to null when
   they disagree (e.g. ``unit=%`` with both ``humidity`` → ``percent`` and ``battery`` →
   ``fraction``), and left alone on rows with no field that has a unit rule.
2. ``non_finite:<field>`` — NaN or ±inf in a float field (action ``QualitySettings.non_finite``).
3. ``timestamp:future`` / ``timestamp:retention`` — more than ``future_tolerance_s`` ahead of the
   injected clock / older than ``retention_days`` (action ``QualitySettings.timestamp_action``).
4. ``required_tag:<tag>`` — a row carrying a field whose rule requires the tag lacks it.
5. ``range:<field>`` — below ``min`` / above ``max`` (after conversion; NaN/inf are left to 2).
6. ``allowed_values:<field>`` — a value (field or tag) outside the rule's ``allowed_values``.

A row fails a rule only where the rule's field is set on it. A row is rejected if any failing rule
rejects; otherwise each failing rule name is listed in ``quality_flags`` and ``quality`` is
``max(0, 1 - 0.25 * n_flags)``. Then, when ``dedup`` is on, among the kept rows only the LAST received
of each (series, time) is kept — a series being the values of all tag columns, nulls equal to nulls —
and the others are counted in ``duplicates``. So ``valid + rejects + duplicates == input rows``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.config import QualitySettings
from sensorium.quality.rules import Rule, effective_rules, rules_for
from sensorium.quality.units import IncompatibleUnit, UnknownUnit, conversion
from sensorium.schema import (
    LINE,
    QUALITY,
    QUALITY_FLAGS,
    TIME,
    Reject,
    field_names,
    tag_names,
)

UNIT_TAG = "unit"
FLAG_PENALTY = 0.25
_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS
_ALLOWED_SHOWN = 10


@dataclass(slots=True)
class ValidationResult:
    valid: (
        pa.Table
    )  # kept rows (``_line`` kept; the caller drops it) + ``quality``, ``quality_flags``
    rejects: list[Reject]  # one per rejected row, in row order
    duplicates: int  # rows dropped as duplicates of a later row of the same series and time
    counts: dict[str, int]  # rule name -> rows that failed it (rejected or flagged)
    reject_tags: pa.Table | None = (
        None  # tag values (strings) of the rejected rows, aligned with rejects
    )
    flagged: int = 0  # kept rows with at least one flag
    rows_in: int = 0
    #: the rejects in columnar form (``row``, ``line``, ``reason``, ``rule``), aligned with ``rejects``
    reject_table: pa.Table | None = None

    @property
    def rejected(self) -> int:
        return len(self.rejects)


@dataclass(slots=True)
class _Failures:
    """Accumulates per-rule failure masks and, for rejecting rules, reasons."""

    n: int
    reject: dict[str, np.ndarray] = field(default_factory=dict)
    flag: dict[str, np.ndarray] = field(default_factory=dict)
    parts: list[tuple[np.ndarray, pa.Array, str]] = field(default_factory=list)

    def add(
        self,
        name: str,
        mask: np.ndarray,
        action: str,
        reason: Callable[[np.ndarray], pa.Array | str],
    ) -> None:
        if not mask.any():
            return
        bucket = self.reject if action == "reject" else self.flag
        prev = bucket.get(name)
        bucket[name] = mask if prev is None else (prev | mask)
        if action == "reject":
            idx = np.flatnonzero(mask)
            r = reason(idx)
            if isinstance(r, str):
                r = pa.array([r], pa.string()).take(pa.array(np.zeros(len(idx), dtype=np.int64)))
            self.parts.append((idx, r, name))

    def rejected_mask(self) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        for m in self.reject.values():
            out |= m
        return out

    def counts(self) -> dict[str, int]:
        names = dict.fromkeys([*self.reject, *self.flag])
        out = {}
        for name in names:
            m = self.reject.get(name)
            f = self.flag.get(name)
            masks = [x for x in (m, f) if x is not None]
            both = masks[0] if len(masks) == 1 else (masks[0] | masks[1])
            out[name] = int(np.count_nonzero(both))
        return out


def _const(text: str) -> Callable[[np.ndarray], str]:
    return lambda idx: text


def _take_str(arr: pa.Array, idx: np.ndarray) -> pa.Array:
    return _str(arr.take(pa.array(idx)))


def _fmt(x: float) -> str:
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


def _valid_mask(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return pc.is_valid(arr).to_numpy(zero_copy_only=False)


def _numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype)


def _to_float(arr: pa.Array) -> np.ndarray:
    """Values as float64 (nulls become NaN; pair with the validity mask)."""
    if pa.types.is_floating(arr.type) and arr.null_count == 0:
        return arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return pc.cast(arr, pa.float64(), safe=False).to_numpy(zero_copy_only=False)


def _str(arr: pa.Array) -> pa.Array:
    return pc.cast(arr, pa.string())


def _join(*parts: Any) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    return _fmt(v)


class Validator:
    """Validates batches against the quality settings. ``now`` returns the time in UTC nanoseconds."""

    def __init__(self, settings: QualitySettings, now: Callable[[], int]) -> None:
        self.settings = settings
        self._now = now
        self.rules = effective_rules(settings)
        self._per_measurement: dict[str, dict[str, list[Rule]]] = {}

    def rules_for(self, measurement: str) -> dict[str, list[Rule]]:
        hit = self._per_measurement.get(measurement)
        if hit is None:
            hit = rules_for(self.rules, measurement)
            if len(self._per_measurement) < 10_000:
                self._per_measurement[measurement] = hit
        return hit

    # ------------------------------------------------------------------------------------------------

    def validate(self, measurement: str, table: pa.Table) -> ValidationResult:
        n = table.num_rows
        if n == 0:
            return ValidationResult(
                _with_quality(table, np.zeros(0, np.float32), None), [], 0, {}, None, 0, 0
            )
        table = table.unify_dictionaries().combine_chunks()
        original = table
        cols: dict[str, pa.Array] = {name: _chunk(table[name]) for name in table.column_names}
        tags = tag_names(table)
        for t in tags:  # codes are compared below: the dictionary must not repeat a value
            d = cols[t].dictionary
            if len(d) > 1 and pc.count_distinct(d).as_py() != len(d):
                cols[t] = cols[t].dictionary_decode().dictionary_encode()
        fields = field_names(table)
        rules = self.rules_for(measurement)
        fails = _Failures(n)
        valid_of: dict[str, np.ndarray] = {}

        def valid(name: str) -> np.ndarray:
            m = valid_of.get(name)
            if m is None:
                m = valid_of[name] = _valid_mask(cols[name])
            return m

        # 1. units ------------------------------------------------------------------------------------
        floats: dict[str, np.ndarray] = {}  # field -> float64 values (converted where converted)
        converted: dict[str, np.ndarray] = {}  # field -> rows converted
        unit_failed: dict[str, np.ndarray] = {}
        unit_col = cols.get(UNIT_TAG) if UNIT_TAG in tags else None
        if unit_col is not None:
            self._normalise_units(cols, fields, rules, fails, valid, floats, converted, unit_failed)

        def values(name: str) -> np.ndarray:
            v = floats.get(name)
            if v is None:
                v = floats[name] = _to_float(cols[name])
            return v

        def shown(name: str, idx: np.ndarray, unit: str | None = None) -> pa.Array:
            """Values of ``name`` at ``idx`` as text; converted ones as ``54.4444 degC (130 degF)``."""
            conv = converted.get(name)
            if conv is None or not conv[idx].any():
                return _str(original[name].take(pa.array(idx)).combine_chunks())
            now_vals = pa.array(np.round(values(name)[idx], 4))
            raw = _str(original[name].take(pa.array(idx)).combine_chunks())
            src_unit = _str(original[UNIT_TAG].take(pa.array(idx)).combine_chunks())
            with_src = _join(_str(now_vals), f" {unit} (", raw, " ", src_unit, ")")
            return pc.if_else(pa.array(conv[idx]), with_src, raw)

        def value_reason(
            name: str, unit: str | None, suffix: str
        ) -> Callable[[np.ndarray], pa.Array]:
            def make(idx: np.ndarray) -> pa.Array:
                return _join(f"{name}=", shown(name, idx, unit), suffix)

            return make

        # 2. non-finite floats ------------------------------------------------------------------------
        non_finite: dict[str, np.ndarray] = {}
        for f in fields:
            if not pa.types.is_floating(cols[f].type):
                continue
            v = values(f)
            bad = ~np.isfinite(v) & valid(f)
            if not bad.any():
                continue
            non_finite[f] = bad

            def nf_reason(idx: np.ndarray, v: np.ndarray = v, f: str = f) -> pa.Array:
                sub = v[idx]
                text = np.where(
                    np.isnan(sub), f"{f} is NaN", np.where(sub > 0, f"{f} is +inf", f"{f} is -inf")
                )
                return pa.array(text, pa.string())

            fails.add(f"non_finite:{f}", bad, self.settings.non_finite, nf_reason)

        # 3. timestamps -------------------------------------------------------------------------------
        times = cols[TIME].cast(pa.int64()).to_numpy(zero_copy_only=False)
        now = int(self._now())
        tol = self.settings.future_tolerance_s
        future = times > now + int(tol * _NS)
        fails.add(
            "timestamp:future",
            future,
            self.settings.timestamp_action,
            lambda idx: _join(
                "timestamp ", _iso(times[idx]), f" is more than {_fmt(tol)}s in the future"
            ),
        )
        if self.settings.retention_days > 0:
            days = self.settings.retention_days
            old = times < now - int(days * _DAY_NS)
            fails.add(
                "timestamp:retention",
                old,
                self.settings.timestamp_action,
                lambda idx: _join(
                    "timestamp ",
                    _iso(times[idx]),
                    f" is older than the retention of {_fmt(days)} days",
                ),
            )

        # 4-6. per-field rules ------------------------------------------------------------------------
        for f, frules in rules.items():
            if f not in cols:
                continue
            arr = cols[f]
            present = valid(f)
            if not present.any():
                continue
            is_tag_col = f in tags
            for r in frules:
                for tg in r.required_tags:
                    missing = present & ~valid(tg) if tg in cols else present
                    fails.add(
                        f"required_tag:{tg}",
                        missing,
                        r.action,
                        _const(f"missing required tag '{tg}'"),
                    )
                if is_tag_col:
                    if r.allowed_values is not None:
                        self._allowed(
                            fails,
                            f,
                            r,
                            arr,
                            present,
                            partial(_take_str, arr),
                        )
                    continue
                usable = present
                if f in non_finite:
                    usable = usable & ~non_finite[f]
                if f in unit_failed:
                    usable = usable & ~unit_failed[f]
                if (r.min is not None or r.max is not None) and _numeric(arr.type):
                    v = values(f)
                    unit = f" {r.unit}" if r.unit else ""
                    with np.errstate(invalid="ignore"):
                        bounds = (
                            (r.min, v < r.min if r.min is not None else None, "below minimum"),
                            (r.max, v > r.max if r.max is not None else None, "above maximum"),
                        )
                    for limit, out, words in bounds:
                        if limit is not None and out is not None:
                            fails.add(
                                f"range:{f}",
                                usable & out,
                                r.action,
                                value_reason(f, r.unit, f" {words} {_fmt(limit)}{unit}"),
                            )
                if r.allowed_values is not None:
                    self._allowed(
                        fails,
                        f,
                        r,
                        cols[f],
                        usable,
                        partial(shown, f, unit=r.unit),
                        quote=pa.types.is_string(arr.type),
                    )

        # rejects, duplicates, quality ----------------------------------------------------------------
        rejected = fails.rejected_mask()
        keep = ~rejected
        duplicates = 0
        if self.settings.dedup and keep.sum() > 1:
            dup = _duplicates(cols, tags, keep)
            duplicates = int(np.count_nonzero(dup))
            if duplicates:
                _merge_fields(cols, tags, keep)
            keep &= ~dup

        out = pa.Table.from_arrays([cols[c] for c in table.column_names], names=table.column_names)
        kept = out.filter(pa.array(keep)) if not keep.all() else out
        flag_names = [name for name, m in fails.flag.items() if (m & keep).any()]
        flagged = 0
        if flag_names:
            flag_masks = {name: fails.flag[name][keep] for name in flag_names}
            n_flags = np.zeros(int(keep.sum()), dtype=np.int32)
            for m in flag_masks.values():
                n_flags += m
            quality = np.clip(1.0 - FLAG_PENALTY * n_flags, 0.0, 1.0).astype(np.float32)
            flags = _flag_strings(flag_masks)
            flagged = int(np.count_nonzero(n_flags))
        else:
            quality = np.ones(kept.num_rows, dtype=np.float32)
            flags = None
        valid_table = _with_quality(kept, quality, flags)

        rejects: list[Reject] = []
        reject_tags = None
        reject_table = None
        if rejected.any():
            reject_table = self._rejects(measurement, fails, original, n)
            rejects = list(
                map(
                    Reject,
                    reject_table["line"].to_pylist(),
                    reject_table["reason"].to_pylist(),
                    repeat(""),
                    repeat(measurement),
                    reject_table["rule"].to_pylist(),
                )
            )
            rows = pa.array(np.flatnonzero(rejected))
            if tags:
                reject_tags = pa.table(
                    {t: _str(original[t].take(rows).combine_chunks()) for t in tags}
                )
        return ValidationResult(
            valid=valid_table,
            rejects=rejects,
            duplicates=duplicates,
            counts=fails.counts(),
            reject_tags=reject_tags,
            flagged=flagged,
            rows_in=n,
            reject_table=reject_table,
        )

    # ------------------------------------------------------------------------------------------------

    def _normalise_units(
        self,
        cols: dict[str, pa.Array],
        fields: list[str],
        rules: dict[str, list[Rule]],
        fails: _Failures,
        valid: Callable[[str], np.ndarray],
        floats: dict[str, np.ndarray],
        converted: dict[str, np.ndarray],
        unit_failed: dict[str, np.ndarray],
    ) -> None:
        """Convert fields with a unit rule from the row's ``unit`` tag; rewrite the tag.

        Work is per distinct (unit, field) pair, each a vectorised mask and one pint conversion.
        A unit of another dimension than a field's canonical unit rejects the row only if the
        unit fits NONE of the row's unit-ruled fields (a multi-field line ``unit=degF
        temperature=..,humidity=..`` converts temperature and leaves humidity as it is).
        """
        unit_col = cols[UNIT_TAG]
        names: list[str] = unit_col.dictionary.to_pylist()
        codes = pc.fill_null(unit_col.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32)
        has_unit = codes >= 0
        if not has_unit.any():
            return
        n = len(codes)
        # pass 1: what each (field, unit) pair does, and which rows the unit fits somewhere
        plan: list[tuple[str, str, np.ndarray, list[tuple[int, np.ndarray, Any]]]] = []
        fits = np.zeros(n, dtype=bool)  # rows whose unit converts for at least one of their fields
        for f in fields:
            target = next((r.unit for r in rules.get(f, ()) if r.unit), None)
            if target is None or not _numeric(cols[f].type):
                continue
            rows_f = has_unit & valid(f)
            if not rows_f.any():
                continue
            steps: list[tuple[int, np.ndarray, Any]] = []
            for code in np.unique(codes[rows_f]).tolist():
                rows = rows_f & (codes == code)
                try:
                    conv: Any = conversion(names[code], target)
                except UnknownUnit:
                    conv = UnknownUnit
                except IncompatibleUnit:
                    conv = IncompatibleUnit
                else:
                    fits |= rows
                steps.append((code, rows, conv))
            plan.append((f, target, rows_f, steps))
        # pass 2: convert, reject, and work out each row's canonical unit
        dictionary = list(names)
        code_of = {u: i for i, u in enumerate(dictionary)}
        canon = np.full(n, -1, dtype=np.int32)  # -1 untouched, -2 conflicting canonical units
        for f, target, _, steps in plan:
            vals: np.ndarray | None = None
            conv_rows = np.zeros(n, dtype=bool)
            for code, rows, conv in steps:
                src = names[code]
                if conv is UnknownUnit or conv is IncompatibleUnit:
                    if conv is IncompatibleUnit:
                        rows = rows & ~fits
                        text = f"unit '{src}' cannot be converted to {target} for field '{f}'"
                    else:
                        text = f"unknown unit '{src}' for field '{f}'"
                    if rows.any():
                        unit_failed[f] = unit_failed.get(f, np.zeros(n, dtype=bool)) | rows
                        fails.add(f"unit:{f}", rows, "reject", _const(text))
                    continue
                if not conv.identity:
                    if vals is None:
                        vals = _to_float(cols[f]).copy()
                    vals[rows] = conv(vals[rows])
                    conv_rows |= rows
                tc = code_of.get(target)
                if tc is None:
                    tc = code_of[target] = len(dictionary)
                    dictionary.append(target)
                clash = rows & (canon >= 0) & (canon != tc)
                canon[rows & (canon == -1)] = tc
                canon[clash] = -2
            if vals is not None:
                mask = ~valid(f)
                cols[f] = pa.array(vals, pa.float64(), mask=mask if mask.any() else None)
                floats[f] = vals
                converted[f] = conv_rows
        if (canon != -1).any():
            new_codes = np.where(canon >= 0, canon, codes)
            null = (canon == -2) | (new_codes < 0)
            indices = pa.array(new_codes, pa.int32(), mask=null if null.any() else None)
            cols[UNIT_TAG] = pa.DictionaryArray.from_arrays(
                indices, pa.array(dictionary, pa.string())
            )

    def _allowed(
        self,
        fails: _Failures,
        f: str,
        r: Rule,
        arr: pa.Array,
        usable: np.ndarray,
        show: Callable[[np.ndarray], pa.Array],
        *,
        quote: bool = True,
    ) -> None:
        allowed = r.allowed_values or ()
        dtype = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
        vs: list[Any]
        if pa.types.is_boolean(dtype):
            vs = [v for v in allowed if isinstance(v, bool)]
        elif _numeric(dtype):
            vs = [v for v in allowed if isinstance(v, int | float) and not isinstance(v, bool)]
            if pa.types.is_integer(dtype):
                vs = [int(v) for v in vs if float(v).is_integer()]
        else:
            vs = [_literal(v) if isinstance(v, bool) else str(v) for v in allowed]
        value_set = pa.array(vs, dtype)
        if pa.types.is_dictionary(arr.type):
            ok_dict = pc.is_in(arr.dictionary, value_set=value_set)
            ok = pc.fill_null(ok_dict.take(arr.indices), False)
        else:
            ok = pc.fill_null(pc.is_in(arr, value_set=value_set), False)
        bad = usable & ~ok.to_numpy(zero_copy_only=False)
        shown_vals = ", ".join(_literal(v) for v in allowed[:_ALLOWED_SHOWN])
        if len(allowed) > _ALLOWED_SHOWN:
            shown_vals += f", ... ({len(allowed)} in all)"
        q = "'" if quote else ""
        fails.add(
            f"allowed_values:{f}",
            bad,
            r.action,
            lambda idx: _join(
                f"{f}={q}", show(idx), f"{q} is not one of the allowed values [{shown_vals}]"
            ),
        )

    def _rejects(self, measurement: str, fails: _Failures, table: pa.Table, n: int) -> pa.Table:
        """One row per rejected input row, in row order: ``row``, ``line``, ``reason``, ``rule``."""
        rows = np.concatenate([idx for idx, _, _ in fails.parts])
        seq = np.concatenate(
            [np.full(len(idx), i, dtype=np.int32) for i, (idx, _, _) in enumerate(fails.parts)]
        )
        reasons = pa.concat_arrays([r.cast(pa.string()) for _, r, _ in fails.parts])
        names = pa.array([name for _, _, name in fails.parts], pa.string()).take(pa.array(seq))
        per_row = np.bincount(rows, minlength=n)
        single = per_row[rows] == 1
        # rows with one failure need no grouping (the common case); group the others with polars
        out_rows = [rows[single]]
        out_reasons = [reasons.filter(pa.array(single))]
        out_names = [names.filter(pa.array(single))]
        if not single.all():
            multi = pa.array(~single)
            df = pl.from_arrow(
                pa.table(
                    {
                        "row": rows[~single],
                        "seq": seq[~single],
                        "reason": reasons.filter(multi),
                        "rule": names.filter(multi),
                    }
                )
            )
            assert isinstance(df, pl.DataFrame)
            grouped = (
                df.sort(["row", "seq"])
                .group_by("row", maintain_order=True)
                .agg(
                    pl.col("reason").unique(maintain_order=True).str.join("; "),
                    pl.col("rule").unique(maintain_order=True).str.join(","),
                )
            )
            out_rows.append(grouped["row"].to_numpy())
            out_reasons.append(grouped["reason"].to_arrow().cast(pa.string()))
            out_names.append(grouped["rule"].to_arrow().cast(pa.string()))
        all_rows = np.concatenate(out_rows)
        order = pa.array(np.argsort(all_rows, kind="stable"))
        row_idx = all_rows[order.to_numpy()]
        if LINE in table.column_names:
            lines = pc.cast(_chunk(table[LINE]).take(pa.array(row_idx)), pa.int32())
            lines = pc.fill_null(lines, pa.array(row_idx + 1, pa.int32()))
        else:
            lines = pa.array(row_idx + 1, pa.int32())
        return pa.table(
            {
                "row": pa.array(row_idx, pa.int64()),
                "line": lines,
                "reason": pa.concat_arrays(out_reasons).take(order),
                "rule": pa.concat_arrays(out_names).take(order),
            }
        )


# ----------------------------------------------------------------------------------------------------


def _chunk(col: pa.ChunkedArray) -> pa.Array:
    if col.num_chunks == 1:
        return col.chunk(0)
    return col.combine_chunks()


def _iso(ns: np.ndarray) -> pa.Array:
    secs = np.floor_divide(ns, _NS)
    return pc.strftime(pa.array(secs, pa.timestamp("s")), format="%Y-%m-%dT%H:%M:%SZ")


def _duplicates(cols: dict[str, pa.Array], tags: list[str], keep: np.ndarray) -> np.ndarray:
    """Rows (among ``keep``) that a LATER kept row of the same series and time supersedes.

    Tag columns are compared by dictionary code (the table's dictionaries are unified first; a null
    tag is code -1, equal to other nulls). When the codes fit, they are packed into one int64 key.
    """
    idx = np.flatnonzero(keep)
    data: dict[str, Any] = {TIME: cols[TIME].cast(pa.int64()).to_numpy(zero_copy_only=False)[idx]}
    codes: list[tuple[np.ndarray, int]] = []
    for t in tags:  # tag columns are dictionary columns (that is what makes them tags)
        col = cols[t]
        c = pc.fill_null(col.indices, -1).to_numpy(zero_copy_only=False)[idx].astype(np.int64)
        codes.append((c + 1, len(col.dictionary) + 1))
    span = 1
    for _, size in codes:
        span *= size
    if codes and span < 2**62:
        key = np.zeros(len(idx), dtype=np.int64)
        for c, size in codes:
            key = key * size + c
        data["_key"] = key
    else:
        for i, (c, _) in enumerate(codes):
            data[f"_k{i}"] = c
    out = np.zeros(len(keep), dtype=bool)
    # fast path: hash each row's key to one uint64 and sort; only rows whose hash repeats can be
    # duplicates (the exact check below runs on those alone, so hash collisions are harmless)
    h = _mix(np.zeros(len(idx), dtype=np.uint64), data[TIME])
    for name, v in data.items():
        if name != TIME:
            h = _mix(h, v)
    s = np.sort(h)
    repeated = s[1:][s[1:] == s[:-1]]
    if len(repeated) == 0:
        return out
    cand = pc.is_in(pa.array(h), value_set=pa.array(repeated)).to_numpy(zero_copy_only=False)
    sub = {k: v[cand] for k, v in data.items()}
    last = pl.DataFrame(sub).select(pl.struct(pl.all()).is_last_distinct()).to_series().to_numpy()
    out[idx[cand][~last]] = True
    return out


def _merge_fields(cols: dict[str, pa.Array], tags: list[str], keep: np.ndarray) -> None:
    """Fold the fields of superseded duplicates into the surviving (last) row of each series+time,
    as InfluxDB does: a later point overwrites the fields it carries and keeps the others.
    Changes ``cols`` in place; only rows in duplicated groups are touched."""
    idx = np.flatnonzero(keep)
    keys = {TIME: cols[TIME].cast(pa.int64()).to_numpy(zero_copy_only=False)[idx]}
    for i, t in enumerate(tags):
        keys[f"_k{i}"] = pc.fill_null(cols[t].indices, -1).to_numpy(zero_copy_only=False)[idx]
    kdf = pl.DataFrame(keys)
    in_group = kdf.is_duplicated().to_numpy()
    rows = idx[in_group]
    fields = [c for c in cols if c not in tags and c not in (TIME, LINE, QUALITY, QUALITY_FLAGS)]
    if not fields or len(rows) == 0:
        return
    sub = kdf.filter(pl.Series(in_group)).with_columns(pl.Series("_row", rows))
    for f in fields:
        sub = sub.with_columns(pl.from_arrow(cols[f].take(pa.array(rows))).alias(f))  # type: ignore[union-attr]
    merged = sub.group_by(list(keys), maintain_order=True).agg(
        [pl.col("_row").last()] + [pl.col(f).drop_nulls().last() for f in fields]
    )
    at = merged["_row"].to_numpy()
    for f in fields:
        full = pl.from_arrow(cols[f])
        assert isinstance(full, pl.Series)
        full = full.scatter(at, merged[f])
        cols[f] = full.to_arrow().cast(cols[f].type)


def _mix(h: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Fold ``v`` into the running 64-bit hash ``h`` (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        x = h * np.uint64(0x9E3779B97F4A7C15) ^ v.astype(np.int64).view(np.uint64)
        x ^= x >> np.uint64(31)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(29)
    return x


def _flag_strings(masks: dict[str, np.ndarray]) -> pa.Array:
    df = pl.DataFrame({f"m{i}": m for i, m in enumerate(masks.values())})
    exprs = [pl.when(pl.col(f"m{i}")).then(pl.lit(name)) for i, name in enumerate(masks)]
    joined = df.select(pl.concat_str(exprs, separator=",", ignore_nulls=True).alias("f")).select(
        pl.when(pl.col("f") != "").then(pl.col("f")).alias("f")
    )
    return joined.to_series().to_arrow().cast(pa.string())


def _with_quality(table: pa.Table, quality: np.ndarray, flags: pa.Array | None) -> pa.Table:
    for c in (QUALITY, QUALITY_FLAGS):
        if c in table.column_names:
            table = table.drop_columns([c])
    q = pa.array(quality, pa.float32())
    fl = flags if flags is not None else pa.nulls(table.num_rows, pa.string())
    return table.append_column(QUALITY, q).append_column(QUALITY_FLAGS, fl)
