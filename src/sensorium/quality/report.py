"""The data-quality report: totals, top issues and per-device health, from the dead-letter store;
optionally the stream's data-quality findings (stuck sensors, spikes, dropouts, drift)."""

from __future__ import annotations

from typing import Any

from sensorium.quality.deadletters import DeadLetterStore

#: The checks of :mod:`sensorium.detect.quality`, in report order.
FINDING_CHECKS = ("stuck", "spike", "dropout", "drift")


def _rate(accepted: int, rejected: int) -> float | None:
    total = accepted + rejected
    return None if total == 0 else accepted / total


def quality_report(
    store: DeadLetterStore, *, top: int = 10, max_devices: int = 20, findings: Any = None
) -> dict[str, Any]:
    """A JSON-able quality report.

    * ``totals`` — ``accepted`` rows, ``rejected`` rows (dead letters not replayed), ``replayed``,
      ``duplicates``, ``flagged`` rows (kept with lower quality), ``batches``, and
      ``valid_rate = accepted / (accepted + rejected)`` (None before any data).
    * ``top_issues`` — at most ``top`` rules (``range:temperature``, ``unit:humidity``,
      ``timestamp:future``, ``parse``, ...; so grouped by rule and field, not by value), most
      frequent first: ``count`` (rows that failed it, rejected or flagged), ``rejected`` (pending
      dead letters naming it) and an ``example`` reason.
    * ``per_device`` — at most ``max_devices`` devices, worst ``valid_rate`` first: ``accepted``,
      ``rejected`` and ``valid_rate``; ``devices`` is the number of devices seen.
    * ``findings`` — only when ``findings`` is given (a Polars frame or Arrow table of data-quality
      findings: the ``quality_findings`` table or :class:`~sensorium.detect.quality.QualityStage`
      output); see :func:`findings_section`.
    """
    c = store.counters()
    accepted = int(c["accepted_rows"])
    rejected = int(c["pending"])
    totals = {
        "accepted": accepted,
        "rejected": rejected,
        "replayed": int(c["replayed"]),
        "duplicates": int(c["duplicates"]),
        "flagged": int(c["flagged_rows"]),
        "batches": int(c["batches"]),
        "valid_rate": _rate(accepted, rejected),
    }

    issues: dict[str, dict[str, Any]] = {}

    def issue(rule: str) -> dict[str, Any]:
        hit = issues.get(rule)
        if hit is None:
            check, _, subject = rule.partition(":")
            hit = issues[rule] = {
                "rule": rule,
                "check": check,
                "subject": subject or None,
                "count": 0,
                "rejected": 0,
                "example": None,
            }
        return hit

    for rule, failed in c["rules"].items():
        issue(rule)["count"] = int(failed)
    # single-rule groups first, so that an example names just its own rule when one exists
    groups = sorted(store.rule_groups(), key=lambda g: ("," in g[0], -g[1]))
    for rules, n, reason in groups:
        for rule in filter(None, rules.split(",")):
            it = issue(rule)
            it["rejected"] += n
            if it["example"] is None:
                it["example"] = reason
    for it in issues.values():
        it["count"] = max(it["count"], it["rejected"])
    top_issues = sorted(issues.values(), key=lambda it: (-it["count"], it["rule"]))[: max(0, top)]

    devices = store.device_stats()
    per_device: list[dict[str, Any]] = [
        {
            "device_id": d,
            "accepted": s["accepted"],
            "rejected": s["rejected"],
            "valid_rate": _rate(s["accepted"], s["rejected"]),
        }
        for d, s in devices.items()
    ]
    per_device.sort(
        key=lambda r: (
            r["valid_rate"] if r["valid_rate"] is not None else 1.0,
            -r["rejected"],
            r["device_id"],
        )
    )
    out: dict[str, Any] = {
        "totals": totals,
        "top_issues": top_issues,
        "per_device": per_device[: max(0, max_devices)],
        "devices": len(devices),
    }
    if findings is not None:
        out["findings"] = findings_section(findings, top=top, max_devices=max_devices)
    return out


