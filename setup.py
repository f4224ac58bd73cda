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
LINK_CRYPTO = {"oscore"}  # OpenSSL's libcrypto (EVP AES-CCM); skipped without its headers
USE_CRYPTO = {"loadgen"}  # libcrypto when there (OSCORE load); built without it otherwise


def _have_openssl():
    """Whether OpenSSL's development headers are there (Debian: libssl-dev)."""
    import sysconfig
    import tempfile

    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.errors import CompileError
    from setuptools._distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "probe.c")
        with open(src, "w") as f:
            f.write("#include <openssl/evp.h>\nint main(void){return EVP_CIPHER_CTX_new()==0;}\n")
        try:
            cc.compile([src], output_dir=d, include_dirs=[sysconfig.get_paths()["include"]])
        except CompileError:
            return False
    return True


def _extensions():
    sources = sorted(glob.glob(os.path.join("fast", "*.pyx")))
    if not sources:
        return []
    from Cython.Build import cythonize

    exts = []
    crypto = None
    for src in sources:
        name = os.path.splitext(os.path.basename(src))[0]
        kw = {}
        if name in LINK_CRYPTO:
            crypto = _have_openssl() if crypto is None else crypto
            if not crypto:
                print("smartpark: OpenSSL headers (openssl/evp.h) not found: skipping "
                      "smartpark.fast.%s; the pure twin serves (install libssl-dev to build it)"
                      % name)
                continue
            kw = {"libraries": ["crypto"], "optional": True,
                  "define_macros": [("SP_USE_OPENSSL", "1")]}
        elif name in USE_CRYPTO:
            crypto = _have_openssl() if crypto is None else crypto
            if crypto:
                kw = {"libraries": ["crypto"], "define_macros": [("SP_USE_OPENSSL", "1")]}
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
