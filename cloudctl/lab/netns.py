"""Enter a named network namespace (``ip netns``) from Python.

``enter(name)`` moves the calling thread for good (threads it starts later inherit it: the CLI
calls it before any work); ``entered(name)`` moves it for a block and back."""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import EnvironmentNotReady

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise EnvironmentNotReady(f"cannot enter network namespace {what}: {os.strerror(err)}")


def enter(name: str) -> None:
    if not exists(name):
        raise EnvironmentNotReady(
            f"network namespace {name} does not exist (is the lab up? `cloudctl lab up`)")
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(fd, name)
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        enter(name)
        try:
            yield
        finally:
            _setns(own, "of this process")
    finally:
        os.close(own)
