"""Fetching many small files from sites that block clients that download fast: a few requests at a time per
site, Retry-After honoured up to a cap, backoff with jitter, every retry counted.

    fetcher = PoliteFetcher(Politeness(timeout=(30, 30), retries=3, per_host=4, max_retry_after=60),
                            user_agent="my-tool/1.0 (what it downloads and why)")
    body, cause = fetcher.get(url)     # from any number of threads: (bytes, None) or (None, "http 404")
    print(fetcher.log.summary(60))     # "Retries: 2 waited on Retry-After (3.0 s in all); ..."
    fetcher.stop.set()                 # on Ctrl-C: waiting retries give up at once

At most `per_host` requests at a time go to one site (uploads0..8.wikiart.org count as one), whatever
the number of threads. 429 and 503 replies wait the Retry-After they give (seconds or an HTTP-date; the
whole site pauses, since the limit is the client's, not the file's) up to `max_retry_after`: a longer
demand fails that file at once. Other 5xx replies, timeouts and dropped connections are retried after
exponential backoff with jitter; an unknown host name and 4xx replies are not retried. `retries`
bounds the retries of one file, whatever their cause. tools/download.py fetches one large file,
resumably; this module fetches many small ones whole, and shares its causes ('timeout', 'connection').
"""

import contextlib
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from tools.download import BACKOFF, MAX_BACKOFF, RETRY_STATUSES, error_cause, name_unresolved

RETRY_AFTER_STATUSES = (429, 503)  # the replies whose Retry-After says when to come back
MAX_REDIRECTS = 10


@dataclass(frozen=True)
class Politeness:
    timeout: tuple  # (connect, read) seconds
    retries: int  # retries of one file, whatever their cause
    per_host: int  # requests at a time to one host
    max_retry_after: float  # the longest Retry-After worth waiting for, in seconds


def retry_after_seconds(value, now=None):
    """The seconds a Retry-After header asks for (delta-seconds or an HTTP-date), or None when unreadable."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():  # not str.isdigit alone: it accepts "²"
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with jitter: workers that failed together do not all come back together."""
    delay = min(MAX_BACKOFF, BACKOFF * 2 ** attempt)
    return delay / 2 + random.uniform(0, delay / 2)


def host_of(url: str) -> str:
    """The site a request counts against: WikiArt serves images from uploads0..uploads8.wikiart.org, one
    site that sees all of them, so a name counts by its last two labels; an address counts with its port."""
    parts = urlsplit(url)
    name = (parts.hostname or "").lower()
    if name.replace(".", "").isdigit() or ":" in name:  # IPv4 or IPv6: no labels to group by
        return f"{name}:{parts.port or parts.scheme}"
    return ".".join(name.split(".")[-2:])


class HostGate:
    """One host's share of the traffic: at most `limit` requests at a time, and the pause it last asked for."""

    def __init__(self, limit: int):
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._resume_at = 0.0  # time.monotonic()

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    @contextlib.contextmanager
    def slot(self, stop: threading.Event):
        """Hold one of the host's slots, after the host's pause (if any) is over or `stop` is set."""
        with self._slots:
            while not stop.is_set():
                with self._lock:
                    wait = self._resume_at - time.monotonic()
                if wait <= 0:
                    break
                stop.wait(wait)
            yield


class RetryLog:
    """What the retries cost, for the summary; shared by the worker threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.retry_after_waits = 0
        self.retry_after_seconds = 0.0
        self.over_cap = 0
        self.backoffs = 0

    def waited(self, seconds: float) -> None:
        with self._lock:
            self.retry_after_waits += 1
            self.retry_after_seconds += seconds

    def refused(self) -> None:
        with self._lock:
            self.over_cap += 1

    def backed_off(self) -> None:
        with self._lock:
            self.backoffs += 1

    def summary(self, cap: float):
        parts = []
        if self.retry_after_waits:
            parts.append(f"{self.retry_after_waits} waited on Retry-After ({self.retry_after_seconds:.1f} s in all)")
        if self.over_cap:
            parts.append(f"{self.over_cap} Retry-After over the {cap:g} s cap (not waited for: failed)")
        if self.backoffs:
            parts.append(f"{self.backoffs} after a backoff (5xx, timeout or dropped connection)")
        return "Retries: " + "; ".join(parts) if parts else None


def polite_session(user_agent: str, accept: str | None = None, pool: int = 4) -> requests.Session:
    """A Session without urllib3 retries (ours count and cap them), an identifying User-Agent, redirects followed."""
    adapter = HTTPAdapter(max_retries=0, pool_connections=pool, pool_maxsize=pool)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = MAX_REDIRECTS
    session.headers["User-Agent"] = user_agent
    if accept:
        session.headers["Accept"] = accept
    return session


def worth_retrying(exc: requests.RequestException) -> bool:
    transient = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    return isinstance(exc, transient) and not name_unresolved(exc)


class PoliteFetcher:
    """Fetches whole files politely (see the module's docstring); one per run, shared by the worker threads.

    `user_agent` should name the tool and its purpose, so that a site operator who sees the traffic knows what
    it is; `accept` is the Accept header (e.g. "image/jpeg,image/*;q=0.9")."""

    def __init__(self, polite: Politeness, user_agent: str, accept: str | None = None):
        self.polite, self.user_agent, self.accept = polite, user_agent, accept
        self.log = RetryLog()
        self.stop = threading.Event()  # set on Ctrl-C: waits end at once
        self._gates: dict[str, HostGate] = {}
        self._gates_lock = threading.Lock()
        self._local = threading.local()  # a Session per thread: requests does not promise that one is thread-safe

    def gate(self, url: str) -> HostGate:
        with self._gates_lock:
            return self._gates.setdefault(host_of(url), HostGate(self.polite.per_host))

    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = polite_session(self.user_agent, self.accept)
        return self._local.session

    def get(self, url: str):
        """(body, None) or (None, cause), after up to `retries` retries."""
        polite, gate = self.polite, self.gate(url)
        for attempt in range(polite.retries + 1):
            last = attempt == polite.retries
            if self.stop.is_set():
                return None, "interrupted"
            reply = error = None
            with gate.slot(self.stop):
                try:
                    reply = self.session().get(url, timeout=polite.timeout)
                except requests.TooManyRedirects:
                    return None, f"more than {MAX_REDIRECTS} redirects"
                except requests.RequestException as e:
                    error = e
            if error is not None:
                if last or not worth_retrying(error):
                    return None, error_cause(error)
            elif reply.status_code == 200:
                return reply.content, None
            else:
                cause = f"http {reply.status_code}"
                wait = (retry_after_seconds(reply.headers.get("Retry-After"))
                        if reply.status_code in RETRY_AFTER_STATUSES else None)
                if wait is not None:
                    if wait > polite.max_retry_after:
                        self.log.refused()
                        return None, f"{cause} (Retry-After {wait:.0f} s over the {polite.max_retry_after:g} s cap)"
                    if last:
                        return None, cause
                    gate.pause(wait)  # every request to this host waits, not just this one's retry
                    self.log.waited(wait)
                    continue
                if reply.status_code not in RETRY_STATUSES or last:
                    return None, cause
            self.log.backed_off()
            self.stop.wait(backoff_delay(attempt))
        raise AssertionError("unreachable: the last attempt returns")
