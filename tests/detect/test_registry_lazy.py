"""The built-in detectors register on first use: a platform that detects nothing never loads them
(nor SciPy, which the likelihood detector needs)."""

from __future__ import annotations

import subprocess
import sys


def test_detectors_load_on_first_use_not_with_the_platform() -> None:
    code = (
        "import sys\n"
        "from sensorium.platform import Sensorium\n"
        "before = sorted(m for m in sys.modules if m == 'scipy' or m.startswith('sensorium.detect.likelihood'))\n"
        "from sensorium.detect import make, names\n"
        "known = names()\n"
        "make('default')\n"
        "print(before, 'likelihood' in known, 'scipy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")[-2]
    assert out == "[] True True"
