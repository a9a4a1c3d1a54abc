"""Stream processor in process: throughput of a drain (rollups + 20 rules) and memory at 100 k series.

``throughput`` (default)
    Simulator data (faults on; 3,000 devices x 1 reading/s x 600 s = 1.8 M points, ``--points`` to
    scale) is written through ``Sensorium.write`` (``wal.fsync = never``) with the platform's
    background threads off (``background=False``), so every accepted batch waits in the stream's
    inbox. Only then is ``platform.stream.drain()`` timed: framing (wide Arrow batch -> long values
    frame), rolling statistics, rollups 1m / 1h / 1d and 20 rules (the built-in rules plus
    generated threshold / rate / rolling-stat rules on other simulator fields), alert transitions
    stored in the alert store and queued for delivery. The final ``checkpoint()`` is timed apart.
    Target: >= 1 M points/s.

    The allocator (``sensorium.obs.memory``): by default a process turns lean (``mmap`` mode: the
    stream then runs its stages one after the other) once its resident memory has passed
    ``SENSORIUM_MALLOC_LEAN_MB`` (768). Here the paused stream's inbox holds every written batch
    at once (~1.8 M points, several hundred MB a 3,000-device process never holds), which alone
    would pass that mark; so the bench sets the mark to 4,000 MB unless ``--lean`` (or the variable
    is set) and reports the mode in force after the drain (``malloc_mode_after_drain``).

    Baseline in the same run: the same 1-minute tumbling event-time rollup (count / sum / min /
    max / mean per series and field, 10 s allowed lateness) done record by record by Bytewax 0.21
    (``TestingSource`` -> ``fold_window`` with an ``EventClock`` and a ``TumblingWindower`` ->
    ``TestingSink``) over the first ``--baseline-points`` points of the same stream, and, over the
    very same records, by Sensorium's ``WindowOperator`` alone (one ``process`` per log batch, then
    ``flush``). Both sides get the identical values (the stream's own long frames, taken from the
    inbox before the drain); record preparation is outside both timings.

``memory``
    In a fresh subprocess: ``--series`` devices (100,000) of the simulator (faults off) sending one
    reading each per 10 s for ``--minutes`` (10) of event time, written chunk by chunk (10 s of event
    time each) through ``Sensorium.write``, each chunk followed by ``drain()`` + a processing-time
    ``tick``, ``flush()`` (``store.flush_rows`` small, so the hot buffer stays bounded) and a
    ``checkpoint()`` (what the background thread does every ``checkpoint_interval_s``). Reports peak
    RSS (``ru_maxrss``) and RSS after, the checkpoint file size, and the RSS right after start-up
    for reference. The simulator runs in a feeder process of its own (its fleet state for 100 k
    devices, ~250 MB, is the load generator's, not Sensorium's); each 10 s body (~16 MB of line
    protocol) is part of the measured process's peak. Target: <= 1 GB RSS.

    python bench/bench_stream.py                    # throughput + Bytewax baseline
    python bench/bench_stream.py --mode memory      # 100 k series, 10 min of event time
    python bench/bench_stream.py --mode all --quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import dir_bytes, emit, log, machine_info, proc_stat, r3  # noqa: E402

TARGET_POINTS_PER_S = 1_000_000
TARGET_RSS_BYTES = 1e9
NS = 1_000_000_000
STAGES = ("frame", "rolling", "rollups", "detect", "quality", "rules")

# Extra rules on simulator fields the built-in set does not watch (or watches differently). Levels
# sit in the tails of the simulator's values, so its faults make some of them fire.
EXTRA_RULES = [
    ("power-range", "threshold", "energy", "power", "W",
     "above = { warning = 2000, critical = 5000 }\nbelow = { warning = -1, critical = -100 }\ndeadband = 50"),
    ("voltage-range", "threshold", "energy", "voltage", "V",
     "above = { warning = 30, critical = 60 }\nbelow = { warning = 10, critical = 5 }\ndeadband = 0.5"),
    ("power-jump", "rate", "energy", "power", "W/s",
     "above = { warning = 1000, critical = 5000 }\nbelow = { warning = -1000, critical = -5000 }\ndeadband = 100"),
    ("voltage-jump", "rate", "energy", "voltage", "V/s",
     "above = { warning = 5, critical = 20 }\nbelow = { warning = -5, critical = -20 }\ndeadband = 1"),
    ("energy-counter-reset", "rate", "energy", "energy", "kWh/s",
     "below = { warning = -0.1, critical = -10 }"),
    ("humidity-jump", "rate", "climate", "humidity", "%/s",
     "above = { warning = 5, critical = 20 }\nbelow = { warning = -5, critical = -20 }\ndeadband = 1"),
    ("pressure-jump", "rate", "climate", "pressure", "hPa/s",
     "above = { warning = 10, critical = 100 }\nbelow = { warning = -10, critical = -100 }\ndeadband = 2"),
    ("battery-drain", "rate", None, "battery", "/s",
     "below = { warning = -0.01, critical = -0.05 }"),
    ("rssi-unstable", "threshold", None, "rssi", "dBm",
     'stat = "std_10"\nabove = { warning = 10, critical = 20 }\ndeadband = 1'),
    ("pressure-trend", "threshold", "climate", "pressure", "hPa/point",
     'stat = "trend_10"\nabove = { warning = 5, critical = 50 }\nbelow = { warning = -5, critical = -50 }'),
    ("humidity-swing", "threshold", "climate", "humidity", "%",
     'stat = "max_10"\nabove = { warning = 95, critical = 99 }\nfor = "30s"'),
    ("power-erratic", "threshold", "energy", "power", "W",
     'stat = "std_10"\nabove = { warning = 500, critical = 2000 }\ndeadband = 50'),
]


def ruleset_text(total: int) -> tuple[str, int, int]:
    """Rule file text with the built-in rules plus generated ones, ``total`` rules in all.
    Returns (text, built-in count, generated count)."""
    from sensorium.rules.loader import default_rules_text, parse_rules

    base = default_rules_text()
    n_base = len(parse_rules(base).rules)
    extra = total - n_base
    if extra < 0 or extra > len(EXTRA_RULES):
        raise SystemExit(f"--rules must be between {n_base} and {n_base + len(EXTRA_RULES)}")
    parts = [base]
    for name, kind, meas, fld, unit, body in EXTRA_RULES[:extra]:
        sel = f'measurement = "{meas}"\n' if meas else ""
        parts.append(f'\n[[rules]]\nname = "{name}"\nkind = "{kind}"\n{sel}field = "{fld}"\nunit = "{unit}"\n{body}\n')
    text = "".join(parts)
    n = len(parse_rules(text).rules)
    assert n == total, (n, total)
    return text, n_base, extra


def thread_cpu() -> dict[int, tuple[float, float, int]]:
    """Per native thread of this process: (user s, system s, minor page faults) so far (Linux)."""
    out: dict[int, tuple[float, float, int]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        st = proc_stat(f"/proc/self/task/{tid}/stat")
        if st is not None:  # (None: the thread ended meanwhile)
            out[int(tid)] = st
    return out


def thread_cpu_delta(before: dict[int, tuple[float, float, int]]) -> dict[str, dict[str, float]]:
    """What each thread (named where it is alive) spent since ``before``: user and system CPU
    seconds and minor page faults, threads under 10 ms left out. System time is where page faults
    (the kernel zeroing fresh pages) and the GIL's hand-overs show; no Python profiler sees it."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, dict[str, float]] = {}
    for tid, (u, st, f) in thread_cpu().items():
        u0, st0, f0 = before.get(tid, (0.0, 0.0, 0))
        if u - u0 + st - st0 >= 0.01:
            out[names.get(tid, f"tid {tid}")] = {"user_s": r3(u - u0), "sys_s": r3(st - st0), "minflt": f - f0}
    return dict(sorted(out.items(), key=lambda kv: -(kv[1]["user_s"] + kv[1]["sys_s"])))


def rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


#: ``--stages``: ``all`` (the defaults: anomaly detection and quality checks on every numeric
#: field too) or ``core`` (what issue #3's target names: framing, rolling statistics, 3 rollups,
#: the rules — detection and quality checks off)
STAGE_SETS = {"all": {}, "core": {"enabled": False, "quality": {"enabled": False}}}
DETECT: dict[str, Any] = {}


def make_platform(data_dir: Path, rules_text: str, store: dict[str, Any] | None = None,
                  stream: dict[str, Any] | None = None) -> Any:
    from sensorium.config import load_settings
    from sensorium.platform import Sensorium
    from sensorium.rules.loader import parse_rules

    settings = load_settings(
        None,
        data_dir=str(data_dir),
        stream={"rollups": ["1m", "1h", "1d"], **(stream or {})},
        store=store or {},
        wal={"fsync": "never"},
        detect=DETECT,
    )
    return Sensorium(settings, background=False, rules=parse_rules(rules_text))


def stage_seconds(platform: Any) -> dict[str, float]:
    reg = platform.metrics.registry
    out = {}
    for s in STAGES:
        v = reg.get_sample_value("sensorium_stream_step_seconds_sum", {"step_id": s})
        out[s] = v or 0.0
    return out


# -- throughput ----------------------------------------------------------------------------------
def warm_up(tmp: Path, rules_text: str) -> float:
    """A small run in its own data dir: first calls (Polars, NumPy, SQLite) out of the timing."""
    from sensorium.ingest.simulator import SimConfig, Simulator

    t0 = time.perf_counter()
    d = tmp / "warmup"
    p = make_platform(d, rules_text)
    try:
        for ch in Simulator(SimConfig(devices=200, rate=1.0, duration_s=180, seed=7)).chunks(60):
            p.write(ch.lines)
        p.stream.drain()
        p.stream.checkpoint()
    finally:
        p.close()
        shutil.rmtree(d, ignore_errors=True)
    return time.perf_counter() - t0


