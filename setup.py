"""Build the Cython hot path (fast/*.pyx) as smartpark.fast.* extensions.

Everything else about the package lives in pyproject.toml; this file exists
only because extension modules cannot be declared there yet.
"""

import glob
import os

from setuptools import Extension, setup


def _extensions():
    sources = sorted(glob.glob(os.path.join("fast", "*.pyx")))
    if not sources:
        return []
    from Cython.Build import cythonize

    exts = [
        Extension(
            "smartpark.fast." + os.path.splitext(os.path.basename(src))[0],
            [src],
            extra_compile_args=["-O3"],
        )
        for src in sources
    ]
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        quiet=True,
    )


setup(ext_modules=_extensions())
