"""Type-check firmware/ against the MicroPython ESP32 stubs (run by `make lint`).

micropython-stdlib-stubs installs a typeshed replacement (site-packages/stdlib)
and micropython-esp32-stubs top-level modules (machine.pyi, network.pyi, ...)
into site-packages, which mypy refuses on its search path. This links those
stub modules into a temporary directory, puts it on MYPYPATH, and runs mypy
with firmware/mypy.ini and the MicroPython typeshed. Exit status is mypy's.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISTS = ("micropython-esp32-stubs", "micropython-stdlib-stubs")


def _stub_tops():
    tops = {}
    for dist in DISTS:
        try:
            d = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            sys.exit("typecheck: %s is not installed (pip install -e '.[test]')" % dist)
        for f in d.files or ():
            top = f.parts[0]
            if top.endswith(".dist-info") or top == "stdlib" or top.endswith(".toml"):
                continue
            path = d.locate_file(top)
            tops[top] = str(path)
    site = str(metadata.distribution(DISTS[1]).locate_file(""))
    return tops, site


def main():
    tops, site = _stub_tops()
    tmp = tempfile.mkdtemp(prefix="sp-stubs-")
    try:
        for name, path in tops.items():
            os.symlink(path, os.path.join(tmp, name))
        env = dict(os.environ, MYPYPATH=tmp)
        cmd = [sys.executable, "-m", "mypy", "--config-file", os.path.join(ROOT, "firmware", "mypy.ini"),
               "--custom-typeshed-dir", site, os.path.join(ROOT, "firmware")]
        return subprocess.call(cmd, env=env, cwd=ROOT)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
