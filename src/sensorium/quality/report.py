"""The data-quality report: totals, top issues and per-device health, from the dead-letter store."""

from __future__ import annotations

from typing import Any

from sensorium.quality.deadletters import DeadLetterStore


def _rate(accepted: int, rejected: int) -> float | None:
    total = accepted + rejected
    return None if total == 0 else accepted / total


def quality_report(
    store: DeadLetterStore, *, top: int = 10, max_devices: int = 20
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
    return {
        "totals": totals,
        "top_issues": top_issues,
        "per_device": per_device[: max(0, max_devices)],
        "devices": len(devices),
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
    return out
