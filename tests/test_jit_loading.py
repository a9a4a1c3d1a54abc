"""How the compiled kernels are loaded (sensorium.jit): built once per machine in a child
process, imported without Numba after that, the GIL released while they run."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from sensorium import jit
from sensorium.jit import counting_argsort


@pytest.mark.parametrize("impl", ["aot", "jit"])
def test_kernels_release_the_gil(impl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python code runs beside a kernel (the stream's two threads rely on it)."""
    monkeypatch.setattr(jit, "_impl", jit._load_aot() if impl == "aot" else jit._load_jit())
    keys = np.random.default_rng(0).integers(0, 1 << 20, 30_000_000)
    done = threading.Event()

    def sort() -> None:
        for _ in range(3):
            counting_argsort(keys, 0, (1 << 20) - 1)
        done.set()

    counting_argsort(keys[:10], 0, (1 << 20) - 1)  # loaded before the race
    th = threading.Thread(target=sort)
    spins = 0
    th.start()
    while not done.is_set():
        spins += 1
    th.join()
    # holding the GIL, the kernel would leave the loop a few switch intervals (5 ms) at most
    assert spins > 200_000


def test_built_kernels_load_without_numba() -> None:
    code = (
        "import sys, numpy as np; from sensorium import jit; "
        "r = jit.counting_argsort(np.array([2, 0, 1, 0]), 0, 2); "
        "print(jit.implementation(), r.tolist(), 'numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["aot", "[1,", "3,", "2,", "0]", "False"]


def test_a_fresh_kernel_directory_gets_a_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No module yet: the first process builds it (in a child), the next ones import it."""
    monkeypatch.setenv("SENSORIUM_KERNEL_DIR", str(tmp_path))
    code = "from sensorium import jit; import numpy as np; print(jit.implementation(), jit.segment_sums(np.arange(5.0), np.array([0, 2])).tolist())"
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.split() == ["aot", "[1.0,", "9.0]"]
    assert len(list(tmp_path.glob("_sensorium_kernels_*"))) == 1
