"""Downloading files over HTTP: resumable, retried, time-limited and checksummed.

    download(url, "models/x/x.caffemodel", sha1="...")   # returns at once when already there and valid
    session = http_session(retries=5)                     # for many small files (the WikiArt images)

A download streams into `<dest>.part` and continues it with an HTTP Range request, both on a later
call and after a connection drops mid-file; the file is renamed to `dest` only when complete and its
checksum passes, so `dest` existing means it is whole. Failures raise `DownloadError`, whose message
names the URL, the cause and the fix.

Nothing a user placed is deleted: a file at `dest` that fails its checksum (a copy from elsewhere, an
older version) is moved aside to `<dest>.mismatch` before the download, and a download that fails
its checksum is kept as `<dest>.mismatch` too (once: a rerun that receives the same bytes keeps no
second copy, `.mismatch.2`, of them); the messages say where, and `own_file_hint` tells the
user how to use a file they trust instead (e.g. `make q2 WEIGHTS=path`).

A file without a published checksum can still be checked for what it must be (`check`, e.g. an index
that parses): a download that fails the check never becomes `dest` (it is kept as `<dest>.rejected`,
once), and a `dest` that fails it (cached by an older version, damaged since) is moved aside to
`<dest>.damaged` and downloaded again.
"""

import hashlib
import os
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from tools.errors import ToolkitError
from tools.fileio import move_aside

RETRY_STATUSES = (429, 500, 502, 503, 504)
BACKOFF = 0.5  # seconds; retry n waits BACKOFF * 2**(n-1), the first one none (urllib3's schedule)
MAX_BACKOFF = 30
MAX_RETRY_AFTER = 120  # seconds; a server asking for a longer wait (429/503 Retry-After) gets this at most
CHUNK = 1 << 16  # small enough that little is lost when a connection drops mid-chunk


class DownloadError(ToolkitError, RuntimeError):
    """A download failed; the message names the URL, the cause and the fix."""


class _Retry(Retry):
    """urllib3's Retry, except that an unknown host name fails at once: offline, waiting does not help."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if isinstance(error, urllib3.exceptions.NameResolutionError):
            raise urllib3.exceptions.MaxRetryError(_pool, url, error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_retry_after(self, response):
        # urllib3 sleeps whatever Retry-After says (an hour, a day): cap it, so a run never hangs on it.
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, MAX_RETRY_AFTER)


def http_session(retries: int = 5, pool: int = 10, backoff: float = BACKOFF) -> requests.Session:
    """A Session that retries failed connects, replies that never come, and 429/5xx replies, with backoff.

    The retries happen inside urllib3, before a reply's body is read; a body cut off half-way is the
    caller's to resume (`download` does). After the last retry of a 5xx the reply itself is returned.
    """
    retry = _Retry(total=None, connect=retries, read=retries, status=retries, other=0, redirect=10,
                   backoff_factor=backoff, backoff_max=MAX_BACKOFF, status_forcelist=RETRY_STATUSES,
                   allowed_methods=frozenset({"GET", "HEAD"}), raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool, pool_maxsize=pool)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "caffe-toolkit (python-requests)"
    return session


def name_unresolved(exc: BaseException) -> bool:
    """Offline, or a host that no longer exists: waiting does not help."""
    return isinstance(_reason(exc), urllib3.exceptions.NameResolutionError)


def error_cause(exc: BaseException) -> str:
    """A short name for why a request failed: 'timeout', 'connection dropped' or 'connection'."""
    reason = _reason(exc)
    # urllib3's NewConnectionError (refused, no route, unknown name) subclasses ConnectTimeoutError.
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return "connection"
    if isinstance(exc, requests.Timeout) or isinstance(reason, urllib3.exceptions.TimeoutError):
        return "timeout"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped"
    return "connection"


def _reason(exc: BaseException):
    """The urllib3 error inside a requests exception (unwrapping MaxRetryError), or None."""
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return reason


def looks_like_html(data: bytes) -> bool:
    """A web page: what blocked clients, and mirrors or proxies without the file, are often sent with status 200."""
    return data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def partial_path(dest) -> Path:
    """Where the unfinished download of `dest` lives."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def file_digest(path, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def checksum_mismatch(path, expected: dict[str, str]):
    """(algorithm, expected, got) for the first checksum `path` fails, or None when all pass."""
    for algorithm, want in expected.items():
        got = file_digest(path, algorithm)
        if got != want:
            return algorithm, want, got
    return None


class _Interrupted(Exception):
    """The body stopped before its end; what arrived is in the .part file."""

    def __init__(self, cause: str, progressed: bool):
        super().__init__(cause)
        self.cause, self.progressed = cause, progressed


