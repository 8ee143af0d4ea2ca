"""A loopback HTTP proxy that adds a fixed delay to every request and counts them: real GCS latency, emulated.

fake-gcs-server answers in under a millisecond, which hides what rules real GCS: 20-40 ms per request from a VM in
the same region. Put this proxy between a storage client and the emulator (point `STORAGE_EMULATOR_HOST` at `url`)
and every request waits `latency_seconds` before it is forwarded, as a round trip would make it wait. Requests on
different connections wait at the same time, exactly as concurrent requests to GCS do, so the proxy shows whether
many-object work overlaps its requests or runs them one after another.

It keeps HTTP/1.1 connections alive on both sides (one upstream connection per client connection), streams bodies
in blocks (so big transfers do not sit in memory), serves each client connection on its own thread, and is bounded:
at most `max_connections` connections are served at once (more wait to be accepted), and sockets time out.
Counters: `requests` (total), `peak_in_flight` (most requests being served at the same moment), `by_method`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import http.server
import json
import os
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, quote, unquote, urlsplit

from octue_dagster.testing.emulator import EMULATOR_VARIABLE, Emulator, free_port

_BLOCK = 256 * 1024
#: Requests under this path are the proxy's own counters, for a parent process (see `ProxyProcess`).
CONTROL_PATH = "/__latency_proxy__/"
_SOCKET_TIMEOUT_SECONDS = 60.0
#: Hop-by-hop headers (RFC 9110 section 7.6.1) are not forwarded; the proxy frames bodies itself.
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authenticate", "proxy-authorization",
}


class LatencyProxy:
    """A running proxy in front of `upstream_url` (e.g. the emulator's URL); use as a context manager.

    `latency_seconds` is added to every request before it is forwarded. `max_connections` bounds the threads.
    `enforce_preconditions=True` makes patches and deletes honour their preconditions as on GCS: see
    `PreconditionBook`.
    """

    def __init__(
        self,
        upstream_url: str,
        latency_seconds: float = 0.025,
        *,
        max_connections: int = 128,
        enforce_preconditions: bool = False,
    ) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"The latency proxy forwards to a plain http:// emulator URL; got {upstream_url!r}.")
        self.upstream = (parts.hostname, parts.port or 80)
        self.latency_seconds = latency_seconds
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._in_flight = 0
        self.requests = 0
        self.peak_in_flight = 0
        self.by_method: collections.Counter[str] = collections.Counter()
        #: With `enforce_preconditions`, the metagenerations this proxy keeps for the emulator (see the class).
        self.preconditions = PreconditionBook() if enforce_preconditions else None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The value for `STORAGE_EMULATOR_HOST` that sends a client through the proxy."""
        if self._server is None:
            raise RuntimeError("The proxy is not running; use it as a context manager or call start().")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self) -> None:
        """Zero the counters (between measurements)."""
        with self._lock:
            self.requests = 0
            self.peak_in_flight = 0
            self.by_method.clear()

    def start(self) -> LatencyProxy:
        server = _Server(("127.0.0.1", 0), _Handler, self)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="latency-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _begin(self, method: str) -> None:
        with self._lock:
            self.requests += 1
            self.by_method[method] += 1
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type, proxy: LatencyProxy) -> None:
        self.proxy = proxy
        self._slots = threading.BoundedSemaphore(proxy.max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:  # type: ignore[override]
        self._slots.acquire()  # bounded: the accept loop waits while every slot is serving a connection
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _SOCKET_TIMEOUT_SECONDS
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and delayed ACKs add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
        super().finish()

    def _relay(self) -> None:
        proxy = self.server.proxy
        if self.path.startswith(CONTROL_PATH):
            self._control(proxy)
            return
        proxy._begin(self.command)
        try:
            time.sleep(proxy.latency_seconds)  # the round trip a real request would wait for
            book = proxy.preconditions
            target = book.written_object(self.command, self.path) if book is not None else None
            body = None
            if book is not None and target is None and book.is_conditional_upload(self.command, self.path):
                # An upload names its object in its body (small: the JSON resource, or a multipart upload's parts).
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = book.uploaded_object(self.path, body)
            if target is None:
                self._forward(book, body=body)
                return
            with book.lock_for(target):  # check and write as one step, as GCS does
                if not book.preconditions_hold(target, self.path, self._upstream_generation):
                    if body is None:
                        self._discard_body()
                    self._answer_precondition_failed(target)
                    return
                self._forward(book, patched=target if self.command == "PATCH" else None, body=body)
        except (OSError, http.client.HTTPException):
            self.close_connection = True  # the client sees a dropped connection, as it would from a broken network
            if self._upstream is not None:
                self._upstream.close()
                self._upstream = None
        finally:
            proxy._end()

    def _forward(
        self, book: PreconditionBook | None, patched: tuple[str, str] | None = None, body: bytes | None = None
    ) -> None:
        """Send the request upstream and relay the answer (a successful patch of `patched` counts as one); `body` is
        the request's body if it was read already."""
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(*proxy.upstream, timeout=_SOCKET_TIMEOUT_SECONDS)
        upstream = self._upstream
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for key, value in self.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                upstream.putheader(key, value)
        upstream.endheaders()
        for block in [body] if body is not None else _blocks(self.rfile, length):
            upstream.send(block)
        response = upstream.getresponse()
        self.send_response_only(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        body_length = response.getheader("Content-Length")
        is_json = "json" in (response.getheader("Content-Type") or "")
        if self.command == "HEAD" or response.status in (204, 304):
            self.send_header("Content-Length", body_length or "0")
            self.end_headers()
            response.read()
        elif book is not None and is_json and response.status == 200:
            if patched is not None:
                book.bump(patched)
            body = book.rewrite(response.read())  # JSON answers are small: object resources and listing pages
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif body_length is not None:
            self.send_header("Content-Length", body_length)
            self.end_headers()
            for block in _blocks(response, int(body_length)):
                self.wfile.write(block)
        else:  # re-frame a chunked (or close-delimited) answer as chunked, block by block
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while block := response.read(_BLOCK):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        if response.will_close:
            upstream.close()
            self._upstream = None

    def _upstream_generation(self, target: tuple[str, str]) -> int:
        """The object's current generation as the emulator holds it (0 if there is none), read on the side."""
        connection = http.client.HTTPConnection(*self.server.proxy.upstream, timeout=_SOCKET_TIMEOUT_SECONDS)
        try:
            connection.request("GET", f"/storage/v1/b/{quote(target[0], safe='')}/o/{quote(target[1], safe='')}")
            response = connection.getresponse()
            body = response.read()
            return int(json.loads(body)["generation"]) if response.status == 200 else 0
        finally:
            connection.close()

    def _control(self, proxy: LatencyProxy) -> None:
        """Answer the counters (GET) or reset them (POST) for a parent process; never delayed, never counted."""
        if self.command == "POST":
            self._discard_body()
            proxy.reset()
        with proxy._lock:
            stats = {"requests": proxy.requests, "peak_in_flight": proxy.peak_in_flight, "by_method": proxy.by_method}
            body = json.dumps(stats).encode()
        self.send_response_only(200, "OK")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _discard_body(self) -> None:
        for _ in _blocks(self.rfile, int(self.headers.get("Content-Length") or 0)):
            pass

    def _answer_precondition_failed(self, target: tuple[str, str]) -> None:
        body = json.dumps(
            {"error": {"code": 412, "message": f"Precondition Failed: metageneration of {target[0]}/{target[1]}"}}
        ).encode()
        self.send_response_only(412, "Precondition Failed")
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _relay


_OBJECT_PATH = re.compile(r"^/storage/v1/b/(?P<bucket>[^/?]+)/o/(?P<name>[^/?]+)(?:\?|$)")


class PreconditionBook:
    """Preconditions as GCS enforces them, for an emulator that does not (fake-gcs-server leaves every object at
    metageneration 1, and ignores `ifMetagenerationMatch` on patches and `ifGenerationMatch` on deletes).

    The proxy counts the metadata patches it forwards: each successful PATCH of an object adds one to its
    metageneration (back to 1 when the generation changes), and the `metageneration` of every object resource it
    relays (reads, listings, patch and upload answers) is rewritten to the count. A PATCH or DELETE whose
    `ifMetagenerationMatch` or `ifGenerationMatch` does not hold, or an upload (multipart, or the start of a resumable
    session) whose `ifMetagenerationMatch` does not, is answered 412 without being forwarded (the generation is read
    from the emulator on the side). Only writes that go through the proxy are counted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[tuple[str, str], tuple[int, int]] = {}  # (bucket, name) -> (generation, metageneration)
        self._object_locks: dict[tuple[str, str], threading.Lock] = collections.defaultdict(threading.Lock)

    @staticmethod
    def written_object(method: str, path: str) -> tuple[str, str] | None:
        """The (bucket, name) a metadata patch or a delete writes to, else `None`."""
        match = _OBJECT_PATH.match(path) if method in ("PATCH", "DELETE") else None
        return None if match is None else (unquote(match["bucket"]), unquote(match["name"]))

    @staticmethod
    def is_conditional_upload(method: str, path: str) -> bool:
        """Whether a request starts an upload (multipart, or a resumable session) with a metageneration
        precondition, which GCS checks against the object being replaced."""
        return method == "POST" and path.startswith("/upload/storage/v1/b/") and "ifMetagenerationMatch=" in path

    @staticmethod
    def uploaded_object(path: str, body: bytes) -> tuple[str, str] | None:
        """The (bucket, name) an upload writes to: the name is in its JSON resource (the body, or a multipart
        body's first part)."""
        bucket = unquote(path.split("/upload/storage/v1/b/", 1)[1].split("/", 1)[0])
        name = re.search(rb'"name"\s*:\s*("(?:[^"\\]|\\.)*")', body)
        return None if name is None else (bucket, json.loads(name[1]))

    def preconditions_hold(
        self, target: tuple[str, str], path: str, generation_of: Callable[[tuple[str, str]], int]
    ) -> bool:
        """Whether the request's `ifMetagenerationMatch` and `ifGenerationMatch` hold for the object now."""
        query = parse_qs(urlsplit(path).query)
        if "ifMetagenerationMatch" in query and int(query["ifMetagenerationMatch"][0]) != self.current(target):
            return False
        return "ifGenerationMatch" not in query or int(query["ifGenerationMatch"][0]) == generation_of(target)

    def lock_for(self, target: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._object_locks[target]

    def current(self, target: tuple[str, str]) -> int:
        with self._lock:
            return self._state.get(target, (0, 1))[1]

    def bump(self, target: tuple[str, str]) -> None:
        with self._lock:
            generation, metageneration = self._state.get(target, (0, 1))
            self._state[target] = (generation, metageneration + 1)

    def rewrite(self, body: bytes) -> bytes:
        """The JSON answer with every object resource's metageneration replaced by the counted one."""
        try:
            document = json.loads(body)
        except ValueError:
            return body
        if not isinstance(document, dict):
            return body
        resources = [document, document.get("resource"), *(document.get("items") or [])]
        for resource in resources:
            # fake-gcs-server's patch answers carry no "kind"; an object resource is what names a bucket and a name.
            if isinstance(resource, dict) and {"bucket", "name", "generation"} <= resource.keys():
                resource["metageneration"] = str(self._observe(resource))
        return json.dumps(document).encode()

    def _observe(self, resource: dict) -> int:
        target, generation = (resource["bucket"], resource["name"]), int(resource.get("generation") or 0)
        with self._lock:
            known = self._state.get(target)
            if known is None or known[0] != generation:
                if known is not None and known[0] == 0:  # patched before its generation was seen
                    known = (generation, known[1])
                else:
                    known = (generation, 1)
                self._state[target] = known
            return known[1]


class ProxyProcess:
    """A `LatencyProxy` in a process of its own, with the same counters and `reset`.

    Benchmarks use it so that the proxy's Python work (parsing and relaying every request) does not compete for the
    measured process's interpreter lock: a network adds latency without taking the client's CPU.
    """

    def __init__(self, upstream_url: str, latency_seconds: float, *, max_connections: int = 128,
                 enforce_preconditions: bool = False) -> None:
        command = [sys.executable, "-m", "octue_dagster.testing.latency_proxy", "--upstream", upstream_url,
                   "--latency", str(latency_seconds), "--max-connections", str(max_connections)]
        if enforce_preconditions:
            command.append("--enforce-preconditions")
        # The child serves until its stdin closes, so it cannot outlive this process.
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self._process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise RuntimeError("The latency proxy process did not start.")

    def _stats(self, method: str = "GET") -> dict:
        data = b"" if method == "POST" else None
        request = urllib.request.Request(f"{self.url}{CONTROL_PATH}stats", method=method, data=data)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    @property
    def requests(self) -> int:
        return self._stats()["requests"]

    @property
    def peak_in_flight(self) -> int:
        return self._stats()["peak_in_flight"]

    @property
    def by_method(self) -> collections.Counter[str]:
        return collections.Counter(self._stats()["by_method"])

    def reset(self) -> None:
        self._stats("POST")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def emulator_with_latency(
    latency_seconds: float,
    log_path: str | os.PathLike[str] | None = None,
    *,
    max_connections: int = 128,
    enforce_preconditions: bool = False,
    separate_process: bool = False,
) -> Iterator[tuple[Emulator, LatencyProxy | ProxyProcess]]:
    """A fresh emulator behind a latency proxy, with `STORAGE_EMULATOR_HOST` pointing at the proxy for the block.

    The emulator hands out links (media links, resumable-upload sessions) that name the proxy, so that every request
    of a transfer pays the latency, not just the first. `separate_process=True` runs the proxy in its own process.
    """
    port = free_port()
    kind = ProxyProcess if separate_process else LatencyProxy
    proxy = kind(
        f"http://127.0.0.1:{port}",
        latency_seconds,
        max_connections=max_connections,
        enforce_preconditions=enforce_preconditions,
    )
    with proxy:
        with Emulator(log_path, port, external_url=proxy.url) as emulator:
            previous = os.environ.get(EMULATOR_VARIABLE)
            os.environ[EMULATOR_VARIABLE] = proxy.url
            try:
                yield emulator, proxy
            finally:
                if previous is None:
                    os.environ.pop(EMULATOR_VARIABLE, None)
                else:
                    os.environ[EMULATOR_VARIABLE] = previous


def _blocks(stream, length: int) -> Iterator[bytes]:
    remaining = length
    while remaining > 0:
        block = stream.read(min(_BLOCK, remaining))
        if not block:
            raise ConnectionError("The stream ended before its Content-Length.")
        remaining -= len(block)
        yield block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a latency proxy until stdin closes; print its URL first.")
    parser.add_argument("--upstream", required=True, help="the emulator's URL")
    parser.add_argument("--latency", type=float, default=0.025, help="seconds added to every request")
    parser.add_argument("--max-connections", type=int, default=128)
    parser.add_argument("--enforce-preconditions", action="store_true")
    arguments = parser.parse_args(argv)
    with LatencyProxy(arguments.upstream, arguments.latency, max_connections=arguments.max_connections,
                      enforce_preconditions=arguments.enforce_preconditions) as proxy:
        print(proxy.url, flush=True)
        sys.stdin.read()
    return 0


__all__ = ["LatencyProxy", "ProxyProcess", "emulator_with_latency"]


if __name__ == "__main__":
    sys.exit(main())
