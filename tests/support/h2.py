"""gunicorn serving HTTP/2 itself (TLS with a throwaway certificate, or h2c), and an HTTP/2 client built on ``h2``.

``H2Server`` runs ``tests/apps/h2.py`` under
``gunicorn -k flask_sse_stream.gunicorn_http2.GeventWorker --http-protocols h2,h1``
with a certificate made for it, or with ``--http2-cleartext both``.

``H2Client`` is one HTTP/2 connection on which a test opens many streams. A
thread reads the connection; each stream parses its SSE events. Like a
browser, it credits the connection's flow-control window for every byte
that arrives, and a stream's own window only while the stream reads: a
stream ``stall()``-ed stops reading, and its window fills. Every byte
received is kept in ``wire`` (``record=True``) for a test to parse.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .servers import PYTHON, ProcessServer, free_port

WORKER = "flask_sse_stream.gunicorn_http2.GeventWorker"
#: The receive windows a browser opens (Chromium: 6 MiB per stream, 15 MiB per connection).
STREAM_WINDOW = 6 * 1024 * 1024
CONNECTION_WINDOW = 15 * 1024 * 1024


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, valid for a day: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class H2Server:
    """One gunicorn worker serving HTTP/2 itself, with ``config`` for the extension."""

    def __init__(
        self, directory: Path, tls: bool, config: dict[str, Any] | None = None, *extra: str, worker: str = WORKER
    ) -> None:
        self.port = free_port()
        self.tls = tls
        command = [PYTHON, "-m", "gunicorn", "-k", worker, "-w", "1", "--no-control-socket",
                   "--http-protocols", "h2,h1", "--graceful-timeout", "60", "-b", f"127.0.0.1:{self.port}"]  # fmt: skip
        if tls:
            cert, key = make_cert(directory)
            command += ["--certfile", str(cert), "--keyfile", str(key)]
        else:
            command += ["--http2-cleartext", "both"]
        command += [*extra, "tests.apps.h2:create_app()"]
        env = {"H2_SSE_CONFIG": json.dumps(config or {})}
        self.server = ProcessServer(command, self.port, env=env, log=directory / "gunicorn.log")
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.http = self.client()

    def client(self) -> httpx.Client:
        """An httpx client of this server over HTTP/2 (prior knowledge for h2c)."""
        return httpx.Client(base_url=self.url, http1=self.tls, http2=True, verify=False, timeout=30)

    def post(self, path: str, **fields: Any) -> Any:
        response = self.http.post(path, data=fields)
        assert response.http_version == "HTTP/2", response.http_version
        response.raise_for_status()
        return response.json()

    def info(self) -> Any:
        return self.http.get("/info").json()

    def worker(self) -> int:
        return int(self.info()["pid"])

    def why(self) -> str:
        return f"\n--- gunicorn log ---\n{self.server.output}"

    def stop(self) -> None:
        self.http.close()
        self.server.stop()


class H2Stream:
    """One request's stream: its status, headers, SSE events, and how it ended."""

    def __init__(self, client: H2Client, stream_id: int) -> None:
        self.client = client
        self.stream_id = stream_id
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.events: list[dict[str, str]] = []
        self.comments: list[str] = []
        #: "END_STREAM", "RST_STREAM <code>", or "connection lost"; None while open.
        self.ended: str | None = None
        self.stalled = False
        self._parsed = 0

    def feed(self, data: bytes) -> None:
        self.body += data
        while (end := self.body.find(b"\n\n", self._parsed)) >= 0:
            block = bytes(self.body[self._parsed : end]).decode()
            self._parsed = end + 2
            event: dict[str, str] = {}
            for line in block.split("\n"):
                field, _, value = line.partition(":")
                if not field:
                    self.comments.append(value.strip())
                    continue
                value = value[1:] if value.startswith(" ") else value
                event[field] = event[field] + "\n" + value if field == "data" and field in event else value
            if "data" in event:
                self.events.append(event)

    def data(self) -> list[str]:
        with self.client.changed:
            return [event["data"] for event in self.events]

    def stall(self) -> None:
        """Stop reading: no more credit for this stream's window (the connection's still gets it)."""
        self.stalled = True

    def wait(self, condition: Callable[[H2Stream], object], timeout: float = 10.0, what: str = "") -> None:
        with self.client.changed:
            if not self.client.changed.wait_for(lambda: condition(self), timeout):
                raise AssertionError(f"stream {self.stream_id}: not {what or condition} within {timeout} s: {self!r}")

    def wait_events(self, count: int, timeout: float = 10.0) -> list[str]:
        self.wait(lambda stream: len(stream.events) >= count, timeout, f"{count} events")
        return self.data()

    def wait_ended(self, timeout: float = 10.0) -> str:
        self.wait(lambda stream: stream.ended is not None, timeout, "ended")
        assert self.ended is not None
        return self.ended

    def __repr__(self) -> str:
        return f"<H2Stream {self.stream_id} status={self.status} events={len(self.events)} ended={self.ended}>"


