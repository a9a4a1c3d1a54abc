"""The allocator and collector settings of long-running processes (sensorium.obs.memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: what the tests set themselves: left out of the environment their child processes inherit
_TUNING = ("SENSORIUM_MALLOC_TUNE", "MALLOC_MMAP_THRESHOLD_", "SENSORIUM_MALLOC_LEAN_MB", "SENSORIUM_MALLOC_MMAP_KB",
           "ARROW_DEFAULT_MEMORY_POOL", "NUMPY_MADVISE_HUGEPAGE", "_RJEM_MALLOC_CONF")


def _clean() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _TUNING}


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with the tuning variables of ``env`` only."""
    return subprocess.run([sys.executable, "-c", code], env={**_clean(), **(env or {})},
                          capture_output=True, text=True, check=True)



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize(("env", "mode", "trims"), [
    ({}, "auto", True),
    ({"SENSORIUM_MALLOC_TUNE": "trim"}, "trim", True),
    ({"SENSORIUM_MALLOC_TUNE": "mmap"}, "mmap", False),
    ({"SENSORIUM_MALLOC_TUNE": "0"}, None, False),
    ({"MALLOC_MMAP_THRESHOLD_": "65536"}, None, False),
])
def test_allocator_modes(env: dict[str, str], mode: str | None, trims: bool) -> None:
    code = (
        "from sensorium.obs import memory as m; "
        "print(m.tune_allocator(), m.tune_allocator(), m.trim(force=True), m.trim(), "
        "m.freeze_startup(), m.freeze_startup())"
    )
    out = _python(code, env)
    # set once per process; a forced trim runs, the next one waits TRIM_INTERVAL_S; freeze once
    assert out.stdout.split() == [str(mode), "None", str(trims), "False", "True", "False"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize(("env", "after_5s", "after_11s"), [
    ({}, False, True),  # auto, not lean yet: every FAST_TRIM_INTERVAL_S (10 s)
    ({"SENSORIUM_MALLOC_TUNE": "trim"}, True, True),  # every TRIM_INTERVAL_S (2 s)
    ({"SENSORIUM_MALLOC_LEAN_MB": "1"}, True, True),  # auto turned lean at the first trim: 2 s
])
def test_auto_trims_seldom_until_it_is_lean(env: dict[str, str], after_5s: bool, after_11s: bool) -> None:
    code = (
        "import time; from sensorium.obs import memory as m; m.tune_allocator(); m.trim(force=True); "
        "m._last_trim = time.monotonic() - 5; a = m.trim(); "
        "m._last_trim = time.monotonic() - 11; print(a, m.trim())"
    )
    out = _python(code, env)
    assert out.stdout.split() == [str(after_5s), str(after_11s)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_auto_turns_lean_when_resident_memory_passes_the_limit() -> None:
    code = (
        "from sensorium.obs import memory as m; m.tune_allocator(); a = m.mode(); "
        "m.trim(force=True); print(a, m.mode(), m.resident_bytes() > 0, m.lean())"
    )
    lean = _python(code, {"SENSORIUM_MALLOC_LEAN_MB": "1"})
    assert lean.stdout.split() == ["auto", "mmap", "True", "True"]
    roomy = _python(code, {"SENSORIUM_MALLOC_LEAN_MB": "100000"})
    assert roomy.stdout.split() == ["auto", "auto", "True", "False"]


def test_frozen_objects_are_released_at_exit() -> None:
    # native extensions (duckdb's nanobind bindings) report objects alive at exit as leaks
    code = (
        "import duckdb; from sensorium.obs import memory as m; con = duckdb.connect(); "
        "m.freeze_startup(); print(con.execute('select 41 + 1').fetchall()[0][0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "42"
    assert "leak" not in out.stderr, out.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize(("env", "pool"), [
    ({}, "system"),
    ({"SENSORIUM_MALLOC_TUNE": "mmap"}, "system"),
    ({"SENSORIUM_MALLOC_TUNE": "0"}, "mimalloc"),
    ({"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}, "jemalloc"),  # the user's choice stands
])
def test_arrow_buffers_come_from_glibc_when_the_allocator_is_tuned(env: dict[str, str], pool: str) -> None:
    code = (
        "import pyarrow as pa; from sensorium.obs import memory as m; m.tune_allocator(); "
        "b = pa.array(range(100_000)); print(pa.default_memory_pool().backend_name, pa.total_allocated_bytes() > 0)"
    )
    out = _python(code, env)
    assert out.stdout.split() == [pool, "True"]


@pytest.mark.parametrize(("env", "hugepages"), [
    ({}, False),  # tuned: no MADV_HUGEPAGE, no 2 MiB page zeroed per first touch
    ({"SENSORIUM_MALLOC_TUNE": "mmap"}, False),
    ({"SENSORIUM_MALLOC_TUNE": "0"}, "numpy-default"),  # left alone
    ({"NUMPY_MADVISE_HUGEPAGE": "1"}, True),  # the user's choice stands
])
def test_numpy_asks_for_no_huge_pages_when_the_allocator_is_tuned(env: dict[str, str], hugepages: bool | str) -> None:
    """``_set_madvise_hugepage`` returns the setting it replaces: what the process had after tuning."""
    probe = "import numpy as np; print(np._core.multiarray._set_madvise_hugepage(True))"
    code = f"from sensorium.obs import memory as m; m.tune_allocator(); {probe}"
    out = _python(code, env)
    if hugepages == "numpy-default":
        hugepages = _python(probe).stdout.strip() == "True"
    assert out.stdout.strip() == str(hugepages)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status")
def test_the_peak_is_this_process_not_its_parent() -> None:
    """ru_maxrss survives exec (a child of a big parent would start lean); VmHWM does not."""
    code = (
        "import resource; from sensorium.obs import memory as m; "
        "print(m.peak_resident_bytes() // 2**20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    )
    parent = (
        "import subprocess, sys; big = bytearray(400 * 2**20); "
        f"print(subprocess.run([sys.executable, '-c', {code!r}], capture_output=True, text=True, check=True).stdout)"
    )
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True)
    own, inherited = (int(x) for x in out.stdout.split())
    assert inherited >= 400  # the parent's peak, reported by the child's ru_maxrss
    assert own < 300  # the child's own peak


@pytest.mark.parametrize(("pre", "env", "want"), [
    ("", {}, "dirty_decay_ms:0,muzzy_decay_ms:0"),  # set before Polars loads
    ("", {"_RJEM_MALLOC_CONF": "dirty_decay_ms:200"}, "dirty_decay_ms:200"),  # the user's choice
    ("", {"SENSORIUM_MALLOC_TUNE": "0"}, "polars-default"),  # allocator left alone
    ("import polars; ", {}, "polars-default"),  # too late: Polars already chose
])
def test_polars_jemalloc_returns_freed_pages_at_once(pre: str, env: dict[str, str], want: str) -> None:
    code = f"{pre}import os, sensorium, polars; print(os.environ.get('_RJEM_MALLOC_CONF'))"
    out = _python(code, env)
    default = _python("import os, polars; print(os.environ.get('_RJEM_MALLOC_CONF'))").stdout.strip()
    # Polars puts a given value after its own defaults (the later option wins)
    assert out.stdout.strip() == (default if want == "polars-default" else f"{default},{want}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize(("env", "mapped"), [
    ({}, [False, True]),  # 2 MiB: a step's arrays from the heap, an open window's blocks mapped
    ({"SENSORIUM_MALLOC_MMAP_KB": "256"}, [True, True]),
    ({"SENSORIUM_MALLOC_MMAP_KB": "lots"}, [False, True]),  # not a number: the default, a warning
    ({"SENSORIUM_MALLOC_MMAP_KB": "4194305"}, [False, True]),  # past glibc's 32 MiB: the same
])
def test_lean_mode_maps_only_blocks_above_its_threshold(env: dict[str, str], mapped: list[bool]) -> None:
    """In ``mmap`` mode an allocation of 1 MiB comes from the heap and one of 4 MiB gets a
    mapping of its own (glibc's count of mapped chunks, ``mallinfo2().hblks``), unless
    ``SENSORIUM_MALLOC_MMAP_KB`` sets the threshold lower."""
    code = (
        "import ctypes, numpy as np\n"
        "from sensorium.obs import memory as m\n"
        "class MI(ctypes.Structure):\n"
        "    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',"
        " 'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
        "libc = ctypes.CDLL('libc.so.6'); libc.mallinfo2.restype = MI\n"
        "m.tune_allocator()\n"
        "out = []\n"
        "for size in (1 << 20, 4 << 20):\n"
        "    before = libc.mallinfo2().hblks\n"
        "    a = np.ones(size // 8)\n"
        "    out.append(libc.mallinfo2().hblks > before)\n"
        "    del a\n"
        "print(m.mode(), *out)\n"
    )
    out = _python(code, {"SENSORIUM_MALLOC_TUNE": "mmap", **env})
    assert out.stdout.split() == ["mmap", *map(str, mapped)]
    assert ("SENSORIUM_MALLOC_MMAP_KB" in out.stderr) == (env.get("SENSORIUM_MALLOC_MMAP_KB") in ("lots", "4194305"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize(("env", "held"), [
    ({}, True),  # auto, not lean: a freed array's pages wait for the next trim, for reuse
    ({"SENSORIUM_MALLOC_TUNE": "trim"}, True),
    ({"SENSORIUM_MALLOC_TUNE": "0"}, False),  # glibc's own rules: a 20 MB block is a mapping of its own
    ({"SENSORIUM_MALLOC_LEAN_MB": "1"}, False),  # auto turned lean at its first trim
])
def test_freed_heap_memory_is_held_until_a_trim(env: dict[str, str], held: bool) -> None:
    code = (
        "import numpy as np; from sensorium.obs import memory as m; m.tune_allocator(); m.trim(force=True); "
        "a = np.ones(20_000_000 // 8); r1 = m.resident_bytes(); del a; r2 = m.resident_bytes(); "
        "m.trim(force=True); r3 = m.resident_bytes(); print(r1 - r2 < 5_000_000, r2 - r3 > 15_000_000)"
    )
    out = _python(code, env)
    # held: the free kept the pages and the trim gave them back; else the free gave them back
    assert out.stdout.split() == ([str(True), str(True)] if held else [str(False), str(False)])
