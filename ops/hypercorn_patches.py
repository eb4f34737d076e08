"""Fixes for how hypercorn 0.18's trio worker (with h11 0.16) closes connections under quart-trio.

Every version involved is the newest release, and each problem below reproduces with a bare
QuartTrio app, so the fixes live here, applied once before serving, and refuse to apply to any
other version (the methods they replace may change).

1. Connections were never closed: neither idle keep-alives after ``keep_alive_timeout`` nor a
   response carrying ``Connection: close``. Hypercorn does that bookkeeping (``Closed`` /
   ``Updated(idle=True)`` in ``TCPServer.protocol_send``) inside the app's task, at the end of
   the app's last ``send``, and it also hands the app ``http.disconnect`` there; quart-trio
   answers the disconnect by cancelling that very task, so the cancel lands on the
   bookkeeping's first checkpoint. → run it shielded (bounded).
2. A client that pipelines requests without reading the answers leaked a file descriptor for
   ever: when a write fails, hypercorn tells the protocol but nothing wakes the reader parked
   on h11's PAUSED state. → a failed write ends the connection: cancel the reader, close.
3. A write under hypercorn's unbounded shield waits for ever on a client that stopped reading
   (pinning the connection and graceful shutdown). → each 64 KiB chunk gets ``SEND_TIMEOUT``;
   no progress in that time means the client is gone. And once the reader is done, the
   keep-alive timer stops, so a connection the client closed does not linger in CLOSE_WAIT.
4. Bytes after a request that is answered with ``Connection: close`` (a pipelined request, or
   what follows a body the server refused to read) made h11 raise while the answer was being
   sent; hypercorn then closed the socket under the response (``BusyResourceError``) and the
   client got nothing. → those bytes wait (PAUSED) until the answer is out; then the
   connection closes as it should.

5. (Speed, not a fix.) A response went out in three writes — head, body, end — each a
   syscall with its own lock, shield and timeout scope. → the head of a response with a
   ``Content-Length`` waits for its first body bytes and leaves with them; an empty end is
   not written.

6. (Speed, not a fix.) The keep-alive timer was a task started (``Nursery.start``) when a
   connection went idle and cancelled when a request came, twice per request. → one watcher
   per connection whose deadline moves (idle: now + keep-alive; busy: never); it closes the
   connection when the deadline passes, or when the server stops while the connection is idle
   (or as soon as it becomes idle), exactly when the timer task did.

7. The limit on a request's head (``h11_max_incomplete_size``) held only when the head came in
   pieces: h11 checks it while an event is incomplete, so the same 58 KB URL was parsed when it
   arrived in one read and refused (431) when the network split it. → a head over the limit is
   refused however it arrived. And the refusals made at this layer (431, and the 400 of bytes
   that are not HTTP/1.1) carry a JSON body with a reason, as the app's errors do.

A request with both ``Content-Length`` and ``Transfer-Encoding`` is left to the app
(``api.http_guard``), which answers it in the protocol's envelope with ``Connection: close``;
fix 4 is what makes that answer reach the client.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from typing import Any

import h11
import trio
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.trio.tcp_server import TCPServer

SEND_TIMEOUT = 15.0  # seconds without the client accepting one chunk: the client is gone
SEND_TIMEOUT_STOPPING = 1.0  # the same once the server is shutting down: a stop must not wait on a client
SEND_CHUNK = 64 * 1024
CLOSE_TIMEOUT = 5.0  # bound on the shielded closing and timer bookkeeping
FOR_VERSIONS = {"hypercorn": "0.18.", "h11": "0.16."}


async def _protocol_send(self: TCPServer, event: Any) -> None:
    if isinstance(event, RawData):
        broken = False
        async with self.send_lock:
            data = memoryview(event.data)
            try:
                stopping = self.context.terminated.is_set()
                for start in range(0, max(len(data), 1), SEND_CHUNK):
                    with trio.move_on_after(SEND_TIMEOUT_STOPPING if stopping else SEND_TIMEOUT) as scope:
                        scope.shield = True  # as upstream: a caller's cancel must not cut a frame in half
                        await self.stream.send_all(data[start:start + SEND_CHUNK])
                    if scope.cancelled_caught:
                        broken = True
                        break
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                broken = True
        if broken:
            await _abort(self)
    elif isinstance(event, Closed):
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            scope.shield = True
            await self._close()
            await self.protocol.handle(Closed())
    elif isinstance(event, Updated):  # fix 6: moving a deadline, nothing to wait for
        if event.idle:
            await self.idle_task.restart(self._task_group, self._idle_timeout)
        else:
            await self.idle_task.stop()


async def _abort(self: TCPServer) -> None:
    """The client is gone or will not read: end the connection from whichever task noticed."""
    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
        scope.shield = True
        reader = getattr(self, "_dw_reader_scope", None)
        if reader is not None:
            reader.cancel()  # it may be parked on the protocol's can_read, which nothing else sets
        self.idle_task.close()  # type: ignore[attr-defined]
        await self.stream.aclose()  # frees the descriptor now; run()'s own close is harmless after
        await self.protocol.handle(Closed())  # the app sees http.disconnect


class _IdleWatch:
    """hypercorn's ``TrioSingleTask`` for the keep-alive timer, without a task per request."""

    def __init__(self, server: TCPServer) -> None:
        self.server = server
        self.idle = False
        self.became_idle = trio.Event()
        self.scope: trio.CancelScope | None = None
        self.watching = False
        self.closed = False

    async def restart(self, task_group: Any, action: Any) -> None:
        """The connection is idle (hypercorn's call; ``action`` is its timer, replaced here)."""
        self.idle = True
        self.became_idle.set()
        deadline = trio.current_time() + self.server.config.keep_alive_timeout
        if self.scope is not None:
            self.scope.deadline = deadline
        elif not self.watching and not self.closed:
            self.watching = True
            task_group.spawn(self._watch, deadline)

    async def stop(self) -> None:
        """A request is being handled: no keep-alive deadline until it is answered."""
        self.idle = False
        self.became_idle = trio.Event()
        if self.scope is not None:
            self.scope.deadline = math.inf

    def close(self) -> None:
        """The connection is done: the watcher ends without closing anything."""
        self.closed = True
        self.idle = False
        if self.scope is not None:
            self.scope.cancel()

    async def _watch(self, deadline: float) -> None:
        terminated = self.server.context.terminated
        with trio.CancelScope(deadline=deadline) as self.scope:
            await terminated.wait()  # the server is stopping
            while not self.idle:
                await self.became_idle.wait()  # a request in progress is answered first
        self.scope = None
        if self.closed:
            return
        with trio.move_on_after(CLOSE_TIMEOUT) as shield:
            shield.shield = True
            await self.server._initiate_server_close()


