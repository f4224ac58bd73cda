"""The house rules of tools/checks.py, each run on a small tree written by the test.

Every rule reads the repository through `checks.ROOT`; the tests point it at a
temporary directory holding just the files a case needs, so each case shows one
thing a rule finds or lets pass. (This file quotes what the work-notes rule looks
for, and is exempt from it by name in checks.py.)
"""

import os

import pytest
from smartpark.tools import checks


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """write(relpath, text) puts a file in a fresh tree that the rules then read."""
    monkeypatch.setattr(checks, "ROOT", str(tmp_path))

    def write(rel, text):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


def found(rule):
    """[(relative path, line number)] of what the rule reports, in order."""
    return [(os.path.relpath(path, checks.ROOT), number) for path, number, _ in rule()]


# ---- work notes -------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "# issue 7: the fast path",
    "Issue 12 made this faster.",
    "see issue #3",
    "def test_issue7_loaded():",
    "## Issues 4 and 5",
    "Measured 2026-11-24 on the shared machine.",
    "| run (2025-01-31) | 3 |",
    "tonight's figures",
    "Figures from this session:",
    "this morning the hub did 8k/s",
    "as last session showed",
])
def test_work_notes_are_found(tree, line):
    tree("hub/mod.py", '"""A module."""\n\n' + line + "\n")
    assert found(checks.rule_no_work_notes) == [("hub/mod.py", 3)]


@pytest.mark.parametrize("line", [
    "MIN_TIME = 946684800.0  # 2000-01-01T00:00:00Z",
    "a fresh ESP32 starts at 2000-01-01",
    "seconds since 1970-01-01",
    "stamp = '2024-05-01T12:00:00Z'",
    "tissue 5 is not an issue reference",
    "https://github.com/chrysn/aiocoap/issues/123",
    "this stops the hub",
    "the session's REPL; last sessions' output",
    "to=yesterday",
])
def test_data_and_ordinary_words_pass(tree, line):
    tree("hub/mod.py", '"""A module."""\n\n' + line + "\n")
    assert found(checks.rule_no_work_notes) == []


def test_work_notes_scope_covers_code_docs_and_makefile(tree):
    for rel in ("fast/x.pyx", "fast/x.pxi", "docs/architecture.md", "Makefile", "tests/t.py"):
        tree(rel, "ok\nissue 9\n")
    tree("notes.txt", "issue 9\n")                 # not a code or doc file
    tree(".venv/lib/site.py", "issue 9\n")         # hidden directories are not ours
    tree("build/lib/gen.py", "issue 9\n")
    tree("smartpark.egg-info/PKG-INFO.md", "issue 9\n")
    assert sorted(found(checks.rule_no_work_notes)) == [
        ("Makefile", 2), ("docs/architecture.md", 2), ("fast/x.pxi", 2), ("fast/x.pyx", 2),
        ("tests/t.py", 2)]


def test_the_rule_and_its_tests_are_exempt(tree):
    tree("tools/checks.py", "_ISSUE = 'issue 7' or 'tonight'\n")
    tree("tests/tools/test_checks.py", "'issue 7', '2026-11-24', 'this session'\n")
    tree("tools/other.py", "'issue 7'\n")
    assert found(checks.rule_no_work_notes) == [("tools/other.py", 1)]


def test_each_note_on_a_line_is_reported(tree):
    tree("README.md", "Issue 7, 2026-11-24, this session\n")
    messages = [m for _, _, m in checks.rule_no_work_notes()]
    assert len(messages) == 3
    assert "issue" in messages[0] and "2026-11-24" in messages[1] and "session" in messages[2]


# ---- docs stand on their own ------------------------------------------------------------------


def test_outside_design_notes_are_found(tree):
    tree("README.md", "Design: `../shared/DESIGN.md`.\nConventions: CONVENTIONS.md\n")
    tree("firmware/drivers/__init__.py", '"""Contract (see /work/shared/CONVENTIONS.md)."""\n')
    tree("tests/t.py", '"""As DESIGN.md claims."""\n')
    assert sorted(found(checks.rule_docs_stand_alone)) == [
        ("README.md", 1), ("README.md", 2), ("firmware/drivers/__init__.py", 1), ("tests/t.py", 1)]


