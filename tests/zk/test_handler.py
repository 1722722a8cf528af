"""poll_select answers exactly as kazoo's stock selector_select does."""

from __future__ import annotations

import socket

import pytest
from kazoo.handlers.utils import selector_select

from nodepool_ng.zk.handler import poll_select


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def both(rlist, wlist, timeout):
    ours = poll_select(rlist, wlist, [], timeout)
    theirs = selector_select(rlist, wlist, [], timeout)
    assert ours == theirs
    return ours


def test_nothing_ready_times_out(pair):
    a, _ = pair
    assert both([a], [], 0.01) == ([], [], [])


def test_writable_socket(pair):
    a, _ = pair
    assert both([], [a], 0) == ([], [a], [])


def test_readable_wins_over_writable_like_kazoo(pair):
    a, b = pair
    b.send(b"x")
    # (kazoo's own lists the socket twice here; its connection loop never asks for both.)
    assert poll_select([a], [a], [], 0) == ([a], [], [])


def test_hang_up_counts_as_readable(pair):
    a, b = pair
    b.close()
    r, _, _ = both([a], [], 0)
    assert r == [a]
    assert a.recv(1) == b""


def test_file_descriptor_numbers_accepted(pair):
    a, b = pair
    b.send(b"x")
    assert poll_select([a.fileno()], [], [], 0) == ([a.fileno()], [], [])


def test_negative_timeout_rejected(pair):
    with pytest.raises(ValueError):
        poll_select([pair[0]], [], [], -1)