_original_tcp_init = TCPServer.__init__


def _tcp_init(self: TCPServer, *args: Any, **kwargs: Any) -> None:
    _original_tcp_init(self, *args, **kwargs)
    self.idle_task = _IdleWatch(self)  # type: ignore[assignment]


_original_read_data = TCPServer._read_data


async def _read_data(self: TCPServer) -> None:
    with trio.CancelScope() as self._dw_reader_scope:
        await _original_read_data(self)
    # Reading is over (EOF, reset, timeout or abort): an armed keep-alive timer would keep the
    # connection's task group, and its descriptor, alive until keep_alive_timeout for nothing.
    self.idle_task.close()  # type: ignore[attr-defined]


class _Connection(h11.Connection):
    def next_event(self) -> Any:
        if (
            self.their_state is h11.MUST_CLOSE
            and self.our_state in (h11.SEND_RESPONSE, h11.SEND_BODY)
            and self.trailing_data[0]
        ):
            return h11.PAUSED  # fix 4: whatever follows waits until our answer is out
        buffered = len(self._receive_buffer)
        event = super().next_event()
        if type(event) is h11.Request and buffered - len(self._receive_buffer) > self._max_incomplete_event_size:
            self._process_error(self.their_role)  # fix 7: as h11 refuses a head that came in pieces
            raise h11.RemoteProtocolError("Receive buffer too long", error_status_hint=431)
        return event


_LAYER_ERRORS = {
    431: ("request_head_too_large", "The request line and headers are larger than the server accepts; "
          "send long filters in fewer conditions and large values in the body."),
    501: ("unsupported_transfer_encoding", "Only the chunked transfer encoding is accepted (or a Content-Length)."),
}
_NOT_HTTP = ("malformed_request", "The request is not valid HTTP/1.1.")


async def _send_error_response(self: Any, status_code: int) -> None:
    """Fix 7: the HTTP layer's refusals in the envelope's shape (a JSON reason and message)."""
    reason, message = _LAYER_ERRORS.get(status_code, _NOT_HTTP)
    body = json.dumps({"reason": reason, "message": message, "error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *self.config.response_headers("h11")]
    await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
    await self._send_h11_event(h11.Data(data=body))
    await self._send_h11_event(h11.EndOfMessage())


async def _send_h11_event(self: Any, event: Any) -> None:
    try:
        data = self.connection.send(event)
    except h11.LocalProtocolError:
        if self.connection.their_state != h11.ERROR:
            raise
        return
    pending = getattr(self, "_dw_head", None)
    if type(event) is h11.Response and any(name.lower() == b"content-length" for name, _ in event.headers):
        self._dw_head = data  # fix 5: the head leaves with the body
        return
    if pending is not None:
        self._dw_head = None
        data = pending + data
    if data:
        await self.send(RawData(data=data))


_original_h11_init = hypercorn_h11.H11Protocol.__init__


def _h11_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_h11_init(self, *args, **kwargs)
    self.connection = _Connection(h11.SERVER, max_incomplete_event_size=self.config.h11_max_incomplete_size)


def install() -> None:
    """Apply the fixes (idempotent); refuse versions they were not written for."""
    found = {name: importlib.metadata.version(name) for name in FOR_VERSIONS}
    if any(not found[name].startswith(prefix) for name, prefix in FOR_VERSIONS.items()):
        raise RuntimeError(f"ops.hypercorn_patches was written for hypercorn 0.18 and h11 0.16, not {found}")
    if getattr(TCPServer, "_dw_patched", False):
        return
    TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]
    TCPServer._read_data = _read_data  # type: ignore[method-assign]
    TCPServer.__init__ = _tcp_init  # type: ignore[method-assign]
    hypercorn_h11.H11Protocol.__init__ = _h11_init  # type: ignore[method-assign]
    hypercorn_h11.H11Protocol._send_h11_event = _send_h11_event  # type: ignore[method-assign]
    hypercorn_h11.H11Protocol._send_error_response = _send_error_response  # type: ignore[method-assign]
    TCPServer._dw_patched = True  # type: ignore[attr-defined]