def throughput(args: argparse.Namespace, tmp: Path) -> None:
    # the inbox pile-up is the bench's, not the stream's (see the module docs); read once, when
    # the first platform starts, and not passed on (the memory bench's child keeps the default)
    lean_mb = os.environ.get("SENSORIUM_MALLOC_LEAN_MB") or ("768" if args.lean else "4000")
    if "SENSORIUM_MALLOC_LEAN_MB" not in os.environ:
        os.environ["SENSORIUM_MALLOC_LEAN_MB"] = lean_mb
        try:
            _throughput(args, tmp, lean_mb)
        finally:
            del os.environ["SENSORIUM_MALLOC_LEAN_MB"]
    else:
        _throughput(args, tmp, lean_mb)


def _throughput(args: argparse.Namespace, tmp: Path, lean_mb: str) -> None:
    from sensorium.ingest.simulator import SimConfig, Simulator

    rules_text, n_base, n_extra = ruleset_text(args.rules)
    duration = max(1.0, round(args.points / args.devices))
    cfg = SimConfig(devices=args.devices, rate=1.0, duration_s=duration, seed=args.seed, faults=True)
    log("warm-up run ...")
    warm_s = warm_up(tmp, rules_text)
    data_dir = tmp / "throughput"
    p = make_platform(data_dir, rules_text, stream={"parallel_stages": False} if args.profile or args.sequential else None)
    try:
        log(f"writing {args.devices:,} devices x {duration:.0f} s through Sensorium.write (stream paused) ...")
        sim_points = sim_values = lines = accepted = rejected = dups = 0
        write_s = 0.0
        for ch in Simulator(cfg).chunks(60):
            body = ch.lines
            sim_points += ch.points
            sim_values += ch.values
            lines += ch.n_lines
            t0 = time.perf_counter()
            res = p.write(body)
            write_s += time.perf_counter() - t0
            accepted += res.accepted_rows
            rejected += res.rejected
            dups += res.duplicates
        st = p.stream
        batches = list(st._inbox)  # the queued log batches (read only; the drain consumes them)
        log(f"{accepted:,} points accepted ({rejected:,} rejected, {dups:,} duplicates), "
            f"{len(batches)} log batches queued; draining ...")
        base_input = None
        if not args.no_baseline:
            base_input = baseline_input(batches, args.baseline_points, p.settings.default_bucket)
        n_batches = len(batches)
        del batches
        by_rule: dict[str, int] = {}
        inner = st.on_transitions

        def counting(ts: list[Any]) -> None:  # transitions per rule (the drain calls this)
            for t in ts:
                by_rule[t.rule] = by_rule.get(t.rule, 0) + 1
            if inner is not None:
                inner(ts)

        st.on_transitions = counting
        rss_before = rss_mb()
        s0 = stage_seconds(p)
        threads0 = thread_cpu()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        if args.profile:  # where the drain's time goes (cProfile: slower; stages one at a time)
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
            rows = st.drain()
            prof.disable()
            prof.dump_stats(args.profile)
        else:
            rows = st.drain()
        drain_s = time.perf_counter() - t0
        drain_cpu_s = time.process_time() - cpu0  # every thread's CPU: drain_cpu_s / drain_s = cores busy
        drain_threads = thread_cpu_delta(threads0)
        stages = {k: v - s0[k] for k, v in stage_seconds(p).items()}
        rss_after_drain = rss_mb()
        t0 = time.perf_counter()
        st.checkpoint()
        checkpoint_s = time.perf_counter() - t0
        cp = data_dir / "stream" / "checkpoint.pkl"
        cp_bytes = cp.stat().st_size if cp.exists() else None
        values = int(st.stats["values"])
        other = drain_s - sum(stages.values())
        alerts = p.alerts.counts() if p.alerts is not None else None
        emit({
            "bench": "stream_throughput",
            "system": "sensorium",
            "data": f"simulator faults=on, {args.devices} devices x 1 reading/s x {duration:.0f} s (seed {args.seed})",
            "sim_points": sim_points,
            "sim_values": sim_values,
            "lines": lines,
            "points": rows,
            "values": values,
            "rejected_on_write": rejected,
            "duplicates_on_write": dups,
            "series": len(st.series),
            "rules": len(st.ruleset.rules),
            "rules_builtin": n_base,
            "rules_generated": n_extra,
            "rollups": list(st.intervals),
            "log_batches": n_batches,
            "steps": int(st.stats["steps"]),
            "batch_max_rows": p.settings.stream.batch_max_rows,
            "drain_s": r3(drain_s),
            "drain_cpu_s": r3(drain_cpu_s),
            "drain_threads": drain_threads,
            "points_per_s": round(rows / drain_s) if drain_s else None,
            "values_per_s": round(values / drain_s) if drain_s else None,
            "stage_s": {**{k: r3(v) for k, v in stages.items()}, "framing_and_other": r3(other)},
            "transitions": int(st.stats["transitions"]),
            "transitions_by_rule": dict(sorted(by_rule.items(), key=lambda kv: -kv[1])),
            "alerts": alerts,
            "late_rows": int(st.stats["late"]),
            "checkpoint_s": r3(checkpoint_s),
            "checkpoint_bytes": cp_bytes,
            "write_s": r3(write_s),
            "write_points_per_s": round(accepted / write_s) if write_s else None,
            "warmup_s": r3(warm_s, 2),
            "rss_mb_before_drain": rss_before,
            "rss_mb_after_drain": rss_after_drain,
            "malloc_mode_after_drain": malloc_mode(),
            "malloc_lean_mb": float(lean_mb),
            "meets_points_target": (rows / drain_s >= TARGET_POINTS_PER_S) if drain_s else None,
            "target_points_per_s": TARGET_POINTS_PER_S,
        })
    finally:
        t0 = time.perf_counter()
        p.close()
        log(f"closed the platform (final flush) in {time.perf_counter() - t0:.1f}s")
    if base_input is not None:
        baseline(base_input, args)


