"""A gunicorn gevent worker that serves the streams of an HTTP/2 connection side by side.

gunicorn 27 serves HTTP/2 in its gevent worker, but one stream at a time per
connection: its connection loop runs each request to its end before it reads
the next frame, so a second event stream on the connection of a first never
starts, and while a stream waits for flow-control credit it reads the
socket itself. This worker keeps gunicorn's HTTP/2 state machine and gives
each connection three kinds of greenlet:

- the reader (the connection's own greenlet) reads frames and starts one
  greenlet per request;
- each stream's greenlet runs the application and queues its frames; it
  waits, without holding anything up, while its stream has no flow-control
  credit or while the connection has :data:`BUFFER_LIMIT` bytes queued;
- the writer writes what is queued to the socket, in order.

So a stream whose client stops reading (its window full) only stops its own
greenlet: its events wait in its queue until the slow-client rule
(``SSE_QUEUE_SIZE``) cuts it, which resets that stream alone
(``RST_STREAM``); the other streams of the connection go on. A stream the
client resets, or whose connection ends, is freed at once, on the reader's
greenlet (``hangups.ON_DEPARTURE``), before the connection's next request
is read. On SIGTERM the worker sends a graceful ``GOAWAY`` before the
streams end (each with ``END_STREAM`` after a whole event, or
``RST_STREAM`` if stuck in a write), so browsers reconnect on a new
connection, to another worker.

Run it with::

    gunicorn -k flask_sse_stream.gunicorn_http2.GeventWorker --http-protocols h2,h1 \\
        --certfile cert.pem --keyfile key.pem 'app:create_app()'
"""

from __future__ import annotations

import time
import weakref
from functools import partial
from typing import Any

import gevent
import gevent.event
import gevent.pool
from gunicorn.http.errors import NoMoreData
from gunicorn.http2.connection import HTTP2ServerConnection
from gunicorn.http2.errors import HTTP2ConnectionError, HTTP2ErrorCode, HTTP2ProtocolError, HTTP2StreamError
from gunicorn.http2.stream import StreamState
from gunicorn.workers.ggevent import GeventWorker as _GeventWorker
from hyperframe.frame import GoAwayFrame

from .hangups import ON_DEPARTURE, Departures

#: Bytes queued for one connection's socket before its streams wait for the writer.
BUFFER_LIMIT = 256 * 1024
#: Seconds the reader waits for a frame before it looks whether the worker is stopping.
READ_TICK = 1.0


class Connection(HTTP2ServerConnection):  # type: ignore[misc]
    """gunicorn's HTTP/2 connection, with its socket owned by one reader and one writer greenlet."""

    def __init__(self, cfg: Any, sock: Any, client_addr: Any) -> None:
        super().__init__(cfg, sock, client_addr)
        self._closed: bool = False
        self._out: list[bytes] = []
        self.buffered = 0
        self._queued = gevent.event.Event()
        self._progress = gevent.event.Event()
        self._broken: str | None = None
        self.goaway_sent = False
        #: The streams being served, by id, told when the peer resets them or the connection ends.
        self.departures = Departures()
        self.writer = gevent.spawn(self._write_forever)

    # The writer: the only greenlet that writes to the socket.

    def _send_pending_data(self) -> None:
        if self._broken is not None:
            raise HTTP2ConnectionError(f"Socket write error: {self._broken}")
        data = self.h2_conn.data_to_send()
        if data:
            self._queue(data)

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self.buffered += len(data)
        self._queued.set()

    def _write_forever(self) -> None:
        while True:
            self._queued.wait()
            self._queued.clear()
            out, self._out = self._out, []
            if not out:
                if self._closed:
                    return
                continue
            try:
                self.sock.sendall(b"".join(out))
            except OSError as error:
                self._broken = str(error)
                self._closed = True
                self._abort_all_streams()
                self._wake()
                return
            finally:
                self.buffered -= sum(map(len, out))
            self._wake()

    def flush_and_stop(self, timeout: float) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then stop the writer."""
        self._closed = True
        self._queued.set()
        self.writer.join(timeout)
        self.writer.kill(block=False)

    def goaway(self) -> None:
        """A graceful GOAWAY: the peer opens no more streams here; the open ones go on."""
        if self.goaway_sent or self._closed:
            return
        self.goaway_sent = True
        last = self.h2_conn.highest_inbound_stream_id
        self._queue(GoAwayFrame(0, last_stream_id=last, error_code=0).serialize())

    def close(self, error_code: int = 0, last_stream_id: int | None = None) -> None:
        # The last stream the peer opened, open or done: a request it sends meanwhile it may retry elsewhere.
        if last_stream_id is None:
            last_stream_id = self.h2_conn.highest_inbound_stream_id
        super().close(error_code, last_stream_id)

    # Waiting: streams wait for credit or room; the reader and the writer wake them.

    def _wake(self) -> None:
        progress, self._progress = self._progress, gevent.event.Event()
        progress.set()

    def _process_events(self, events: Any) -> Any:
        try:
            return super()._process_events(events)
        finally:
            self._wake()

    def _abort_all_streams(self) -> None:
        super()._abort_all_streams()
        self.departures.depart_all()
        self._wake()

    def _handle_stream_reset(self, event: Any) -> None:
        super()._handle_stream_reset(event)
        self.departures.depart(event.stream_id)  # here, before the next frame: a reload's request finds the slot free

    def _wait_for_flow_control_window(self, stream_id: int, deadline: float | None = None) -> int:
        """The stream's send window once it is open and the connection has room: 0 at ``deadline``, -1 if gone."""
        while True:
            if self._closed:
                return -1
            stream = self.streams.get(stream_id)
            if stream is None or stream.state is StreamState.CLOSED:
                return -1
            try:
                available = int(self.h2_conn.local_flow_control_window(stream_id))
            except Exception:  # h2's ProtocolError: the stream is closed on its side
                return -1
            if available > 0 and self.buffered < BUFFER_LIMIT:
                return available
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return 0
            self._progress.wait(wait)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> bool:
        if data and self.buffered >= BUFFER_LIMIT:
            deadline = time.monotonic() + self.stream_timeout if self.stream_timeout else None
            available = self._wait_for_flow_control_window(stream_id, deadline)
            if available == 0:
                self.abort_stream(stream_id, HTTP2ErrorCode.CANCEL)
                return False
            if available < 0:
                self.cleanup_stream(stream_id)
                return False
        return bool(super().send_data(stream_id, data, end_stream))

    def pump(self, stream_id: int | None = None) -> None:
        """A request body waits for the reader to bring its frames (for at most gunicorn's ``timeout``)."""
        if not self._progress.wait(self.stream_timeout) and stream_id is not None:
            self.abort_stream(stream_id, HTTP2ErrorCode.CANCEL)

    # The reader: reads without a socket timeout, which would be the writer's too.

    def _read_and_process(self, data: bytes | None, waiting_stream_id: int | None = None) -> Any:
        if data is None:
            try:
                with gevent.Timeout(READ_TICK, False):
                    data = self.sock.recv(self.READ_BUFFER_SIZE)
            except OSError as error:
                raise HTTP2ConnectionError(f"Socket read error: {error}") from error
            if data is None:
                return []  # no frame within a tick: the caller looks at the worker's state
        return super()._read_and_process(data, waiting_stream_id)


