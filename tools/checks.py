"""House rules that can be checked mechanically (run by `make test`).

In the spirit of ESPHome's script/ci-custom.py: each rule is a function that
yields (path, line number, message) for every violation. Exit status 1 when
any rule is broken.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules that run on MicroPython: protocol/ and firmware/.
DEVICE_DIRS = ("protocol", "firmware")

# CPython-only constructs that MicroPython lacks or that bloat the device.
_FORBIDDEN_DEVICE_IMPORTS = re.compile(
    r"^\s*(from|import)\s+(typing|dataclasses|enum|abc|functools|pathlib|logging)\b"
)
_TIME_SLEEP = re.compile(r"\btime\.sleep(_ms|_us)?\s*\(")


def _py_files(top):
    for base, dirs, files in os.walk(os.path.join(ROOT, top)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(base, name)


def _lines(path):
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            yield number, line


def rule_device_imports():
    """protocol/ and firmware/ import nothing MicroPython lacks (shims aside)."""
    for top in DEVICE_DIRS:
        for path in _py_files(top):
            for number, line in _lines(path):
                if _FORBIDDEN_DEVICE_IMPORTS.match(line) and "# shim" not in line:
                    yield path, number, "import not available on MicroPython: " + line.strip()


def rule_no_blocking_sleep_in_async():
    """No time.sleep in async firmware code: it stalls every other task."""
    for path in _py_files("firmware"):
        text = open(path, encoding="utf-8").read()
        if "async def" not in text:
            continue
        for number, line in _lines(path):
            if _TIME_SLEEP.search(line) and "# blocking-ok" not in line:
                yield path, number, "time.sleep in a module with async code (use asyncio.sleep)"


def rule_module_docstring():
    """Every module says what it is for in its first lines."""
    for top in ("protocol", "fast", "hub", "tools", "firmware"):
        for path in _py_files(top):
            text = open(path, encoding="utf-8").read().lstrip()
            if text and not (text.startswith('"""') or text.startswith("'''") or text.startswith("#")):
                yield path, 1, "module has no docstring"


def rule_unique_test_basenames():
    """pytest (rootdir-relative imports, no __init__.py) needs unique test module names."""
    seen = {}
    for path in _py_files("tests"):
        name = os.path.basename(path)
        if not name.startswith("test_"):
            continue
        if name in seen:
            yield path, 1, "test module name also used by " + os.path.relpath(seen[name], ROOT)
        else:
            seen[name] = path


RULES = (rule_device_imports, rule_no_blocking_sleep_in_async, rule_module_docstring,
         rule_unique_test_basenames)


def main():
    failures = 0
    for rule in RULES:
        for path, number, message in rule():
            failures += 1
            print("%s:%d: %s [%s]" % (os.path.relpath(path, ROOT), number, message, rule.__name__))
    if failures:
        print("%d house-rule violation(s)" % failures)
        return 1
    print("house rules: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
