"""A TCP proxy in front of a redis-server that can hold a client's commands at a chosen point.

``hold_after(argument)`` arms it: the next time a client sends a command
with ``argument`` among its arguments (a key, say), the proxy forwards that
command and holds back whatever that client sends after it, until
``release()``. Meanwhile the test acts on
Redis directly, so its commands run between the held client's commands, as
they could on a slow network. Real sockets, real Redis: only the timing is
chosen.
"""

from __future__ import annotations

import socket
import threading

from .servers import free_port


def _commands(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split RESP arrays (what clients send) into whole commands, and the incomplete rest."""
    commands = []
    position = 0
    while True:
        start = position
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0 or buffer[position : position + 1] != b"*":
            break
        count = int(buffer[position + 1 : line_end])
        position = line_end + 2
        complete = True
        for _ in range(count):
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                complete = False
                break
            size = int(buffer[position + 1 : line_end])
            position = line_end + 2 + size + 2
            if position > len(buffer):
                complete = False
                break
        if not complete:
            position = start
            break
        commands.append(buffer[start:position])
    return commands, buffer[position:]


def _arguments(command: bytes) -> list[bytes]:
    """The bulk strings of one RESP array: the command name and its arguments."""
    arguments = []
    position = command.index(b"\r\n") + 2
    while position < len(command):
        size_end = command.index(b"\r\n", position)
        size = int(command[position + 1 : size_end])
        arguments.append(command[size_end + 2 : size_end + 2 + size])
        position = size_end + 2 + size + 2
    return arguments


class RedisProxy:
    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._armed: bytes | None = None
        self._before = False
        self._reply_armed: bytes | None = None
        self._reply_before = False
        self._lock = threading.Lock()
        self.holding = threading.Event()
        self._released = threading.Event()
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def hold_after(self, argument: bytes) -> None:
        with self._lock:
            self._armed, self._before = argument, False
            self._released.clear()
            self.holding.clear()

    def hold_before(self, argument: bytes) -> None:
        """As :meth:`hold_after`, but the command with ``argument`` itself is held too."""
        with self._lock:
            self._armed, self._before = argument, True
            self._released.clear()
            self.holding.clear()

    def hold_replies_after(self, text: bytes) -> None:
        """Arm it: the next reply to a client with ``text`` in it goes through; what Redis sends that client after
        it is held back until ``release()``: a connection that stays up but receives nothing more."""
        with self._lock:
            self._reply_armed, self._reply_before = text, False
            self._released.clear()
            self.holding.clear()

    def hold_reply(self, text: bytes) -> None:
        """As :meth:`hold_replies_after`, but the reply with ``text`` in it is held too: the command has run in
        Redis, and its client does not know the answer yet."""
        with self._lock:
            self._reply_armed, self._reply_before = text, True
            self._released.clear()
            self.holding.clear()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._closed = True
        self._released.set()
        self._listener.close()
        for sock in self._sockets:
            _end(sock)
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.redis_port))
            self._sockets += [client, server]
            threading.Thread(target=self._client_to_server, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    hold = self._reply_armed is not None and self._reply_armed in data
                    before = hold and self._reply_before
                    if hold:
                        self._reply_armed = None
                if before:
                    self.holding.set()
                    self._released.wait(30)
                target.sendall(data)
                if hold and not before:
                    self.holding.set()
                    self._released.wait()
        except OSError:
            pass
        finally:
            _end(source)
            _end(target)

    def _client_to_server(self, client: socket.socket, server: socket.socket) -> None:
        pending = b""
        try:
            while data := client.recv(65536):
                commands, pending = _commands(pending + data)
                for command in commands:
                    with self._lock:
                        hold = self._armed is not None and self._armed in _arguments(command)
                        before = hold and self._before
                        if hold:
                            self._armed = None
                    if before:
                        self.holding.set()
                        self._released.wait(30)
                    server.sendall(command)
                    if hold and not before:
                        self.holding.set()
                        self._released.wait(30)
        except OSError:
            pass
        finally:
            _end(client)
            _end(server)


def _end(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