def download(url, dest, *, md5=None, sha1=None, check=None, desc=None, timeout=(10, 60), retries=5, session=None,
             progress=None, url_env=None, own_file_hint=None) -> Path:
    """Fetch `url` into `dest` (resuming a partial download) and check its md5/sha1; returns `dest`.

    `check(path)` returns what is wrong with a file's content (e.g. "an HTML page, not the index"), or
    None when it is usable; it is asked of `dest` when it exists and of each download before it becomes `dest`.
    `timeout` is (connect, read) in seconds: the read timeout bounds any silence from the server.
    `progress` None shows a bar only on a terminal. `url_env` names the environment variable that
    overrides this URL, so an unreachable host's error can say how to use a mirror; `own_file_hint`
    says how to use a file the user already has (e.g. "make q2 WEIGHTS=path").
    """
    dest = Path(dest)
    expected = {name: value.lower() for name, value in (("md5", md5), ("sha1", sha1)) if value}
    if dest.exists():
        mismatch = checksum_mismatch(dest, expected)
        problem = None if mismatch else check and check(dest)
        if not mismatch and not problem:
            return dest
        if mismatch:
            aside = move_aside(dest, "mismatch")  # the user's copy, or an older version: kept, never deleted
            algorithm, want, got = mismatch
            use = f" If you trust that copy, use it with {own_file_hint}." if own_file_hint else ""
            print(f"note: {dest} has {algorithm} {got}, not the published {want}: moved it to {aside} and "
                  f"downloading the published file.{use}", file=sys.stderr)
        else:
            aside = move_aside(dest, "damaged")  # cached by an older version, or damaged since: kept to look at
            print(f"note: {dest} is not usable ({problem}): moved it to {aside} and downloading it again",
                  file=sys.stderr)
    part = partial_path(dest)
    own_session = session is None
    session = session or http_session(retries)
    try:
        _fetch_resuming(session, url, part, timeout, desc or dest.name, progress, url_env, retries)
    finally:
        if own_session:
            session.close()
    mismatch = checksum_mismatch(part, expected)
    if mismatch:
        size = part.stat().st_size
        kept = _keep_aside(part, dest, "mismatch")
        algorithm, want, got = mismatch
        use = f", or use a copy you trust with {own_file_hint}" if own_file_hint else ""
        raise DownloadError(f"checksum mismatch for {url}: expected {algorithm} {want}, got {got} ({size} bytes, "
                            f"{kept}). Fix: run again; if it fails the same way, the server holds a different file "
                            f"(an error page, another version): check the URL{_mirror_hint(url_env, ' or')}{use}")
    problem = check and check(part)
    if problem:
        kept = _keep_aside(part, dest, "rejected")
        raise DownloadError(f"{url} sent no usable file: {problem} ({kept}; nothing was cached). Fix: run again once "
                            f"the server is fixed; if it fails the same way, check the URL"
                            f"{_mirror_hint(url_env, ' or')}")
    os.replace(part, dest)
    return dest


def _keep_aside(part: Path, dest: Path, tag: str) -> str:
    """Move a download that is not the file aside as `<dest>.<tag>`, and say where.

    An empty body is nothing to keep; anything else is kept under the file's own name, once: a rerun that
    receives the same wrong file again keeps no second copy of it."""
    size = part.stat().st_size
    same = _same_kept(part, dest, tag) if size else None
    if same or not size:
        part.unlink()
        return f"the same file as {same}, kept from an earlier try" if same else "nothing was received"
    return f"kept as {move_aside(part, tag, name_of=dest)}"


def _same_kept(part: Path, dest: Path, tag: str) -> Path | None:
    """A `<dest>.<tag>[.N]` kept earlier with exactly the content of `part` (size, then SHA-256), or None."""
    pattern = re.compile(re.escape(dest.name) + rf"\.{tag}(\.\d+)?")
    size, digest = part.stat().st_size, None
    for f in sorted(dest.parent.iterdir()):
        if not pattern.fullmatch(f.name) or not f.is_file() or f.stat().st_size != size:
            continue
        digest = digest or file_digest(part, "sha256")
        if file_digest(f, "sha256") == digest:
            return f
    return None


