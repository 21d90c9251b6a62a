"""A real HTTP proxy in front of an S3 server (moto) that injects the faults a real S3 client meets.

``FaultyS3(upstream)`` listens on 127.0.0.1 and forwards every request to ``upstream``
(``http://host:port``), except when a fault is drawn:

* **failure**: answer ``fail_rate`` of the requests with an S3 error (``503 SlowDown`` or
  ``500 InternalError``, XML body) without forwarding them;
* **lost reply**: forward ``lost_reply_rate`` of the PUTs and DELETEs, let the server carry
  them out, then drop the client's connection without a byte of answer. The client cannot
  tell whether its write landed; a retried conditional PUT meets ``412 PreconditionFailed``
  from its own first attempt;
* **listing lag**: ListObjects / ListObjectsV2 replies leave out every key PUT through this
  proxy in the last ``listing_lag`` seconds: what an eventually-consistent listing shows of new keys.

``script(...)`` fixes what happens to the next requests, one action each, before any random
draw: ``"pass"``, ``"lose"`` (forward, then drop the reply, whatever the request), an error
code, or ``"lose-create"`` (left in place until a create, a PUT with ``If-None-Match: *``,
succeeds: its reply is lost). Knobs are plain attributes, changeable while requests flow.
Decisions come from one ``random.Random(seed)``, so a single-threaded client sees the same
faults on every run (concurrent clients draw from the same sequence in whatever order they
arrive). ``counts`` says how many faults of each kind were really injected
(``lost_replies:create``: lost replies of conditional PUTs that created their object).
"""

from __future__ import annotations

import html
import http.client
import random
import re
import socket
import threading
import time
import urllib.parse
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

# hop-by-hop headers, and the framing this proxy sets itself
NOT_FORWARDED = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                 "upgrade", "expect", "content-length"}
ERRORS = {
    "SlowDown": (503, "Please reduce your request rate."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
}
_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.DOTALL)
_KEY = re.compile(rb"<Key>(.*?)</Key>", re.DOTALL)
_KEY_COUNT = re.compile(rb"<KeyCount>(\d+)</KeyCount>")


