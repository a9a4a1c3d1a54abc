"""Summarise the files ``bench/streamtrace`` wrote (one JSON line per traced process that ran the
stream, plus its GIL-wait histogram): steps, µs per point wall and CPU, wall ÷ CPU, per stage.

    python bench/stream_trace_report.py /tmp/tr
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NOT_STAGES = {"pid", "argv", "gil_edges_s", "GILWAIT", "STEP", "SLOW"}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: stream_trace_report.py DIR")
    files = sorted(Path(sys.argv[1]).glob("trace-*.json"))
    if not files:
        sys.exit(f"no trace-*.json in {sys.argv[1]}")
    for f in files:
        d = json.loads(f.read_text())
        step = d.get("STEP")
        if not step:
            continue  # a process that ran no stream step (a client, a parse worker)
        n, wall, cpu, rows = step
        edges = [f"<{e * 1000:g}ms" for e in d["gil_edges_s"]] + [f">{d['gil_edges_s'][-1] * 1000:g}ms"]
        print(json.dumps({
            "pid": d["pid"], "argv": " ".join(d["argv"])[:120], "steps": n, "rows": rows,
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "wall_over_cpu": round(wall / cpu, 2) if cpu else None,
            "us_per_point_wall": round(1e6 * wall / rows, 3) if rows else None,
            "us_per_point_cpu": round(1e6 * cpu / rows, 3) if rows else None,
            "stages": {k: {"calls": v[0], "wall_s": round(v[1], 3), "cpu_s": round(v[2], 3)}
                       for k, v in d.items() if k not in NOT_STAGES},
            "gil_wait": dict(zip(edges, d.get("GILWAIT", []), strict=False)),
        }))


if __name__ == "__main__":
    main()
