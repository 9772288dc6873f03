"""Builds the score path's compiled kernels (``streams/native``); everything else is in
``pyproject.toml``.

The kernels are Cython twins of per-transaction steps of the score agent, each held
equal to its Python reference by tests (``tests/unit/test_native_*.py``). They are
optional: where no C compiler is available the build carries on without them and the
worker scores with the Python references (``streams.native.AVAILABLE`` says which).
"""

import hashlib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ("records", "cards", "terminals")
HERE = Path(__file__).parent
NATIVE = HERE / "streams" / "native"
SOURCES = sorted([*NATIVE.glob("*.pyx"), *NATIVE.glob("*.pxi")])


def source_sha() -> str:
    """sha256 of the kernels' sources: compiled in, so a stale build is detected at import
    (``streams.native`` compares it with the sources next to it)."""
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


extensions = [
    Extension(
        f"streams.native._{name}",
        [f"streams/native/_{name}.pyx"],
        extra_compile_args=["-O2"],
        define_macros=[("RS_SOURCE_SHA", f'"{source_sha()}"')],
        optional=True,  # no compiler: the Python references score instead
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    )
)
