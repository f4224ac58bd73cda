"""Fixtures for node <-> hub tests: the harness on the path, a hub per test."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


@pytest.fixture
def hub(tmp_path):
    h = harness.Hub(tmp_path / "hub").start()
    yield h
    h.stop()


@pytest.fixture
def make_node(tmp_path, micropython_bin, micropython_path):
    nodes = []

    def make(name, config):
        n = harness.Node(tmp_path / name, config, micropython_bin, micropython_path)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.kill()
