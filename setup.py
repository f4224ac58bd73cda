"""Build the Cython hot path (fast/*.pyx) as smartpark.fast.* extensions.

Everything else about the package lives in pyproject.toml; this file exists
only because extension modules cannot be declared there yet. One extension
per fast/*.pyx; a fast/*.pxi is a part `include`d by one of them (cythonize
follows includes, so editing a part rebuilds its extension).
"""

import glob
import os

from setuptools import Extension, setup

LINK_SQLITE = {"mover"}


def _extensions():
    sources = sorted(glob.glob(os.path.join("fast", "*.pyx")))
    if not sources:
        return []
    from Cython.Build import cythonize

    exts = []
    for src in sources:
        name = os.path.splitext(os.path.basename(src))[0]
        kw = {}
        if name in LINK_SQLITE:
            # the SQLite library Python's sqlite3 module uses, by soname: no headers needed;
            # where it cannot link, the extension is skipped and the store uses sqlite3
            kw = {"extra_link_args": ["-l:libsqlite3.so.0"], "optional": True}
        exts.append(Extension("smartpark.fast." + name, [src], extra_compile_args=["-O3"], **kw))
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        quiet=True,
    )


setup(ext_modules=_extensions())
