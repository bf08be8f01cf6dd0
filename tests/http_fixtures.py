"""A local HTTP server for tests: serves in-memory files on 127.0.0.1 and injects network faults.

    with FileServer() as server:
        server.add("/a.bin", data, faults=[Status(500), Drop(after=100_000)])
        download(server.url("/a.bin"), tmp_path / "a.bin")
        server.requests("/a.bin")      # [Request(path, headers, time), ...] in arrival order

Each request for a path takes that path's next fault; once none are left the file is served
normally, honouring `Range: bytes=N-` (206) unless it was added with `ignore_range=True`.
Unknown paths get a 404. Stalls wait on an event that `stop()` sets, so shutting down never hangs.

Faults: `Status(code, body, headers)` (e.g. 429 with `{"Retry-After": "1"}`), `Redirect(location,
code)` (to a path here or a URL on another server), `Body(data)` (200 with other content, e.g. an
HTML page), `Drop(after)` (a body shorter than its Content-Length) and `Stall(seconds)`.
`FileServer(latency=s)` answers every request `s` seconds late, so that requests overlap;
`max_in_flight()` is the most requests it was answering at one time.
"""

import re
import ssl
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Status:
    """Reply with this status code (and a short body, and extra headers such as Retry-After).

    A header value may be a function, called for each reply (e.g. an HTTP-date a few seconds ahead).
    """

    code: int
    body: bytes = b"error\n"
    headers: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Redirect:
    """Reply `code` (301, 302, 307, ...) with Location: a path on this server or a URL on another one."""

    location: str
    code: int = 302


@dataclass(frozen=True)
class Drop:
    """Promise the whole body (Content-Length), send `after` bytes of it, then close the connection."""

    after: int


@dataclass(frozen=True)
class Stall:
    """Go silent for `seconds` and then close: before any reply (after=None) or after `after` body bytes."""

    seconds: float
    after: int | None = None


@dataclass(frozen=True)
class Body:
    """Reply 200 with other content instead of the file (e.g. an HTML error page)."""

    data: bytes
    content_type: str = "text/html; charset=utf-8"


@dataclass
class Request:
    path: str
    headers: dict
    time: float = 0.0  # time.time() at arrival, comparable with HTTP dates


@dataclass
class _File:
    data: bytes
    content_type: str
    ignore_range: bool
    faults: deque = field(default_factory=deque)


def self_signed_certificate(folder) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command line (once per folder).
    A client trusts it through REQUESTS_CA_BUNDLE=<certificate>, as requests reads that variable."""
    folder = Path(folder)
    cert, key = folder / "127.0.0.1.crt", folder / "127.0.0.1.key"
    if not cert.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                        str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


class FileServer:
    """A ThreadingHTTPServer on 127.0.0.1 at a free port, serving what `add` gave it."""

    def __init__(self, latency: float = 0.0, tls=None):
        self.latency = latency
        self.tls = tls  # (certificate, key) files: serve https with them (see self_signed_certificate)
        self._files: dict[str, _File] = {}
        self._requests: list[Request] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = None
        self._thread = None

    def add(self, path: str, data: bytes, *, faults=(), ignore_range=False,
            content_type="application/octet-stream") -> str:
        """Serve `data` at `path`; returns its URL."""
        with self._lock:
            self._files[path] = _File(data, content_type, ignore_range, deque(faults))
        return self.url(path)

    def set_faults(self, path: str, faults) -> None:
        with self._lock:
            self._files[path].faults = deque(faults)

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}{path}"

    def requests(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def max_in_flight(self) -> int:
        """The most requests this server was answering at one time."""
        with self._lock:
            return self._max_in_flight

    def start(self) -> "FileServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # the name http.server dispatches GET requests to
                owner._serve(self)

            def log_message(self, *args):
                pass  # keep the test output clean

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*map(str, self.tls))
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if self.latency:
                self._stopping.wait(self.latency)
            self._answer(handler)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self._requests.append(Request(path, dict(handler.headers), time.time()))
            file = self._files.get(path)
            fault = file.faults.popleft() if file and file.faults else None
        try:
            if file is None:
                self._reply(handler, 404, {}, b"not found\n")
            elif isinstance(fault, Status):
                headers = {name: value() if callable(value) else value for name, value in fault.headers.items()}
                self._reply(handler, fault.code, headers, fault.body)
            elif isinstance(fault, Redirect):
                location = fault.location if "://" in fault.location else self.url(fault.location)
                self._reply(handler, fault.code, {"Location": location}, b"moved\n")
            elif isinstance(fault, Body):
                self._reply(handler, 200, {"Content-Type": fault.content_type}, fault.data)
            elif isinstance(fault, Stall) and fault.after is None:
                self._stopping.wait(fault.seconds)
            else:
                status, headers, body = self._file_reply(file, handler.headers.get("Range"))
                cut = fault.after if isinstance(fault, (Drop, Stall)) else None
                self._reply(handler, status, headers, body, send=cut)
                if isinstance(fault, Stall):
                    self._stopping.wait(fault.seconds)
        except OSError:
            pass  # the client gave up first (timed out, closed): nothing to answer
        handler.close_connection = True

    @staticmethod
    def _file_reply(file: _File, range_header):
        size = len(file.data)
        headers = {"Content-Type": file.content_type, "Accept-Ranges": "none" if file.ignore_range else "bytes"}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
        if not match or file.ignore_range:
            return 200, headers, file.data
        start = int(match.group(1))
        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        if start >= size:
            return 416, {"Content-Range": f"bytes */{size}"}, b""
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return 206, headers, file.data[start:end + 1]

    @staticmethod
    def _reply(handler, status, headers, body: bytes, send=None) -> None:
        """Send the status, headers with the full Content-Length, and `send` bytes of the body (all: None)."""
        handler.send_response(status)
        headers = {"Content-Type": "text/plain", **headers, "Content-Length": str(len(body))}
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body if send is None else body[:send])
        handler.wfile.flush()