def findings_section(findings: Any, *, top: int = 10, max_devices: int = 20) -> dict[str, Any]:
    """Summary of data-quality findings (rows with ``check``, ``time``, ``field``, ``status``,
    ``score``, ``reason``, ``value``, ``end_time`` and ``device_id`` or ``series``).

    A finding written twice (``open`` when detected, ``closed`` when over) counts once, as its
    closed row where there is one. Keys:

    * ``total`` — findings; ``open`` — of them still open;
    * ``by_check`` — per check (``stuck``, ``spike``, ``dropout``, ``drift``, then any other):
      ``count``, ``open``, ``devices`` (distinct devices) and ``max_score``;
    * ``top_devices`` — at most ``max_devices`` devices with the most findings (ties: higher
      ``max_score``, then name): ``device_id``, ``count``, ``checks`` (count per check),
      ``max_score``;
    * ``examples`` — at most ``top`` findings, the highest score of each check first (round robin
      over the checks): ``check``, ``device_id``, ``field``, ``time`` and ``end_time`` (ISO 8601
      UTC, ``end_time`` None while open), ``status``, ``value``, ``score``, ``reason``.
    """
    import polars as pl
    import pyarrow as pa

    df = pl.from_arrow(findings) if isinstance(findings, pa.Table) else findings
    assert isinstance(df, pl.DataFrame)
    cols = set(df.columns)
    if "device_id" in cols:
        dev = pl.col("device_id").cast(pl.Utf8)
    elif "series" in cols:
        dev = pl.col("series").str.extract(r"(?:^|,)device_id=([^,]+)", 1).fill_null(pl.col("series"))
    else:
        dev = pl.lit(None, pl.Utf8)
    df = df.with_columns(dev.alias("_device"))
    for c, dtype in (("field", pl.Utf8), ("status", pl.Utf8), ("score", pl.Float64),
                     ("value", pl.Float64), ("reason", pl.Utf8), ("end_time", pl.Int64)):
        if c not in cols:
            df = df.with_columns(pl.lit(None, dtype).alias(c))
    for c in ("time", "end_time"):
        if isinstance(df.schema[c], pl.Datetime):
            df = df.with_columns(pl.col(c).dt.epoch("ns").alias(c))
    ident = [c for c in ("series", "_device", "field", "check", "time") if c in df.columns]
    df = (
        df.with_columns((pl.col("status") == "closed").fill_null(False).alias("_closed"))
        .sort([*ident, "_closed"], nulls_last=True)
        .unique(subset=ident, keep="last", maintain_order=True)
    )
    is_open = (pl.col("status") == "open").fill_null(False)
    checks = [*FINDING_CHECKS, *sorted(set(df.get_column("check").to_list()) - set(FINDING_CHECKS))]
    by_check: dict[str, Any] = {}
    for c in checks:
        part = df.filter(pl.col("check") == c)
        mx = part.get_column("score").max() if part.height else None
        by_check[c] = {
            "count": part.height,
            "open": int(part.select(is_open.sum()).item()) if part.height else 0,
            "devices": part.get_column("_device").n_unique() if part.height else 0,
            "max_score": None if mx is None else round(float(mx), 4),  # type: ignore[arg-type]
        }
    top_devices: list[dict[str, Any]] = []
    if df.height:
        per = (
            df.group_by("_device")
            .agg(pl.len().alias("count"), pl.col("score").max().alias("max_score"))
            .sort(["count", "max_score", "_device"], descending=[True, True, False], nulls_last=True)
            .head(max(0, max_devices))
        )
        counts = (
            df.join(per.select("_device"), on="_device", how="semi")
            .group_by(["_device", "check"])
            .len()
        )
        cmap: dict[Any, dict[str, int]] = {}
        for d, c, n in counts.iter_rows():
            cmap.setdefault(d, {})[c] = int(n)
        for d, n, mx in per.iter_rows():
            top_devices.append({
                "device_id": d,
                "count": int(n),
                "checks": {c: cmap.get(d, {}).get(c, 0) for c in checks if cmap.get(d, {}).get(c)},
                "max_score": None if mx is None else round(float(mx), 4),
            })
    iso = "%Y-%m-%dT%H:%M:%S%.3fZ"
    ranked = (
        df.with_columns(
            pl.col("score").rank("ordinal", descending=True).over("check").alias("_rank"),
            pl.from_epoch(pl.col("time"), "ns").dt.strftime(iso).alias("_t"),
            pl.from_epoch(pl.col("end_time"), "ns").dt.strftime(iso).alias("_e"),
        )
        .sort(["_rank", "check"], nulls_last=True)
        .head(max(0, top))
    )
    examples = [
        {
            "check": r["check"],
            "device_id": r["_device"],
            "field": r["field"],
            "time": r["_t"],
            "end_time": r["_e"],
            "status": r["status"],
            "value": r["value"],
            "score": None if r["score"] is None else round(float(r["score"]), 4),
            "reason": r["reason"],
        }
        for r in ranked.iter_rows(named=True)
    ]
    return {
        "total": df.height,
        "open": int(df.select(is_open.sum()).item()) if df.height else 0,
        "by_check": by_check,
        "top_devices": top_devices,
        "examples": examples,
    }


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}%"


