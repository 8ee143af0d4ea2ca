"""A small fault-injecting HTTP proxy for tests: it sits between a storage client and the GCS emulator.

It listens on loopback only, serves each client connection on its own thread (at most `max_connections` at once),
forwards every request upstream with `Connection: close` (so each request gets its own upstream connection and a
response ends at end of stream), and injects faults into the first `times` requests that match a method and path:

- `status`: answer with an HTTP status (429, 500, 503, 412...) without forwarding the request;
- `cut_request`: forward the request head and the first `after_bytes` bytes of its body, then drop both connections
  (a shorter body reaches the server whole, and the client never hears the answer);
- `cut_response`: forward the request, relay the first `after_bytes` bytes of the response, then drop the connection
  (`in_body=False` counts from the start of the response head instead of the body);
- `stall`: forward the request, then hold the whole response for `stall_seconds` before relaying it (the client is
  expected to have timed out and gone by then);
- `garble`: forward the request (the server does the work), then answer `200 OK` with `body` instead of the
  server's answer (`b"{not json"` for a garbled answer, `b""` for an empty one);
- `hold_request` / `hold_response`: relay `after_bytes` bytes, set `fault.reached`, then stop relaying until the
  client disconnects (or `hold_seconds` pass): a way to catch a transfer mid-flight and kill its process;
- `corrupt_response`: forward the request, then relay the whole response with the body byte at offset `after_bytes`
  flipped and the headers named in `strip_headers` removed (e.g. `X-Goog-Hash`, so the client cannot check).

Everything is bounded: socket timeouts, hold and stall durations, and the number of threads.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

_BLOCK = 256 * 1024
_MAX_HEAD_BYTES = 64 * 1024
_SOCKET_TIMEOUT_SECONDS = 30.0

STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    408: "Request Timeout",
    412: "Precondition Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclasses.dataclass
class Fault:
    """One fault, applied to the first `times` requests whose method and path (with query) match the patterns."""

    kind: str
    method: str = ".*"
    path: str = ".*"
    times: int = 1
    status: int = 503
    after_bytes: int = 0
    in_body: bool = True
    stall_seconds: float = 2.0
    hold_seconds: float = 30.0
    strip_headers: tuple[str, ...] = ()
    #: What a `garble` fault answers instead of the server's answer.
    body: bytes = b"{not json"
    #: The error message a `status` fault answers with (GCS's JSON error format).
    message: str | None = None
    #: Let this many matching requests through before the fault starts (e.g. 1: hit a resumable upload's last chunk).
    skip: int = 0
    skipped: int = 0
    #: Called (on the proxy's thread) when the fault fires, before it acts: e.g. to let another writer in first.
    before: Callable[[], None] | None = None
    fired: int = 0
    reached: threading.Event = dataclasses.field(default_factory=threading.Event)

    KINDS = (
        "status", "cut_request", "cut_response", "stall", "hold_request", "hold_response", "corrupt_response", "garble"
    )

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"Unknown fault kind {self.kind!r}; use one of {self.KINDS}.")

    def matches(self, method: str, target: str) -> bool:
        return bool(re.fullmatch(self.method, method)) and bool(re.search(self.path, target))


@dataclasses.dataclass
class Exchange:
    """What the proxy saw of one request, and which fault (if any) it injected."""

    method: str
    target: str
    fault: str | None


class _Head:
    """A parsed HTTP message head."""

    def __init__(self, raw: bytes) -> None:
        lines = raw.decode("latin-1").split("\r\n")
        self.start = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers.append((name.strip(), value.strip()))

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def encode(self, drop: tuple[str, ...] = (), **replace: str) -> bytes:
        """The head with headers named in `replace` (underscores for dashes) replaced or added, and those in `drop`
        removed."""
        wanted = {key.replace("_", "-").lower(): value for key, value in replace.items()}
        dropped = {key.lower() for key in drop}
        lines = [self.start]
        for key, value in self.headers:
            if key.lower() not in wanted and key.lower() not in dropped:
                lines.append(f"{key}: {value}")
        lines.extend(f"{key}: {value}" for key, value in wanted.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Reader:
    """Buffered reading from a socket: heads up to a blank line, then raw body bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def head(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > _MAX_HEAD_BYTES:
                raise ConnectionError("HTTP head too large")
            chunk = self.sock.recv(_BLOCK)
            if not chunk:
                return None
            self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return raw

    def some(self, limit: int) -> bytes:
        if not self.buffer:
            self.buffer = self.sock.recv(_BLOCK)
        data, self.buffer = self.buffer[:limit], self.buffer[limit:]
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(_BLOCK)
            if not chunk:
                raise ConnectionError("connection closed inside a chunked body")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def exactly(self, count: int) -> bytes:
        parts = []
        while count > 0:
            data = self.some(count)
            if not data:
                raise ConnectionError("connection closed inside a body")
            parts.append(data)
            count -= len(data)
        return b"".join(parts)

    def body(self, head: _Head):
        """Yield the raw bytes of the message body that follows `head` (Content-Length or chunked)."""
        if (head.get("Transfer-Encoding") or "").lower() == "chunked":
            while True:
                size_line = self.line()
                yield size_line
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then a blank line
                        trailer = self.line()
                        yield trailer
                        if trailer == b"\r\n":
                            return
                yield self.exactly(size + 2)
        remaining = int(head.get("Content-Length") or 0)
        while remaining > 0:
            data = self.some(min(remaining, _BLOCK))
            if not data:
                raise ConnectionError("connection closed inside a body")
            remaining -= len(data)
            yield data


class FaultProxy:
    """A loopback HTTP proxy to `upstream` (such as `http://127.0.0.1:4443`) that injects `Fault`s.

    Use as a context manager; `url` is the proxy's address, for `STORAGE_EMULATOR_HOST` or a client's api_endpoint.
    """

    def __init__(self, upstream: str, max_connections: int = 32) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)

    # --- control -----------------------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, fault: Fault) -> Fault:
        """Arm a fault (faults are tried in the order they were added; one fault per request)."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Disarm every fault and forget the exchanges seen."""
        with self._lock:
            self.faults.clear()
            self.exchanges.clear()

    @property
    def injected(self) -> int:
        """How many faults have fired in total."""
        with self._lock:
            return sum(fault.fired for fault in self.faults)

    def _choose(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.fired < fault.times and fault.matches(method, target):
                    if fault.skipped < fault.skip:
                        fault.skipped += 1
                        continue
                    fault.fired += 1
                    self.exchanges.append(Exchange(method, target, fault.kind))
                    return fault
            self.exchanges.append(Exchange(method, target, None))
            return None

    # --- serving -----------------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            if not self._slots.acquire(timeout=5):
                client.close()  # too many connections at once: refuse rather than grow without bound
                continue
            thread = threading.Thread(target=self._serve, args=(client,), name="faultproxy-conn", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        try:
            client.settimeout(_SOCKET_TIMEOUT_SECONDS)
            self._handle_one(client)
        except (OSError, ValueError):
            pass  # a client that went away, or a fault we injected ourselves
        finally:
            _close(client)
            self._slots.release()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _handle_one(self, client: socket.socket) -> None:
        reader = _Reader(client)
        raw = reader.head()
        if raw is None:
            return
        head = _Head(raw)
        method, target = head.start.split(" ")[:2]
        fault = self._choose(method, target)
        if fault is not None and fault.before is not None:
            fault.before()

        if fault is not None and fault.kind == "status":
            for _ in reader.body(head):
                pass
            _send_status(client, fault.status, fault.message)
            return

        upstream = socket.create_connection(self.upstream, timeout=_SOCKET_TIMEOUT_SECONDS)
        try:
            upstream.sendall(head.encode(connection="close"))
            sent = 0
            for data in reader.body(head):
                if fault is not None and fault.kind in ("cut_request", "hold_request"):
                    room = fault.after_bytes - sent
                    if len(data) >= room:
                        upstream.sendall(data[: max(room, 0)])
                        if fault.kind == "hold_request":
                            self._hold(client, fault)
                        return
                upstream.sendall(data)
                sent += len(data)
            if fault is not None and fault.kind in ("cut_request", "hold_request"):
                # The body was shorter than `after_bytes`: the server has it all, but the client hears nothing back.
                if fault.kind == "hold_request":
                    self._hold(client, fault)
                return
            self._relay_response(upstream, client, fault)
        finally:
            _close(upstream)

    def _relay_response(self, upstream: socket.socket, client: socket.socket, fault: Fault | None) -> None:
        reader = _Reader(upstream)
        raw = reader.head()
        if raw is None:
            return
        head = _Head(raw)
        replace = {"connection": "close"}
        location = head.get("Location")
        if location and urlsplit(location).port == self.upstream[1]:
            # Resumable upload sessions: keep the following chunk requests coming through the proxy.
            replace["location"] = self.url + "/" + location.split("/", 3)[3]
        dropped = fault.strip_headers if fault is not None and fault.kind == "corrupt_response" else ()
        head_bytes = head.encode(dropped, **replace)
        body = []
        while data := reader.some(_BLOCK):
            body.append(data)
        content = b"".join(body)
        if fault is not None and fault.kind == "corrupt_response" and fault.after_bytes < len(content):
            offset = fault.after_bytes
            content = content[:offset] + bytes([content[offset] ^ 0xFF]) + content[offset + 1 :]
        message = head_bytes + content
        if fault is None:
            client.sendall(message)
            return
        if fault.kind == "stall":
            self._stopping.wait(fault.stall_seconds)
            client.sendall(message)
            return
        if fault.kind == "garble":
            client.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=UTF-8\r\n"
                + f"Content-Length: {len(fault.body)}\r\nConnection: close\r\n\r\n".encode()
                + fault.body
            )
            return
        if fault.kind in ("cut_response", "hold_response"):
            limit = fault.after_bytes + (len(head_bytes) if fault.in_body else 0)
            client.sendall(message[:limit])
            if fault.kind == "hold_response":
                self._hold(client, fault)
            return
        client.sendall(message)

    def _hold(self, client: socket.socket, fault: Fault) -> None:
        """Stop relaying until the client goes away (or the hold ends), telling the test that the point is reached."""
        fault.reached.set()
        client.settimeout(0.1)
        deadline = time.monotonic() + fault.hold_seconds
        while time.monotonic() < deadline and not self._stopping.is_set():
            try:
                if not client.recv(_BLOCK):
                    return
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return


def _send_status(client: socket.socket, status: int, message: str | None = None) -> None:
    reason = STATUS_TEXT.get(status, "Error")
    message = message or f"{reason} (injected by faultproxy)"
    body = json.dumps({"error": {"code": status, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=UTF-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    client.sendall(head + body)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def standard_faults(stall_seconds: float) -> dict[str, Callable[[str, str], Fault | None]]:
    """The fault catalogue of the reliability matrix: name -> a Fault aimed at requests matching (method, path)."""
    return {
        "none": lambda method, path: None,
        "http-429": lambda method, path: Fault("status", method, path, times=2, status=429),
        "http-500": lambda method, path: Fault("status", method, path, times=2, status=500),
        "http-503": lambda method, path: Fault("status", method, path, times=2, status=503),
        "cut-request": lambda method, path: Fault("cut_request", method, path, after_bytes=1000),
        "cut-response-head": lambda method, path: Fault("cut_response", method, path, after_bytes=40, in_body=False),
        "cut-response-body": lambda method, path: Fault("cut_response", method, path, after_bytes=20),
        "stall": lambda method, path: Fault("stall", method, path, stall_seconds=stall_seconds),
        "http-503-always": lambda method, path: Fault("status", method, path, times=10_000, status=503),
    }