class _Connection(h2.connection.H2Connection):  # type: ignore[misc]
    """h2's client side, which takes a graceful GOAWAY as browsers do: the open streams go on (RFC 9113 6.8)."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        if frame.error_code != 0:
            return super()._receive_goaway_frame(frame)
        event = h2.events.ConnectionTerminated()
        event.error_code = h2.errors.ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        return [], [event]


class H2Client:
    """One HTTP/2 connection to ``port`` (TLS with ALPN ``h2``, or h2c with prior knowledge)."""

    def __init__(
        self, port: int, tls: bool, record: bool = False, stream_window: int = STREAM_WINDOW, upgrade: str | None = None
    ) -> None:
        """With ``upgrade`` (a path, h2c only), the connection starts as an HTTP/1.1 GET of it with ``Upgrade: h2c``,
        whose response is stream 1 (``self.streams[1]``)."""
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            raw = context.wrap_socket(raw, server_hostname="localhost")
            assert raw.selected_alpn_protocol() == "h2", raw.selected_alpn_protocol()
        raw.settimeout(None)
        self.sock = raw
        self.tls = tls
        self.record = record
        self.wire = bytearray()
        self.goaway: Any = None
        self.changed = threading.Condition()
        self.streams: dict[int, H2Stream] = {}
        self.conn = _Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: stream_window}
        )
        if upgrade is None:
            self.conn.initiate_connection()
        else:
            self._upgrade(upgrade)
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.sock.sendall(self.conn.data_to_send())
        # One thread does all the connection's I/O (OpenSSL takes no read and write from two threads at once);
        # open() wakes it through this pair to send.
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing = False
        self._reader = threading.Thread(target=self._run, daemon=True)
        self._reader.start()

    def _upgrade(self, path: str) -> None:
        settings = self.conn.initiate_upgrade_connection()
        request = (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                   f"Upgrade: h2c\r\nHTTP2-Settings: {settings.decode()}\r\n\r\n")  # fmt: skip
        self.sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += self.sock.recv(1)  # byte by byte: what follows the 101 is HTTP/2, for h2
        assert answer.startswith(b"HTTP/1.1 101"), answer
        self.streams[1] = H2Stream(self, 1)

    def open(self, path: str, headers: dict[str, str] | None = None) -> H2Stream:
        """A GET of ``path`` on a new stream of this connection."""
        scheme = "https" if self.tls else "http"
        fields = [(":method", "GET"), (":path", path), (":scheme", scheme), (":authority", "localhost")]
        fields += [(name.lower(), value) for name, value in (headers or {}).items()]
        with self.changed:
            stream_id = self.conn.get_next_available_stream_id()
            stream = self.streams[stream_id] = H2Stream(self, stream_id)
            self.conn.send_headers(stream_id, fields, end_stream=True)
        self._wake_w.send(b"x")
        return stream

    def reset(self, stream: H2Stream, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Reset ``stream`` (``RST_STREAM``; CANCEL is what a browser sends for a page it closes or reloads)."""
        with self.changed:
            self.conn.reset_stream(stream.stream_id, error_code=code)
        self._wake_w.send(b"x")

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._closing:
                pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
                ready = [key.fileobj for key, _ in selector.select(None if not pending else 0)]
                if self._wake_r in ready:
                    self._wake_r.recv(4096)
                data = b"?"
                if pending or self.sock in ready:
                    try:
                        data = self.sock.recv(65536)
                    except OSError:
                        data = b""
                if not self._step(data):
                    return
        finally:
            selector.close()

    def _step(self, data: bytes) -> bool:
        """Take ``data`` (``b"?"``: nothing read) and send what is due; False once the connection is gone."""
        with self.changed:
            if not data:
                for stream in self.streams.values():
                    stream.ended = stream.ended or "connection lost"
                self.changed.notify_all()
                return False
            if data != b"?":
                if self.record:
                    self.wire += data
                for event in self.conn.receive_data(data):
                    self._handle(event)
            try:
                self.sock.sendall(self.conn.data_to_send())
            except OSError:
                pass
            self.changed.notify_all()
            return True

    def _handle(self, event: Any) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            fields = dict(event.headers)
            stream.status = int(fields.pop(":status"))
            stream.headers = fields
        elif isinstance(event, h2.events.DataReceived) and stream is not None:
            stream.feed(event.data)
            length = event.flow_controlled_length
            if length:
                self.conn.increment_flow_control_window(length)
                if not stream.stalled:
                    try:
                        self.conn.increment_flow_control_window(length, stream_id=event.stream_id)
                    except h2.exceptions.StreamClosedError:
                        pass  # its end came in the same read
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.ended = "END_STREAM"
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.ended = f"RST_STREAM {int(event.error_code)}"
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def close(self) -> None:
        self._closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._wake_w.send(b"x")
        self._reader.join(5)
        self.sock.close()
        self._wake_r.close()
        self._wake_w.close()


def wait_all(streams: list[H2Stream], count: int, timeout: float = 10.0) -> None:
    """Every stream in ``streams`` has at least ``count`` events, within ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    for stream in streams:
        stream.wait(lambda s: len(s.events) >= count, max(0.0, deadline - time.monotonic()), f"{count} events")
