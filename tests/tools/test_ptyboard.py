"""The pty board behaves like a USB board for the real mpremote CLI (exec, fs cp, run, Ctrl-C)."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.micropython

MPREMOTE = os.path.join(os.path.dirname(sys.executable), "mpremote")


def mpremote(port, *args, timeout=60):
    return subprocess.run([MPREMOTE, "connect", port, "resume"] + list(args),
                          capture_output=True, text=True, timeout=timeout)


def test_exec_cp_and_run(pty_board, tmp_path):
    r = mpremote(pty_board.port, "exec", "import sys; print(sys.platform, 6 * 7)")
    assert r.returncode == 0 and r.stdout.split() == ["linux", "42"], r.stdout + r.stderr
    local = tmp_path / "data.bin"
    local.write_bytes(bytes(range(256)) * 40)
    r = mpremote(pty_board.port, "fs", "cp", str(local), ":data.bin")
    assert r.returncode == 0, r.stderr
    assert open(os.path.join(pty_board.flash_dir, "data.bin"), "rb").read() == local.read_bytes()
    script = tmp_path / "s.py"
    script.write_text("import os\nprint(os.stat('data.bin')[6])\n")
    r = mpremote(pty_board.port, "run", str(script))
    assert r.returncode == 0 and r.stdout.strip() == "10240", r.stdout + r.stderr


def test_ctrl_c_interrupts_main_and_exit_reboots(pty_board):
    with open(os.path.join(pty_board.flash_dir, "main.py"), "w") as f:
        f.write("import time\nprint('main up')\nwhile True:\n    time.sleep(0.05)\n")
    pty_board.reset()
    assert pty_board.wait_output(b"main up", 20)
    # mpremote's Ctrl-C reaches the program as SIGINT on its terminal, as on a board
    r = mpremote(pty_board.port, "exec", "print('repl ok')")
    assert r.returncode == 0 and "repl ok" in r.stdout, r.stdout + r.stderr
    assert pty_board.wait_output(b"KeyboardInterrupt in main.py", 10)
    boots = pty_board.boots
    # the program on the board exits (no machine.reset on the unix port): the board reboots
    subprocess.run([MPREMOTE, "connect", pty_board.port, "resume", "exec", "import sys\nsys.exit(0)"],
                   capture_output=True, timeout=30)
    deadline = time.monotonic() + 20
    while pty_board.boots == boots and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pty_board.boots == boots + 1
    assert pty_board.wait_output(b"main up", 20)


def test_ctrl_c_while_the_interpreter_starts_is_held_not_fatal(pty_board):
    """A session that opens right after a reset sends Ctrl-C before the interpreter has a
    handler for it: the board holds the bytes (a UART buffer) instead of dying and rebooting
    into main.py behind the session's back."""
    with open(os.path.join(pty_board.flash_dir, "main.py"), "w") as f:
        f.write("import time\nprint('main up')\nwhile True:\n    time.sleep(0.05)\n")
    fd = os.open(pty_board.port, os.O_RDWR | os.O_NOCTTY)
    try:
        for _ in range(3):
            pty_board.reset()
            boots = pty_board.boots
            os.write(fd, b"\r\x03")  # what mpremote's enter_raw_repl sends first
            assert pty_board.wait_output(b"KeyboardInterrupt in main.py", 20) or \
                pty_board.wait_output(b">>> ", 1), pty_board.console()[-500:]
            time.sleep(0.3)
            assert pty_board.boots == boots and pty_board.alive(), pty_board.console()[-500:]
    finally:
        os.close(fd)
    r = mpremote(pty_board.port, "exec", "print('repl ok')")
    assert r.returncode == 0 and "repl ok" in r.stdout, r.stdout + r.stderr
    assert b"[ptyboard] boot 1 ended: killed by SIGKILL" in pty_board.console()


def test_the_board_terminal_never_raises_sigint_itself(pty_board):
    """Around each execution the unix port restores its terminal's original mode with SIGINT
    at its default action for a few instructions; a Ctrl-C the terminal turned into SIGINT
    there killed the interpreter (seen in CI: right after a session left the raw REPL the next
    one's Ctrl-C landed there). So the terminal has no ISIG, idle or running a program, and
    the relay sends SIGINT only while a handler is installed: Ctrl-C still interrupts a
    program, and is a byte for the REPL."""
    import termios
    with open(os.path.join(pty_board.flash_dir, "main.py"), "w") as f:
        f.write("import time\nprint('main up')\nwhile True:\n    time.sleep(0.05)\n")
    pty_board.reset()
    assert pty_board.wait_output(b"main up", 20)
    assert not termios.tcgetattr(pty_board._master_a)[3] & termios.ISIG  # program running
    boots = pty_board.boots
    fd = os.open(pty_board.port, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, b"\x03")  # a handler is installed: SIGINT, KeyboardInterrupt
        assert pty_board.wait_output(b"KeyboardInterrupt in main.py", 10), pty_board.console()
        assert pty_board.wait_output(b">>> ", 10)
        assert not termios.tcgetattr(pty_board._master_a)[3] & termios.ISIG  # REPL
        for _ in range(20):  # at the prompt: a byte (a new prompt), never a signal
            n = pty_board.console().count(b">>> ")
            os.write(fd, b"\x03")
            deadline = time.monotonic() + 5
            while pty_board.console().count(b">>> ") == n and time.monotonic() < deadline:
                time.sleep(0.01)
            assert pty_board.console().count(b">>> ") > n
    finally:
        os.close(fd)
    assert pty_board.boots == boots and pty_board.alive(), pty_board.console()[-300:]
    r = mpremote(pty_board.port, "exec", "print('repl ok')")
    assert r.returncode == 0 and "repl ok" in r.stdout, r.stdout + r.stderr


def test_standalone_tool(tmp_path):
    """`python -m smartpark.tools.ptyboard --flash DIR` prints its port and stops on Ctrl-C."""
    flash = tmp_path / "flash"
    proc = subprocess.Popen([sys.executable, "-m", "smartpark.tools.ptyboard", "--flash", str(flash)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("board port: /dev/pts/"), line + proc.stderr.read()
        port = line.split()[2]
        time.sleep(0.5)
        r = mpremote(port, "exec", "f = open('hello.txt', 'w'); f.write('hi'); f.close()")
        assert r.returncode == 0, r.stderr
        assert (flash / "hello.txt").read_text() == "hi"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (flash / "hello.txt").exists()  # a given flash dir is kept
