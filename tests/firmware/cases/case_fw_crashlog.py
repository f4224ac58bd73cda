"""crash.log stays small, and its newest line names the exception, file and line (both interpreters)."""

import os

import crashlog
from compat import exists


def _boom(i):
    raise ValueError("bad value %d\nsecond line" % i + "x" * 100)


def _crash(i):
    try:
        _boom(i)
    except ValueError as e:
        crashlog.note(e)
        return e


def test_log_keeps_the_last_crashes_only():
    for name in (crashlog.FILE, crashlog.FILE + ".tmp"):
        if exists(name):
            os.remove(name)
    for i in range(20):
        _crash(i)
    ls = crashlog.lines()
    assert len(ls) == crashlog.KEEP, ls
    assert ls[-1].startswith("ValueError case_fw_crashlog.py:"), ls[-1]
    assert "bad value 19 second line" in ls[-1] and "bad value 16" in ls[0], ls
    with open(crashlog.FILE) as f:
        assert len(f.read()) <= 400
    assert all(len(x) < 100 for x in ls)


def test_last_is_type_file_and_line():
    _crash(1)
    last = crashlog.last()
    typ, where = last.split(" ")
    f, line = where.split(":")
    assert typ == "ValueError" and f == "case_fw_crashlog.py", last
    assert int(line) == 10, last   # the raise in _boom
