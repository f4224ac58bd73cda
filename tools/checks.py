"""House rules that can be checked mechanically (run by `make test`).

In the spirit of ESPHome's script/ci-custom.py: each rule is a function that
yields (path, line number, message) for every violation. Exit status 1 when
any rule is broken.

The rules, one function each:

- device imports: protocol/ and firmware/ import nothing MicroPython lacks;
- no blocking sleep in async firmware code;
- every module has a docstring; test module names are unique;
- no work notes in code or docs (*.py, *.pyx, *.pxi, *.md, Makefile): no
  references to issue numbers, no dates of work (a date such as the epochs
  1970-01-01 and 2000-01-01, or one inside an ISO timestamp, is data and
  passes), no "tonight", "this session" and the like. History lives in git;
- the docs stand on their own: no references to design notes kept outside
  the repository (the shared test vectors excepted);
- every fast/*.pyx says in its first line which reference it mirrors
  (`# Mirrors ...`) or why it has none (`# No reference twin: ...`);
- SQLite stays behind the store: `sqlite3` and the block mover
  (smartpark.fast.mover, its BlockMover) are imported only in hub/store/ (and by tests and
  benchmarks, which open SQLite files to check what was stored).

The complexity ceiling (ruff's C901, max-complexity 15) is ruff's own check,
configured in pyproject.toml.
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


def _py_files(top, suffixes=(".py",)):
    for base, dirs, files in os.walk(os.path.join(ROOT, top)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(files):
            if name.endswith(suffixes):
                yield os.path.join(base, name)


# Directories that are not the project's sources: tools' caches, builds, the venv.
_SKIP_DIRS = ("build", "dist", "node_modules", "__pycache__")


def _source_files(suffixes, names=()):
    """Every file of the repository whose name ends with one of `suffixes` or is one of
    `names`, skipping hidden directories (.git, .venv, ...), builds and egg-info."""
    for base, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                         and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith(suffixes) or name in names:
                yield os.path.join(base, name)


def _rel(path):
    return os.path.relpath(path, ROOT).replace(os.sep, "/")


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


# ---- work notes ---------------------------------------------------------------------------------

_NOTE_SUFFIXES = (".py", ".pyx", ".pxi", ".md")
_NOTE_NAMES = ("Makefile",)
# The files that define and test the rules below quote what they look for.
_NOTE_EXEMPT = ("tools/checks.py", "tests/tools/test_checks.py")

_ISSUE = re.compile(r"(?<![A-Za-z])issues? ?#?[0-9]+", re.IGNORECASE)
# A calendar date; one followed by "T" is part of an ISO timestamp (data, not a note).
_DATE = re.compile(r"(?<![0-9])(?:19|20)[0-9]{2}-[01][0-9]-[0-3][0-9](?![0-9T])")
# Epochs the code speaks of (Unix time; the ESP32 RTC and the hub's oldest reading time).
_EPOCH_DATES = ("1970-01-01", "2000-01-01")
_SESSION_WORDS = re.compile(
    r"\b(?:tonight|this (?:session|morning|afternoon|evening)|last (?:session|night))\b",
    re.IGNORECASE)


def _note_lines():
    """(path, line number, line) of every code and doc file the two rules below read."""
    for path in _source_files(_NOTE_SUFFIXES, _NOTE_NAMES):
        if _rel(path) not in _NOTE_EXEMPT:
            for number, line in _lines(path):
                yield path, number, line


def rule_no_work_notes():
    """Code and docs describe the project as it is: no issue numbers, dates of work or
    "tonight"/"this session" wording (history lives in git)."""
    for path, number, line in _note_lines():
        m = _ISSUE.search(line)
        if m:
            yield path, number, "issue number %r: say what the code does, not which issue" % (
                m.group(0))
        for m in _DATE.finditer(line):
            if m.group(0) not in _EPOCH_DATES:
                yield path, number, "date of work %r: history lives in git" % m.group(0)
        m = _SESSION_WORDS.search(line)
        if m:
            yield path, number, "%r: describe the project as it is now" % m.group(0)


# Design notes outside the repository; the shared test vectors are the one thing tests
# may take from beside it.
_OUTSIDE_DOCS = re.compile(r"\b(?:DESIGN|CONVENTIONS)\.md\b|\bshared/(?!vectors\b)")


def rule_docs_stand_alone():
    """No doc or comment sends the reader to notes outside the repository."""
    for path, number, line in _note_lines():
        m = _OUTSIDE_DOCS.search(line)
        if m:
            yield path, number, "reference to %r outside the repository: say it here" % (
                m.group(0))


# ---- fast/ -----------------------------------------------------------------------------------------

_TWIN_LINE = ("# Mirrors ", "# No reference twin: ")


def rule_fast_names_its_twin():
    """Every fast/*.pyx starts with `# Mirrors <reference>` or `# No reference twin: <why>`."""
    for path in _py_files("fast", (".pyx",)):
        with open(path, encoding="utf-8") as f:
            first = f.readline()
        if not first.startswith(_TWIN_LINE):
            yield path, 1, ("first line must be '# Mirrors <reference module>' or "
                            "'# No reference twin: <why>'")


# ---- the store boundary ----------------------------------------------------------------------------

_STORE_ONLY = re.compile(
    r"^\s*(?:import\s+sqlite3\b|from\s+sqlite3\b"
    r"|(?:from|import)\s+smartpark\.fast\.(?:mover|blockstore)\b"
    r"|from\s+(?:smartpark\.fast|\.+fast|\.)\s+import\s+(?:\(\s*)?(?:[\w\s,]*,\s*)?"
    r"(?:mover|blockstore|BlockMover)\b)")
# Where SQLite may be opened: the store itself, the mover it drives, and the tests and
# benchmarks that check what was stored.
_STORE_ALLOWED = ("hub/store/", "tests/", "benchmarks/", "fast/mover.pyx")


def rule_sqlite_behind_the_store():
    """No SQLite (sqlite3, the block mover) outside hub/store/: the Store methods of
    hub/interfaces.py are the only way to the data."""
    for path in _source_files((".py", ".pyx", ".pxi")):
        rel = _rel(path)
        if rel.startswith(_STORE_ALLOWED):
            continue
        for number, line in _lines(path):
            if _STORE_ONLY.match(line):
                yield path, number, ("SQLite outside hub/store/: use a Store method "
                                     "(hub/interfaces.py): " + line.strip())


RULES = (rule_device_imports, rule_no_blocking_sleep_in_async, rule_module_docstring,
         rule_unique_test_basenames, rule_no_work_notes, rule_docs_stand_alone,
         rule_fast_names_its_twin, rule_sqlite_behind_the_store)


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