class GeventWorker(_GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, with the streams of an HTTP/2 connection served concurrently."""

    wsgi: Any  # the app, as gunicorn loads it

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        #: The connection and stream id each stream's greenlet serves.
        self._serving: dict[Any, tuple[Connection, int]] = {}

    def load_wsgi(self) -> None:
        # The app sees, on an HTTP/2 stream, how to be told of its client's departure.
        super().load_wsgi()
        app = self.wsgi

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            serving = self._serving.get(gevent.getcurrent())
            if serving is not None:
                environ[ON_DEPARTURE] = partial(serving[0].departures.watch, serving[1])
            return app(environ, start_response)

        self.wsgi = wsgi

    def handle_exit(self, sig: Any, frame: Any) -> None:
        self._goaway_all()
        super().handle_exit(sig, frame)

    def handle_quit(self, sig: Any, frame: Any) -> None:
        self._goaway_all()
        super().handle_quit(sig, frame)

    def _goaway_all(self) -> None:
        for connection in list(self._connections):
            connection.goaway()

    def handle_http2(self, listener: Any, client: Any, addr: Any, preface: bytes = b"", upgrade: Any = None) -> None:
        listener_name = listener.getsockname()
        client.settimeout(None)
        connection = Connection(self.cfg, client, addr)
        self._connections.add(connection)
        streams = gevent.pool.Group()
        try:
            if upgrade is not None:
                settings, http1_req, body = upgrade
                upgraded = connection.initiate_upgrade(settings, http1_req, body)
                streams.spawn(self._serve_stream, listener_name, upgraded, client, addr, connection)
            else:
                connection.initiate_connection()
            if preface:
                connection.receive_data(preface)
            self._read_streams(listener_name, client, addr, connection, streams)
        except (HTTP2ConnectionError, HTTP2ProtocolError, NoMoreData) as error:
            self.log.debug("HTTP/2 connection closed: %s", error)
        except OSError as error:
            self.log.debug("HTTP/2 socket error: %s", error)
        finally:
            connection.departures.depart_all()  # their slots are free before their greenlets end
            streams.kill(block=True, timeout=1)
            connection.close()
            connection.flush_and_stop(timeout=1)

    def _read_streams(self, listener_name: Any, client: Any, addr: Any, connection: Connection, streams: Any) -> None:
        busy_at = time.monotonic()
        while not connection.is_closed:
            if not self.alive:
                connection.goaway()
                if not len(streams):
                    return
            for request in connection.receive_data():
                streams.spawn(self._serve_stream, listener_name, request, client, addr, connection)
            # gunicorn's keepalive: an HTTP/2 connection without streams closes after it.
            if len(streams) or connection.streams:
                busy_at = time.monotonic()
            elif self.cfg.keepalive and time.monotonic() - busy_at > self.cfg.keepalive:
                return

    def _serve_stream(self, listener_name: Any, request: Any, client: Any, addr: Any, connection: Connection) -> None:
        stream_id = request.stream.stream_id
        me = gevent.getcurrent()
        self._serving[me] = (connection, stream_id)
        try:
            self._serve_http2_stream(listener_name, request, client, addr, connection)
        except gevent.GreenletExit:
            # Killed: the slow-client rule, or a stream its writer could not end. This stream
            # alone is reset; the others on the connection go on.
            connection.abort_stream(stream_id, HTTP2ErrorCode.CANCEL)
        except HTTP2StreamError as error:
            self.log.debug("HTTP/2 stream closed: %s", error)
        finally:
            del self._serving[me]