# -- baseline: the same 1-minute rollup, Bytewax vs Sensorium's window operator ------------------
def baseline_input(batches: list[Any], max_points: int, bucket: str) -> dict[str, Any]:
    """The stream's own long frames for the first ``max_points`` points (whole log batches)."""
    from sensorium.stream.frame import to_frames

    frames = []
    points = 0
    for b in batches:
        if points >= max_points:
            break
        n = min(b.table.num_rows, max_points - points)
        batch = b if n == b.table.num_rows else type(b)(b.offset, b.bucket, b.measurement, b.table.slice(0, n), b.tags, b.arrival_ns)
        v, _s = to_frames(batch, bucket)
        frames.append(v)
        points += n
    return {"frames": frames, "points": points, "sizes": [f.height for f in frames]}


def baseline(inp: dict[str, Any], args: argparse.Namespace) -> None:
    import polars as pl

    frames: list[pl.DataFrame] = inp["frames"]
    all_values = pl.concat(frames)
    n_values = all_values.height
    what = ("1-minute tumbling event-time windows (aligned to the epoch) per series+field: count, sum, min, "
            "max, mean; watermark per key = max event time seen - 10 s; a value behind it is late (not "
            "aggregated); all windows emitted at the end of input")
    common = {"points": inp["points"], "records": n_values, "computes": what}

    # Sensorium's window operator (vectorised: one call per log batch)
    from sensorium.stream.window_op import WindowOperator
    from sensorium.stream.windows import Tumbling

    op = WindowOperator("bench-1m", Tumbling("1m"), ("count", "sum", "min", "max", "mean"), lateness_ns=10 * NS)
    c0 = time.process_time()
    t0 = time.perf_counter()
    outs = []
    late = 0
    for f in frames:
        o = op.process(f)
        outs.append(o.finalized)
        late += o.late.height
    outs.append(op.flush().finalized)
    s_el = time.perf_counter() - t0
    s_cpu = time.process_time() - c0
    s_out = pl.concat(outs)
    s_check = {"windows": s_out.height, "count": int(s_out["count"].sum()),
               "sum": float(s_out["sum"].sum()), "late": late}
    emit({"bench": "stream_rollup_baseline", "system": "sensorium-window-operator", **common,
          "input": f"{len(frames)} Polars frames (one per log batch), processed in order, then flush()",
          "elapsed_s": r3(s_el), "cpu_s": r3(s_cpu), "records_per_s": round(n_values / s_el) if s_el else None, **s_check})

    # Bytewax, record by record
    try:
        from importlib.metadata import version as pkg_version

        import bytewax  # noqa: F401
        import bytewax.operators as bop
        from bytewax.dataflow import Dataflow
        from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
        from bytewax.testing import TestingSink, TestingSource, run_main

        bw_version = pkg_version("bytewax")
    except Exception as exc:  # noqa: BLE001
        emit({"bench": "stream_rollup_baseline", "system": "bytewax", "skipped": True,
              "reason": f"bytewax does not import: {type(exc).__name__}: {exc} "
                        "(pip install bytewax==0.21.1 into the venv)"})
        return
    from datetime import UTC, datetime, timedelta

    log(f"bytewax {bw_version}: preparing {n_values:,} records ...")
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    keys = (all_values["series"] + "|" + all_values["field"]).to_list()
    times = all_values["time"].to_list()
    vals = all_values["value"].to_list()
    records = [(k, (epoch + timedelta(microseconds=t // 1000), v)) for k, t, v in zip(keys, times, vals, strict=True)]
    del keys, times, vals
    fixed_now = datetime(2000, 1, 1, tzinfo=UTC)

    def builder() -> list[float]:
        return [0, 0.0, math.inf, -math.inf]

    def folder(acc: list[float], tv: tuple[datetime, float]) -> list[float]:
        x = tv[1]
        acc[0] += 1
        acc[1] += x
        if x < acc[2]:
            acc[2] = x
        if x > acc[3]:
            acc[3] = x
        return acc

    def merger(a: list[float], b: list[float]) -> list[float]:
        return [a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3])]

    def finish(item: tuple[str, tuple[int, list[float]]]) -> tuple[str, tuple[int, int, float, float, float, float]]:
        key, (wid, acc) = item
        return key, (wid, int(acc[0]), acc[1], acc[2], acc[3], acc[1] / acc[0])

    match = max(1, round(n_values / len(frames)))  # records per Sensorium call (one log batch)
    sizes: list[tuple[int, str]] = []
    for tok in str(args.bytewax_batch).split(","):
        tok = tok.strip()
        if tok:
            sizes.append((match, "match") if tok == "match" else (int(tok), "fixed"))
    for batch_size, how in sizes:
        out: list[Any] = []
        late_out: list[Any] = []
        flow = Dataflow("rollup_1m")
        src = bop.input("in", flow, TestingSource(records, batch_size=batch_size))
        # now_getter fixed: the watermark is purely event time (max seen - 10 s), as in Sensorium
        clock: EventClock[tuple[datetime, float]] = EventClock(lambda tv: tv[0], wait_for_system_duration=timedelta(seconds=10),
                           now_getter=lambda: fixed_now)
        windower = TumblingWindower(length=timedelta(minutes=1), align_to=epoch)
        wo = fold_window("fold", src, clock, windower, builder, folder, merger, ordered=False)
        bop.output("out", bop.map("finish", wo.down, finish), TestingSink(out))
        bop.output("late", wo.late, TestingSink(late_out))
        log(f"bytewax: running, batch_size={batch_size:,} ...")
        c0 = time.process_time()
        t0 = time.perf_counter()
        run_main(flow)
        b_el = time.perf_counter() - t0
        b_cpu = time.process_time() - c0
        b_check = {"windows": len(out), "count": sum(o[1][1] for o in out),
                   "sum": float(sum(o[1][2] for o in out)), "late": len(late_out)}
        agree = (b_check["windows"] == s_check["windows"] and b_check["count"] == s_check["count"]
                 and b_check["late"] == s_check["late"]
                 and math.isclose(b_check["sum"], s_check["sum"], rel_tol=1e-9, abs_tol=1e-6))
        emit({"bench": "stream_rollup_baseline", "system": "bytewax", "version": bw_version, **common,
              "batch_size": batch_size,
              "batch_size_is": "records per Sensorium call (same micro-batches)" if how == "match" else "fixed",
              "input": f"TestingSource of (key, (datetime, value)) tuples, batch_size={batch_size}; "
                       "fold_window(ordered=False) -> map -> TestingSink; run_main (1 worker)",
              "elapsed_s": r3(b_el), "cpu_s": r3(b_cpu), "records_per_s": round(n_values / b_el) if b_el else None,
              **b_check, "agrees_with_sensorium": agree,
              "sensorium_speedup": r3(b_el / s_el, 1) if s_el and b_el else None})


# -- memory --------------------------------------------------------------------------------------
def _feed(cfg: Any, out: Any) -> None:
    """The simulator in a process of its own (its fleet state for 100 k devices is ~250 MB that
    is not Sensorium's): line-protocol bodies of 10 s of event time each, then None."""
    from sensorium.ingest.simulator import Simulator

    for ch in Simulator(cfg).chunks(10):
        out.put(ch.lines.encode())
    out.put(None)


def _bodies(cfg: Any) -> Any:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue(maxsize=2)
    proc = ctx.Process(target=_feed, args=(cfg, q), daemon=True)
    proc.start()
    try:
        while (body := q.get()) is not None:
            yield body
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def malloc_mode() -> str | None:
    """The allocator mode in force (sensorium.obs.memory: auto turns to mmap past its limit)."""
    from sensorium.obs.memory import mode

    return mode()


def heap_mb() -> dict[str, float] | None:
    """glibc's view of its heap (mallinfo2): in use, free inside the heap, in own mappings (MB)."""
    import ctypes
    import ctypes.util

    class _Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _Info
        i = libc.mallinfo2()
    except (OSError, AttributeError):
        return None
    return {"heap": round(i.arena / 1e6, 1), "heap_free": round(i.fordblks / 1e6, 1), "mapped": round(i.hblkhd / 1e6, 1)}


def memory_child(args: argparse.Namespace) -> dict[str, Any]:
    from sensorium.ingest.simulator import SimConfig

    rules_text, _n_base, _n_extra = ruleset_text(args.rules)
    data_dir = Path(args.data_dir)
    rss_import = rss_mb()
    probe = None
    if args.probe:
        from _memprobe import stream_probe

        probe = stream_probe()
    p = make_platform(data_dir, rules_text, store={"flush_rows": args.flush_rows})
    rss_start = rss_mb()
    cfg = SimConfig(devices=args.series, rate=0.1, duration_s=args.minutes * 60, seed=args.seed, faults=args.faults)
    st = p.stream
    written = flushed = 0
    t_start = time.perf_counter()
    cp_max = 0
    rss_series: list[float | None] = []
    try:
        for i, body in enumerate(_bodies(cfg)):
            res = p.write(body)
            written += res.accepted_rows
            st.drain()
            st.tick()
            if (i + 1) % args.checkpoint_every == 0:
                st.checkpoint()
                cp = data_dir / "stream" / "checkpoint.pkl"
                cp_max = max(cp_max, cp.stat().st_size if cp.exists() else 0)
            flushed += p.flush()
            if i % 6 == 5:
                rss_series.append(rss_mb())
                log(f"{(i + 1) * 10:>5} s of event time: {written:,} points, hot {p.hot.rows():,} rows, "
                    f"RSS {rss_series[-1]} MB, peak {peak_rss_mb()} MB, malloc {heap_mb()}")
                if probe is not None and (i + 1) % 60 == 0:  # every 10 minutes: the top phases so far
                    log(f"  phases: {json.dumps(dict(list(probe.report().items())[:6]))}")
        st.checkpoint()
        cp = data_dir / "stream" / "checkpoint.pkl"
        cp_bytes = cp.stat().st_size if cp.exists() else None
        elapsed = time.perf_counter() - t_start
        rec = {
            "series": len(st.series),
            "devices": args.series,
            "event_minutes": args.minutes,
            "points": written,
            "values": int(st.stats["values"]),
            "flushed_rows": flushed,
            "hot_rows_at_end": p.hot.rows(),
            "late_rows": int(st.stats["late"]),
            "transitions": int(st.stats["transitions"]),
            "elapsed_s": r3(elapsed, 1),
            "rss_mb_after_import": rss_import,
            "rss_mb_after_open": rss_start,
            "rss_mb_per_minute": rss_series,
            "rss_mb_after": rss_mb(),
            "peak_rss_mb": peak_rss_mb(),
            "checkpoint_bytes": cp_bytes,
            "checkpoint_bytes_max": max(cp_max, cp_bytes or 0),
            "malloc_mode_at_end": malloc_mode(),
        }
        if probe is not None:
            probe.stop()
            rec["phases"] = probe.report()
    finally:
        p.close()
    rec["peak_rss_mb_after_close"] = peak_rss_mb()
    rec["wal_bytes_after_close"] = dir_bytes(data_dir / "wal") if (data_dir / "wal").exists() else None
    return rec


def memory(args: argparse.Namespace, tmp: Path) -> None:
    from sensorium_server import _child_env

    data_dir = tmp / "memory"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mode", "memory-child", "--data-dir", str(data_dir),
           "--series", str(args.series), "--minutes", str(args.minutes), "--flush-rows", str(args.flush_rows),
           "--checkpoint-every", str(args.checkpoint_every), "--rules", str(args.rules), "--seed", str(args.seed),
           "--stages", args.stages]
    if args.faults:
        cmd.append("--faults")
    if args.probe:
        cmd.append("--probe")
    log(f"memory: {args.series:,} series x 1 point / 10 s x {args.minutes} min in a fresh process ...")
    r = subprocess.run(cmd, stdout=subprocess.PIPE, env=_child_env(None, None), cwd=tmp, text=True)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("{")), None)
    if r.returncode != 0 or line is None:
        emit({"bench": "stream_memory", "error": f"child exited {r.returncode}", "stdout": r.stdout[-1500:]})
        raise SystemExit(1)
    rec = json.loads(line)
    peak_bytes = rec["peak_rss_mb"] * 1024 * 1024
    emit({"bench": "stream_memory", "system": "sensorium",
          "data": f"simulator faults={'on' if args.faults else 'off'}, rate 0.1/s per device, 10 s chunks",
          "flush_rows": args.flush_rows, "checkpoint_every_chunks": args.checkpoint_every,
          "rules": args.rules, "rollups": ["1m", "1h", "1d"], **rec,
          "meets_rss_target": peak_bytes <= TARGET_RSS_BYTES,
          # steady state: every per-minute sample after the first minute (start-up and the first
          # allocations of 100 k series' state are in the first)
          "meets_rss_target_steady": steady_ok(rec.get("rss_mb_per_minute") or []),
          "target_rss_bytes": int(TARGET_RSS_BYTES)})


