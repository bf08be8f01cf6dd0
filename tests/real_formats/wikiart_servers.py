"""WikiArt's image servers as a downloader meets them today, on two local ports, for the downloader's tests.

The course's index (2015) names each image http://uploadsN.wikiart.org/images/<artist>/<title>.jpg.
Requests to such URLs now meet what most long-lived image hosts do; each behaviour here is one of
them (the names are what `WikiArtHosts.painting` takes):

    ok            200 with the JPEG
    moved         301 from the old http:// host to the image's place on another host over https:// (as
                  sites moved to TLS and to a CDN's host name): `old` redirects to `cdn`, which speaks
                  TLS with a self-signed certificate for 127.0.0.1 that the client trusts through
                  REQUESTS_CA_BUNDLE (pass `hosts.env` to the downloader's environment)
    chain         302 -> 302 -> the image on `cdn`: a host move followed by a CDN edge's own redirect
    hotlink       403 Forbidden, what hotlink protection answers clients it does not let in
    gone          404 Not Found, images renamed or removed since 2015
    rate_limited  429 Too Many Requests with Retry-After: 1 (delta-seconds), then the image
    over_cap      429 with Retry-After: 3600, a block far longer than a downloader should wait
    unavailable   503 Service Unavailable with Retry-After as an HTTP-date (`retry_in` seconds ahead,
                  default 2), then the image
    login_page    200 with an HTML page (text/html) in place of the image: a rate-limit or log-in page
    short_body    a Content-Length larger than what is sent before the connection closes, every time
    cut_jpeg      a JPEG cut short, served as if whole (its Content-Length matches what is sent)
    stall         the request is accepted and never answered (until the servers stop)
    flaky         503 without Retry-After once, then the image (a momentary overload: backoff)

Both servers listen on 127.0.0.1 only, at free ports, and record every request (path, headers, time):
`hosts.requests(image_id)` lists those for one painting on both servers in arrival order. Stalls end
when the servers stop, so a test never waits on them for longer than its own client's timeout.

    with WikiArtHosts(tmp_path) as hosts:
        url = hosts.painting("claude-monet_water-lilies-1916", jpeg_bytes, "moved")   # the index's URL
"""

import time
from email.utils import formatdate

from http_fixtures import Body, Drop, FileServer, Redirect, Stall, Status, self_signed_certificate

BEHAVIOURS = ("ok", "moved", "chain", "hotlink", "gone", "rate_limited", "over_cap", "unavailable", "login_page",
              "short_body", "cut_jpeg", "stall", "flaky")
ALWAYS = 50  # faults repeated this often act as the painting's permanent behaviour in a test
LOGIN_PAGE = (b"<!DOCTYPE html>\n<html><head><title>WikiArt.org - Visual Art Encyclopedia</title></head>"
              b"<body><h1>Too many requests</h1><p>Please log in to continue.</p></body></html>\n")


class WikiArtHosts:
    """`old` answers at the index's URLs; `cdn` is the other host that redirects lead to."""

    def __init__(self, certificate_folder, latency: float = 0.0):
        cert, key = self_signed_certificate(certificate_folder)
        self.old = FileServer(latency)
        self.cdn = FileServer(latency, tls=(cert, key))
        self.env = {"REQUESTS_CA_BUNDLE": str(cert)}  # for the client: trust cdn's certificate

    def __enter__(self) -> "WikiArtHosts":
        self.old.start()
        self.cdn.start()
        return self

    def __exit__(self, *exc) -> None:
        self.old.stop()
        self.cdn.stop()

    def painting(self, image_id: str, data: bytes, behaviour: str = "ok", *, retry_in: float = 2) -> str:
        """Serve the painting with `behaviour` (see the module's docstring); returns its URL for the index."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; one of {', '.join(BEHAVIOURS)}")
        path = f"/images/{image_id}.jpg"
        if behaviour in ("moved", "chain"):
            final = self.cdn.add(f"/cdn{path}", data, content_type="image/jpeg")
            if behaviour == "chain":
                hop = self.cdn.add(f"/edge{path}", b"", faults=[Redirect(final, 302)] * ALWAYS)
                final = self.old.add(f"/moved{path}", b"", faults=[Redirect(hop, 302)] * ALWAYS)
                return self.old.add(path, b"", faults=[Redirect(final, 302)] * ALWAYS)
            return self.old.add(path, b"", faults=[Redirect(final, 301)] * ALWAYS)
        if behaviour == "cut_jpeg":
            return self.old.add(path, data[: len(data) * 2 // 3], content_type="image/jpeg")
        return self.old.add(path, data, content_type="image/jpeg", faults=self._faults(behaviour, len(data), retry_in))

    @staticmethod
    def _faults(behaviour: str, size: int, retry_in: float) -> list:
        if behaviour == "unavailable":
            # Dated when the reply is sent; an HTTP-date has whole seconds, so the wait is retry_in - 1 .. retry_in.
            def date():
                return formatdate(time.time() + retry_in, usegmt=True)

            return [Status(503, b"Service Unavailable\n", {"Retry-After": date})]
        return {
            "ok": [],
            "hotlink": [Status(403, b"Forbidden\n")] * ALWAYS,
            "gone": [Status(404, b"Not Found\n")] * ALWAYS,
            "rate_limited": [Status(429, b"Too Many Requests\n", {"Retry-After": "1"})],
            "over_cap": [Status(429, b"Too Many Requests\n", {"Retry-After": "3600"})] * ALWAYS,
            "login_page": [Body(LOGIN_PAGE)] * ALWAYS,
            "short_body": [Drop(after=size // 2)] * ALWAYS,
            "stall": [Stall(60)] * ALWAYS,
            "flaky": [Status(503, b"Service Unavailable\n")],
        }[behaviour]

    def requests(self, image_id: str | None = None) -> list:
        """The requests both servers saw (for one painting: under any of its paths), in arrival order."""
        seen = self.old.requests() + self.cdn.requests()
        if image_id is not None:
            seen = [r for r in seen if r.path.endswith(f"/{image_id}.jpg")]
        return sorted(seen, key=lambda r: r.time)
