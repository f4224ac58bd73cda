"""smartpark.hub.process.start_hub: ready line found through a log file, one deadline."""

import os
import sys
import time

import pytest
from smartpark.hub.process import HubStartError, start_hub

CHATTY = r"""
import sys, time
for i in range(4000):   # ~300 KB on stderr: an unread pipe would block at 64 KB
    sys.stderr.write("log line %05d of a chatty start-up .................................\n" % i)
sys.stderr.flush()
print("smartpark hub ready coap=1234 http=5678 data=x decoder=fast-pure fastpath=off", flush=True)
for i in range(2000):   # and more after the ready line
    sys.stderr.write("after ready %05d ..................................................\n" % i)
sys.stderr.flush()
time.sleep(60)
"""


def test_chatty_server_does_not_block_and_ready_line_is_parsed(tmp_path):
    log = str(tmp_path / "hub.log")
    h = start_hub(command=[sys.executable, "-c", CHATTY], timeout=30, log_path=log)
    try:
        assert (h.coap_port, h.http_port) == (1234, 5678)
        assert h.fields["fastpath"] == "off" and h.fields["decoder"] == "fast-pure"
        # the child went on writing past any pipe size and is still alive (not blocked)
        text = ""
        for _ in range(200):
            text = h.log_text()
            if "after ready 01999" in text:
                break
            time.sleep(0.05)
        assert "after ready 01999" in text and h.alive()
    finally:
        assert h.stop(timeout=5) is not None
    assert os.path.getsize(log) > 64 * 1024


def test_no_ready_line_within_deadline_raises_with_the_log(tmp_path):
    cmd = [sys.executable, "-c", "import time; print('starting...', flush=True); time.sleep(60)"]
    with pytest.raises(HubStartError) as ei:
        start_hub(command=cmd, timeout=1.0, log_path=str(tmp_path / "hub.log"))
    assert "no ready line within 1s" in str(ei.value) and "starting..." in str(ei.value)


def test_early_exit_reports_code_and_log(tmp_path):
    cmd = [sys.executable, "-c", "import sys; sys.stderr.write('config key x: bad\\n'); "
           "sys.exit(2)"]
    with pytest.raises(HubStartError) as ei:
        start_hub(command=cmd, timeout=30)
    assert "exited with code 2" in str(ei.value) and "config key x: bad" in str(ei.value)