def _fetch_resuming(session, url, part: Path, timeout, desc, progress, url_env, retries):
    """Fetch until the body is whole, resuming after drops; `retries` drops in a row that bring no new bytes fail."""
    failures = 0
    while True:
        try:
            _fetch(session, url, part, timeout, desc, progress, url_env, retries)
            return
        except _Interrupted as e:
            failures = 1 if e.progressed else failures + 1
            if failures > retries:
                kept = f"; the {part.stat().st_size} bytes received are kept in {part}" if part.exists() else ""
                raise DownloadError(f"{url}: {e.cause}, {failures} times in a row{kept}. Fix: run again later "
                                    f"(it resumes){_mirror_hint(url_env)}") from None
            time.sleep(min(MAX_BACKOFF, BACKOFF * 2 ** (failures - 2)) if failures > 1 else 0)


def _fetch(session, url, part: Path, timeout, desc, progress, url_env, retries):
    """One request: append to the .part from where it ends (or start over), until the body ends."""
    offset = part.stat().st_size if part.exists() else 0
    # Byte ranges and checksums are of the file itself, so ask for no transfer compression.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        reply = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.exceptions.InvalidURL as e:
        raise DownloadError(f"invalid URL {url!r}: {e}") from None
    except requests.exceptions.MissingSchema:
        raise DownloadError(f"invalid URL {url!r}: it needs http:// or https://") from None
    except requests.RequestException as e:
        raise DownloadError(_unreachable(url, e, timeout, retries, url_env)) from None
    with reply:
        if reply.status_code == 416 and offset:
            if _range_total(reply) == offset:
                return  # the .part already holds the whole file
            part.unlink()
            raise _Interrupted("the server refused to resume the partial file", progressed=False)
        if reply.status_code >= 400:
            if reply.status_code < 500 and reply.status_code not in RETRY_STATUSES:
                part.unlink(missing_ok=True)  # the URL is wrong or gone: a partial of it is of no use
            raise DownloadError(_http_error(url, reply.status_code, retries, url_env))
        if reply.status_code == 206:
            if _range_start(reply) != offset:
                part.unlink(missing_ok=True)
                raise _Interrupted("the server sent another byte range than the one asked for", progressed=False)
            mode = "ab"
        else:  # a server that ignores Range sends the whole file again (200): start over
            offset, mode = 0, "wb"
        length = reply.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        written = 0
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, mode) as f, tqdm(total=total, initial=offset, desc=desc, unit="B", unit_scale=True,
                                         unit_divisor=1024, disable=None if progress is None else not progress,
                                         leave=False) as bar:
            try:
                for chunk in reply.iter_content(CHUNK):
                    f.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            except requests.RequestException as e:
                cause = "no data within the read timeout" if error_cause(e) == "timeout" else "connection dropped"
                raise _Interrupted(cause, progressed=written > 0) from None
        if total is not None and offset + written < total:
            raise _Interrupted("connection closed before the end of the file", progressed=written > 0)


def _range_start(reply):
    match = re.match(r"bytes (\d+)-", reply.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _range_total(reply):
    match = re.search(r"/(\d+)$", reply.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _mirror_hint(url_env, joiner=", or") -> str:
    return f"{joiner} set {url_env} to a mirror's URL" if url_env else ""


def _unreachable(url, exc, timeout, retries, url_env) -> str:
    host = urlsplit(url).hostname or url
    read_timed_out = isinstance(_reason(exc), urllib3.exceptions.ReadTimeoutError)
    if read_timed_out or isinstance(exc, requests.exceptions.ReadTimeout):
        read = timeout[1] if isinstance(timeout, tuple) else timeout
        return (f"{host} accepted the connection but sent no reply within {read} s ({retries + 1} tries) "
                f"for {url}. Fix: try again later{_mirror_hint(url_env)}")
    reason = "timed out" if error_cause(exc) == "timeout" else _root_reason(exc)
    return (f"cannot reach {host} ({reason}) for {url}: offline, or the host is down? "
            f"Fix: check the network{_mirror_hint(url_env)}")


def _root_reason(exc) -> str:
    reason = _reason(exc) or exc
    text = str(reason)
    if "Name or service not known" in text or name_unresolved(exc):
        return "name not resolved"
    if "Connection refused" in text:
        return "connection refused"
    return text.split(": ", 1)[-1][:120]


def _http_error(url, status, retries, url_env) -> str:
    if status in (404, 410):
        fix = f"the file is not there: check the URL{_mirror_hint(url_env, ' or')}"
    elif status in (401, 403):
        fix = f"access denied: the file may have moved or need a login{_mirror_hint(url_env, '; or')}"
    elif status in RETRY_STATUSES:
        fix = f"the server kept failing ({retries + 1} tries): try again later{_mirror_hint(url_env)}"
    else:
        fix = f"check the URL{_mirror_hint(url_env, ' or')}"
    return f"HTTP {status} for {url}. Fix: {fix}"
