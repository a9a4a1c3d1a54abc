"""Stream steps in process, in the ingest → alert latency bench's shape (many series per request).

``--requests`` requests of ``--batch`` points (line protocol, ``bench/_common.make_batches``:
``--devices`` devices, 4 tags, 5 numeric fields, 100 k points/s of event time) go through
``Sensorium.write`` (``wal.fsync = never``, background threads off), with ``StreamRunner.step()``
after every ``--step-every`` requests — so each step frames, rolls, rolls up and runs the built-in
rules over ``batch x step-every`` points of as many series. ``--probes`` adds one point of a new
device (``temperature=99``: fires ``temperature-range``) to every request, as the latency bench's
prober does. The first 10 steps are warm-up. Reports the steps' seconds and microseconds per
point, and the stages' seconds (``sensorium_stream_step_seconds``). Core stages (detection and
quality checks off), as in issue #3's latency target.

    python bench/bench_stream_steps.py                      # 240 requests, a step every 4
    python bench/bench_stream_steps.py --step-every 20      # larger steps (a stream behind)
    python bench/bench_stream_steps.py --profile F          # cProfile of the measured steps
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine_info, make_batches, r3  # noqa: E402

STAGES = ("frame", "rolling", "rollups", "rules")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=240)
    ap.add_argument("--batch", type=int, default=5000, help="points per request")
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--step-every", type=int, default=4, help="requests per stream step")
    ap.add_argument("--probes", action=argparse.BooleanOptionalAction, default=True,
                    help="a point of a new device in every request")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the measured steps into FILE (pstats)")
    args = ap.parse_args()
    from sensorium.config import load_settings
    from sensorium.platform import Sensorium

    tmp = Path(tempfile.mkdtemp(prefix="sensorium-steps-"))
    settings = load_settings(None, data_dir=str(tmp / "data"), wal={"fsync": "never"},
                             detect={"enabled": False, "quality": {"enabled": False}})
    p = Sensorium(settings, background=False)
    try:
        groups = make_batches(args.devices, args.batch)
        gap_ns = round(args.batch / 100_000 * 1e9)  # 100 k points/s of event time
        t0 = time.time_ns() - 2 * args.requests * gap_ns
        reg = p.metrics.registry

        def stages() -> dict[str, float]:
            return {k: reg.get_sample_value("sensorium_stream_step_seconds_sum", {"step_id": k}) or 0.0 for k in STAGES}

        warm = 10 * args.step_every
        step_s = 0.0
        s0: dict[str, float] = {}
        rows0 = values0 = 0
        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
        for i in range(args.requests):
            ts = t0 + i * gap_ns
            probe = f"climate,device_id=probe-{i} temperature=99 {ts}\n".encode() if args.probes else b""
            p.write(probe + b"".join(pre + str(ts + j * 10_000).encode() + b"\n" for j, pre in enumerate(groups[i % len(groups)])))
            if i % args.step_every == args.step_every - 1:
                if i == warm - 1:
                    s0, step_s = stages(), 0.0
                    rows0, values0 = int(p.stream.stats["rows"]), int(p.stream.stats["values"])
                t = time.perf_counter()
                if prof is not None and i >= warm:
                    prof.runcall(p.stream.step)
                else:
                    p.stream.step()
                step_s += time.perf_counter() - t
        points = int(p.stream.stats["rows"]) - rows0
        if prof is not None:
            prof.dump_stats(args.profile)
        emit({
            "bench": "stream_steps", **machine_info(),
            "requests": args.requests, "batch": args.batch, "devices": args.devices,
            "step_every": args.step_every, "probes": args.probes,
            "points": points, "values": int(p.stream.stats["values"]) - values0,
            "step_s": r3(step_s), "us_per_point": r3(1e6 * step_s / points) if points else None,
            "stage_s": {k: r3(v - s0.get(k, 0.0)) for k, v in stages().items()},
            "transitions": int(p.stream.stats["transitions"]),
        })
    finally:
        p.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
