"""Build the ahead-of-time compiled kernels: ``python -m sensorium._kernels_build DIR NAME``.

Compiles :data:`sensorium._kernels.EXPORTS` with Numba's ``pycc`` into the extension module
``DIR/NAME<ext suffix>`` (needs Numba, llvmlite and a C compiler while it runs; the module it makes
needs only NumPy). :mod:`sensorium.jit` runs this in a child process the first time a machine needs
the kernels, so the processes that use them never load LLVM (~140 MB resident). Every exported
function releases the GIL while it runs, like ``@njit(nogil=True)``.
"""

from __future__ import annotations

import sys
import warnings


def build(out_dir: str, name: str) -> None:
    warnings.simplefilter("ignore")  # pycc's pending deprecation; the result is what we test
    import numba.pycc.compiler as pycc_compiler
    from numba.pycc import CC

    from sensorium._kernels import EXPORTS

    class _NoGil(pycc_compiler.Flags):  # type: ignore[misc, name-defined]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.release_gil = True  # type: ignore[assignment]  # the wrapper drops the GIL around the call, as nogil=True

    pycc_compiler.Flags = _NoGil  # type: ignore[misc]
    cc = CC(name)
    cc.output_dir = out_dir
    cc.verbose = False
    for exported, (fn, sig) in EXPORTS.items():
        cc.export(exported, sig)(getattr(fn, "py_func", fn))
    cc.compile()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m sensorium._kernels_build DIR NAME")
    build(sys.argv[1], sys.argv[2])