def test_shared_test_vectors_may_be_named(tree):
    tree("tests/protocol/cases/case_cbor.py", '"""Vectors from ../shared/vectors (RFC 8949)."""\n')
    tree("tools/README.md", "`/work/shared/vectors` copied to the board\n")
    tree("docs/architecture.md", "see docs/performance.md and the folder READMEs\n")
    assert found(checks.rule_docs_stand_alone) == []


# ---- fast/*.pyx name their twin ---------------------------------------------------------------


def test_fast_modules_name_their_reference(tree):
    tree("fast/decode.pyx", "# Mirrors protocol/senml.py (decode + resolve).\n\"\"\"Doc.\"\"\"\n")
    tree("fast/udp.pyx", "# No reference twin: Linux syscalls (recvmmsg/sendmmsg).\n# cython: x\n")
    tree("fast/lane.pyx", "# cython: language_level=3\n# Mirrors hub/codec.py\n")
    tree("fast/rows.pyx", "\n# Mirrors hub/codec.py\n")
    tree("fast/empty.pyx", "")
    tree("fast/kinds.py", "# not a .pyx: not this rule's business\n")
    tree("fast/decl.pxd", "cdef int x\n")
    assert sorted(found(checks.rule_fast_names_its_twin)) == [
        ("fast/empty.pyx", 1), ("fast/lane.pyx", 1), ("fast/rows.pyx", 1)]


# ---- SQLite behind the store ------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "import sqlite3",
    "import sqlite3 as sq",
    "    import sqlite3",
    "from sqlite3 import Error",
    "from smartpark.fast import mover",
    "from smartpark.fast import blockstore as _blockstore",
    "from smartpark.fast import decode_batch, mover",
    "from smartpark.fast.mover import BlockMover",
    "import smartpark.fast.mover",
    "from smartpark.fast.blockstore import BlockMover",
    "from ..fast import mover",
    "from smartpark.fast import BlockMover, NewestTime",
])
def test_sqlite_outside_the_store_is_found(tree, line):
    tree("hub/api/http.py", '"""API."""\n' + line + "\n")
    assert found(checks.rule_sqlite_behind_the_store) == [("hub/api/http.py", 2)]


@pytest.mark.parametrize("line", [
    "from smartpark.fast import decode_batch, Rollups",
    "from smartpark.fast.lane import NewestTime",
    "# import sqlite3 is what the store does",
    'text = "import sqlite3"',
    "import sqlite3x",
])
def test_other_imports_pass(tree, line):
    tree("hub/api/http.py", '"""API."""\n' + line + "\n")
    assert found(checks.rule_sqlite_behind_the_store) == []


def test_the_store_tests_benchmarks_and_the_mover_may_open_sqlite(tree):
    tree("hub/store/sqlite.py", "import sqlite3\nfrom smartpark.fast.mover import BlockMover\n")
    tree("hub/store/journal.py", "from smartpark.fast import mover\n")
    tree("tests/hub/test_durability.py", "import sqlite3\n")
    tree("benchmarks/test_ingest_bench.py", "from smartpark.fast.mover import BlockMover\n")
    tree("fast/mover.pyx", "import sqlite3 as _pysqlite\n")
    tree("fast/lane.pyx", "import sqlite3\n")
    tree("tools/simulate.py", "import sqlite3\n")
    tree("hub/app.py", "from smartpark.fast import mover as _mover\n")
    assert sorted(found(checks.rule_sqlite_behind_the_store)) == [
        ("fast/lane.pyx", 1), ("hub/app.py", 1), ("tools/simulate.py", 1)]


# ---- the runner -------------------------------------------------------------------------------


def test_every_rule_runs_and_main_reports(tree, capsys):
    tree("hub/mod.py", '"""A module."""\nimport sqlite3  # issue 7\n')
    assert all(callable(rule) for rule in checks.RULES)
    for rule in (checks.rule_no_work_notes, checks.rule_docs_stand_alone,
                 checks.rule_fast_names_its_twin, checks.rule_sqlite_behind_the_store):
        assert rule in checks.RULES
    assert checks.main() == 1
    out = capsys.readouterr().out
    assert "hub/mod.py:2: issue number" in out and "[rule_no_work_notes]" in out
    assert "hub/mod.py:2: SQLite outside hub/store/" in out
    assert "2 house-rule violation(s)" in out


def test_a_clean_tree_passes(tree, capsys):
    tree("hub/mod.py", '"""A module."""\n')
    tree("fast/decode.pyx", "# Mirrors protocol/senml.py\n")
    assert checks.main() == 0
    assert "house rules: ok" in capsys.readouterr().out