def steady_ok(per_minute: list[float | None]) -> bool | None:
    """Whether every per-minute RSS sample after the first is within the target (None: no samples)."""
    later = [x for x in per_minute[1:] if x is not None]
    return all(x * 1024 * 1024 <= TARGET_RSS_BYTES for x in later) if later else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["throughput", "memory", "all", "memory-child"], default="throughput")
    ap.add_argument("--points", type=int, default=1_800_000, help="throughput: points to simulate (approx.)")
    ap.add_argument("--devices", type=int, default=3000, help="throughput: devices (1 reading/s each)")
    ap.add_argument("--rules", type=int, default=20, help="rules in the stream (built-in + generated)")
    ap.add_argument("--baseline-points", type=int, default=200_000, help="points fed to the 1m-rollup baseline")
    ap.add_argument("--bytewax-batch", default="match,1000",
                    help="TestingSource batch_size(s), comma-separated; 'match' = records per Sensorium call")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--stages", choices=sorted(STAGE_SETS), default="all",
                    help="all: default settings (detection, quality checks on); core: framing, rolling, rollups, rules")
    ap.add_argument("--series", type=int, default=100_000, help="memory: active series (devices)")
    ap.add_argument("--minutes", type=int, default=10, help="memory: minutes of event time")
    ap.add_argument("--flush-rows", type=int, default=100_000, help="memory: store.flush_rows")
    ap.add_argument("--checkpoint-every", type=int, default=1, help="memory: checkpoint every N chunks (10 s each)")
    ap.add_argument("--faults", action="store_true", help="memory: simulator faults on")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--probe", action="store_true",
                    help="memory: record which phase (write, each stage, rollup output, checkpoint, delivery, flush) "
                         "raises resident memory (bench/_memprobe.py; a sampling thread: slower)")
    ap.add_argument("--lean", action="store_true",
                    help="throughput: keep the allocator's lean mark (768 MB), which the bench's own inbox "
                         "pile-up passes before or during the drain: from then on the stages run one after "
                         "the other (malloc_mode_after_drain says whether it happened)")
    ap.add_argument("--sequential", action="store_true",
                    help="throughput: run the stages one at a time (stream.parallel_stages = false)")
    ap.add_argument("--profile", metavar="FILE",
                    help="throughput: run the drain under cProfile, stages one after the other, and write its stats to FILE")
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true",
                    help="throughput 1,000 devices x 180 s, baseline 30 k points; memory 10 k series x 3 min")
    ap.add_argument("--tmp-dir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    DETECT.update(STAGE_SETS[args.stages])
    if args.mode == "memory-child":
        emit(memory_child(args))
        return
    if args.quick:
        args.points, args.devices, args.baseline_points = 180_000, 1000, 30_000
        args.series, args.minutes, args.flush_rows = 10_000, 3, 20_000
    emit({"bench": "stream_setup", "mode": args.mode, "stages": args.stages, "points": args.points, "devices": args.devices,
          "rules": args.rules, "series_memory": args.series, "minutes_memory": args.minutes, **machine_info()})
    tmp = Path(tempfile.mkdtemp(prefix="sensorium-stream-bench-", dir=args.tmp_dir))
    try:
        if args.mode in ("throughput", "all"):
            try:
                throughput(args, tmp)
            except Exception as exc:  # noqa: BLE001
                emit({"bench": "stream_throughput", "error": f"{type(exc).__name__}: {exc}"[:1500]})
        if args.mode in ("memory", "all"):
            memory(args, tmp)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
