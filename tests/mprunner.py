"""Run the test functions of one case module under MicroPython (or CPython).

usage: micropython mprunner.py MODULE VECTORS_DIR

Each `test_*` function of MODULE runs once; one line per case is printed:
`PASS name` or `FAIL name: ExceptionType: message`. The last line is
`DONE passed failed`. Case modules use only what both interpreters have.
"""

import sys


def main():
    module_name = sys.argv[1]
    vectors = sys.argv[2] if len(sys.argv) > 2 else ""
    mod = __import__(module_name)
    if hasattr(mod, "setup"):
        mod.setup(vectors)
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    passed = failed = 0
    for name in names:
        try:
            getattr(mod, name)()
        except Exception as e:  # noqa: BLE001 - report every failure
            failed += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
        else:
            passed += 1
            print("PASS %s" % name)
    print("DONE %d %d" % (passed, failed))


main()