def error_body(code: str, message: str, resource: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{html.escape(resource)}</Resource><RequestId>faulty-s3</RequestId></Error>").encode()


class FaultyS3:
    """The proxy: ``endpoint`` is its URL; a context manager that starts and stops it."""

    def __init__(self, upstream: str, seed: int = 0, fail_rate: float = 0.0, lost_reply_rate: float = 0.0,
                 listing_lag: float = 0.0, fail_codes: tuple[str, ...] = tuple(ERRORS)) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        unknown = set(fail_codes) - set(ERRORS)
        if unknown:
            raise ValueError(f"fail_codes: unknown S3 error codes {sorted(unknown)}; known: {sorted(ERRORS)}")
        self.upstream = (parsed.hostname, parsed.port)
        self.fail_rate = fail_rate
        self.fail_codes = tuple(fail_codes)
        self.lost_reply_rate = lost_reply_rate
        self.listing_lag = listing_lag
        self._script: deque[str] = deque()
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._written: dict[tuple[str, str], float] = {}  # (bucket, key) -> monotonic time of its last PUT
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="faulty-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def quiet(self) -> None:
        """Turn every fault off (counters stay)."""
        with self._lock:
            self.fail_rate = self.lost_reply_rate = self.listing_lag = 0.0
            self._script.clear()

    def script(self, *actions: str) -> None:
        """What the next requests meet, in order: "pass", "lose", "lose-create" or an error code."""
        unknown = set(actions) - {"pass", "lose", "lose-create"} - set(ERRORS)
        if unknown:
            raise ValueError(f"script: unknown actions {sorted(unknown)}; "
                             f"use pass, lose, lose-create or {sorted(ERRORS)}")
        with self._lock:
            self._script.extend(actions)

    @property
    def scripted(self) -> int:
        """Scripted actions not yet used."""
        with self._lock:
            return len(self._script)

    # -- decisions (under the lock: one seeded sequence) ------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _draw(self, write: bool, create: bool) -> str:
        """This request's fate: "pass", "lose" (scripted: drop any reply), "lose-write" (drop a 2xx reply),
        "lose-create" (drop a 2xx reply, then use up the scripted action) or an error code to answer with."""
        with self._lock:
            self.counts["requests"] += 1
            if self._script and self._script[0] == "lose-create":
                action = "lose-create" if create else "pass"
            elif self._script:
                action = self._script.popleft()
            elif self.fail_rate and self._rng.random() < self.fail_rate:
                action = self.fail_codes[self._rng.randrange(len(self.fail_codes))]
            elif write and self.lost_reply_rate and self._rng.random() < self.lost_reply_rate:
                action = "lose-write"
            else:
                action = "pass"
            if action in ERRORS:
                self.counts[f"failed:{action}"] += 1
                self.counts["failed"] += 1
            return action

    def _lose_create(self) -> bool:
        """Use up a scripted "lose-create" (False if another request did already)."""
        with self._lock:
            if self._script and self._script[0] == "lose-create":
                self._script.popleft()
                return True
            return False

    def _wrote(self, method: str, bucket: str, key: str) -> None:
        with self._lock:
            if method == "PUT":
                self._written[(bucket, key)] = time.monotonic()
            else:
                self._written.pop((bucket, key), None)

    def _fresh(self, bucket: str) -> set[str]:
        """Keys of ``bucket`` written less than ``listing_lag`` seconds ago."""
        with self._lock:
            if self.listing_lag <= 0:
                return set()
            since = time.monotonic() - self.listing_lag
            return {k for (b, k), t in self._written.items() if b == bucket and t > since}

    def _lag_listing(self, bucket: str, query: dict[str, list[str]], body: bytes) -> bytes:
        fresh = self._fresh(bucket)
        if not fresh or b"<ListBucketResult" not in body:
            return body
        url_encoded = query.get("encoding-type", [""])[0] == "url"
        hidden = 0

        def drop(match: re.Match[bytes]) -> bytes:
            nonlocal hidden
            key_match = _KEY.search(match.group(0))
            raw = html.unescape(key_match.group(1).decode()) if key_match else ""
            key = urllib.parse.unquote(raw) if url_encoded else raw
            if key in fresh:
                hidden += 1
                return b""
            return match.group(0)

        body = _CONTENTS.sub(drop, body)
        if hidden:
            body = _KEY_COUNT.sub(lambda m: b"<KeyCount>%d</KeyCount>" % (int(m.group(1)) - hidden), body)
            with self._lock:
                self.counts["lagged_listings"] += 1
                self.counts["hidden_keys"] += hidden
        return body

    # -- HTTP ---------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections as they do with S3

            def setup(self) -> None:
                super().setup()
                # headers and body go out in separate writes: without this, Nagle's algorithm and the
                # client's delayed ACK hold every reply with a body back by 40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve()

            do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _serve(self) -> None:
                body = self._body()
                split = urllib.parse.urlsplit(self.path)
                bucket, _, key = urllib.parse.unquote(split.path).lstrip("/").partition("/")
                conditional = self.command == "PUT" and self.headers.get("If-None-Match") == "*"
                action = proxy._draw(write=self.command in ("PUT", "DELETE"), create=conditional)
                if action in ERRORS:
                    status, message = ERRORS[action]
                    self._reply(status, [("Content-Type", "application/xml")],
                                error_body(action, message, split.path))
                    return
                status, headers, payload = self._forward(body)
                succeeded = 200 <= status < 300
                if self.command in ("PUT", "DELETE") and key and succeeded:
                    proxy._wrote(self.command, bucket, key)
                if action == "lose" or succeeded and (action == "lose-write"
                                                      or action == "lose-create" and proxy._lose_create()):
                    proxy._count("lost_replies")
                    created = conditional and succeeded
                    what = "create" if created else f"{self.command} {status}"
                    proxy._count(f"lost_replies:{what}")
                    self._drop()
                    return
                if self.command == "GET" and bucket and not key and status == 200:
                    payload = proxy._lag_listing(bucket, urllib.parse.parse_qs(split.query), payload)
                self._reply(status, headers, payload)

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                proxy._count("forwarded")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in NOT_FORWARDED}
                headers["Content-Length"] = str(len(body))
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                    kept = [(k, v) for k, v in response.getheaders()
                            if k.lower() not in NOT_FORWARDED | {"server", "date"}]
                    if self.command == "HEAD" and response.getheader("Content-Length") is not None:
                        kept.append(("Content-Length", response.getheader("Content-Length")))
                    return response.status, kept, payload
                finally:
                    connection.close()

            def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD" and payload:
                    self.wfile.write(payload)

            def _drop(self) -> None:
                """The server carried the request out; the client's connection closes with no answer."""
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        return Handler
