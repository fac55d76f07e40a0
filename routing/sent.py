"""Lua scripts sent to Redis now and answered later, so their round trips overlap the caller's other work.

redis-py's ``Script`` sends ``EVALSHA`` and waits for the reply. On an attempt's path the breaker's permit and
its verdict each cost one such round trip (Redis runs the script on another core while this process waits),
right next to a SQL transaction that does not depend on it: the hold before the call, the settle after it.
A :class:`Line` writes the command and returns at once; :meth:`Sent.answer` reads the reply when it is
needed, by which time it has usually arrived.

Redis runs a script when it arrives, so the shared state changes at the moment it would with a blocking call;
only the reading of the answer moves. Each thread has a connection of its own on the line (made from the
client's pool settings, never shared with the pool), and Redis answers a connection's commands in the order
they came, so replies are read first in, first out: answering one reads the replies sent before it too.

Errors are redis-py's own. An idle connection is checked before a command goes out (a socket the server
closed accepts a write without complaint, and only the read would fail): one that Redis closed (a restart, an
idle timeout) is reconnected first, and a send that fails is made once more on a new socket. A reply that
cannot be read (a timeout, a lost connection) fails every command still unread on that connection, since
their replies are lost with it. A script Redis does not know (a restart, ``SCRIPT FLUSH``) is loaded and run
when its ``NOSCRIPT`` reply is read, as ``Script`` does: after any command sent behind it on the same
connection, so where the order of two scripts matters, read the first before sending the second (the
breakers never leave two unread on a thread).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

_UNREAD = object()


class Sent:
    """One script call in flight on this thread's connection; :meth:`answer` reads its reply (once)."""

    __slots__ = ("_answer", "_error", "_track", "args", "keys", "script")

    def __init__(self, track: _Track, script: Script, keys: list[str], args: list[Any]) -> None:
        self._track, self.script, self.keys, self.args = track, script, keys, args
        self._answer: Any = _UNREAD
        self._error: BaseException | None = None

    @property
    def read(self) -> bool:
        """True once the reply has been read (or was lost)."""
        return self._answer is not _UNREAD or self._error is not None

    def answer(self) -> Any:
        """The script's reply; raises what reading it raised (the same error on every later call)."""
        if not self.read:
            self._track.read_through(self)
        if self._error is not None:
            raise self._error
        return self._answer


class _Track:
    """This thread's connection of a :class:`Line` and the commands sent on it whose replies are unread."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.conn: Any = client.connection_pool.make_connection()  # redis-py leaves its connections untyped
        self.unread: deque[Sent] = deque()

    def send(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Sent:
        sent = Sent(self, script, list(keys), list(args))
        packed = self.conn.pack_command("EVALSHA", script.sha, len(sent.keys), *sent.keys, *sent.args)
        if not self.unread and self.conn.is_connected and not self._still_open():
            self.conn.disconnect()  # Redis closed it while idle (a restart, a timeout): writing would not say so
        try:
            self.conn.send_packed_command(packed, check_health=False)
        except redis.ConnectionError:
            if self.unread:  # replies still owed on the lost connection are lost with it
                self._lose(redis.ConnectionError("the connection to Redis was lost before these replies came"))
            self.conn.disconnect()
            self.conn.send_packed_command(packed, check_health=False)  # on a new socket, once
        self.unread.append(sent)
        return sent

    def _still_open(self) -> bool:
        """An idle connection with nothing to read: one poll, as redis-py's pool does before lending one out.
        A socket the server closed reads as end of file (an error), and an idle one has no reply pending."""
        try:
            return not self.conn.can_read()
        except (redis.ConnectionError, OSError):
            return False

    def read_through(self, wanted: Sent) -> None:
        """Read the replies in the order they were sent, up to and including ``wanted``'s."""
        while not wanted.read:
            sent = self.unread.popleft()
            try:
                sent._answer = self.conn.read_response()
            except NoScriptError:  # an error reply, read: the connection is clean; load the script and run it
                sent._answer = self._run_now(sent)
            except BaseException as exc:  # any failure mid-reply leaves the socket unusable
                self.conn.disconnect()  # what is left unread on it must not reach the next command
                sent._error = exc
                self._lose(exc)
                if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: recorded, and on their way
                    raise

    def _run_now(self, sent: Sent) -> Any:
        try:
            return sent.script(keys=sent.keys, args=sent.args)
        except redis.RedisError as exc:
            sent._error = exc
            return _UNREAD

    def _lose(self, exc: BaseException) -> None:
        while self.unread:
            self.unread.popleft()._error = exc


class Line:
    """Sends scripts on ``client``'s Redis without waiting; one connection per thread (and per process: a
    forked child makes its own and never touches its parent's)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._local = threading.local()

    def send(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Sent:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.track, local.pid = _Track(self.client), os.getpid()
        track: _Track = local.track
        return track.send(script, keys, args)

    def close(self) -> None:
        """Close this thread's connection (replies still unread are lost)."""
        if getattr(self._local, "pid", None) == os.getpid():
            track: _Track = self._local.track
            track._lose(redis.ConnectionError("the line was closed"))
            track.conn.disconnect()
            del self._local.pid