def render_report(report: dict[str, Any]) -> list[Any]:
    """Rich renderables for the CLI: a totals table, the top issues, the worst devices."""
    from rich.table import Table

    t = report["totals"]
    totals = Table(title="Data quality", show_header=False)
    totals.add_column("metric", style="bold")
    totals.add_column("value", justify="right")
    for label, value in (
        ("accepted rows", f"{t['accepted']:,}"),
        ("rejected rows", f"{t['rejected']:,}"),
        ("replayed", f"{t['replayed']:,}"),
        ("duplicates dropped", f"{t['duplicates']:,}"),
        ("flagged rows", f"{t['flagged']:,}"),
        ("valid rate", _pct(t["valid_rate"])),
    ):
        totals.add_row(label, value)
    out: list[Any] = [totals]

    issues = Table(title="Top issues")
    issues.add_column("rule")
    issues.add_column("rows", justify="right")
    issues.add_column("rejected", justify="right")
    issues.add_column("example", overflow="fold")
    for it in report["top_issues"]:
        issues.add_row(it["rule"], f"{it['count']:,}", f"{it['rejected']:,}", it["example"] or "")
    if not report["top_issues"]:
        issues.add_row("-", "0", "0", "no issues")
    out.append(issues)

    devices = Table(title=f"Devices (worst first, {report.get('devices', 0)} seen)")
    devices.add_column("device_id")
    devices.add_column("accepted", justify="right")
    devices.add_column("rejected", justify="right")
    devices.add_column("valid rate", justify="right")
    for d in report["per_device"]:
        rate = d["valid_rate"]
        style = "red" if rate is not None and rate < 0.9 else None
        devices.add_row(
            d["device_id"], f"{d['accepted']:,}", f"{d['rejected']:,}", _pct(rate), style=style
        )
    out.append(devices)
    f = report.get("findings")
    if f is not None:
        checks = Table(title=f"Data-quality findings ({f['total']:,}, {f['open']:,} open)")
        checks.add_column("check")
        checks.add_column("findings", justify="right")
        checks.add_column("open", justify="right")
        checks.add_column("devices", justify="right")
        for c, row in f["by_check"].items():
            checks.add_row(c, f"{row['count']:,}", f"{row['open']:,}", f"{row['devices']:,}")
        out.append(checks)
        if f["examples"]:
            ex = Table(title="Examples (highest score per check)")
            ex.add_column("check")
            ex.add_column("device_id")
            ex.add_column("field")
            ex.add_column("time")
            ex.add_column("reason", overflow="fold")
            for e in f["examples"]:
                ex.add_row(e["check"], e["device_id"] or "", e["field"] or "", e["time"] or "", e["reason"] or "")
            out.append(ex)
    return out
