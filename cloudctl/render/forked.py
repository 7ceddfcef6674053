"""Run one function in a forked child process while this one keeps working.

``start(fn)`` forks; the child runs ``fn`` and sends back its pickled result (or the
CloudctlError it raised) through a pipe, then exits with ``os._exit`` (no atexit handlers, no
flushing of buffers inherited from the parent). The returned function waits for the child and
returns that result or raises that error. Anything else (no fork on this platform, a failed
fork, a child that died or raised something other than a CloudctlError, a result that does not
unpickle) makes ``fn`` run here instead, so the outcome is always what ``fn()`` would give,
tracebacks of bugs included.

A process with other threads running runs ``fn`` here too: a forked child holds only the
calling thread, and a lock another thread held at the fork (the import lock, a logging lock)
would never be released in it.

Used by ``render_all`` to render the machine configs of a large rack on the second core (pure
Python holding the GIL, so a thread would not help) while the GitOps tree renders. The configs
and the bundle cross an anonymous pipe between two processes of the same user; they are never
written anywhere.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable
from typing import TypeVar

from ..errors import CloudctlError

T = TypeVar("T")


def _child(fn: Callable[[], T], w: int) -> None:
    try:
        try:
            payload = pickle.dumps((True, fn()), protocol=pickle.HIGHEST_PROTOCOL)
        except CloudctlError as exc:
            payload = pickle.dumps((False, exc), protocol=pickle.HIGHEST_PROTOCOL)
        with open(w, "wb", closefd=True) as out:
            out.write(payload)
    finally:
        os._exit(0)


def start(fn: Callable[[], T]) -> Callable[[], T]:
    """Start ``fn`` in a child process; call the returned function for its result."""
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return fn
    try:
        r, w = os.pipe()
    except OSError:
        return fn
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return fn
    if pid == 0:  # pragma: no cover - the child never returns
        os.close(r)
        try:
            _child(fn, w)
        finally:
            os._exit(1)
    os.close(w)

    def result() -> T:
        try:
            with open(r, "rb", closefd=True) as src:
                data = src.read()
        finally:
            os.waitpid(pid, 0)
        try:
            ok, value = pickle.loads(data)
        except Exception:
            return fn()  # the child died or could not say: do it here
        if ok:
            return value  # type: ignore[no-any-return]
        if isinstance(value, CloudctlError):
            raise value
        return fn()

    return result
