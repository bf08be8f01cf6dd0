"""The tests' loopback file server (tests/http_fixtures.py) with a fixed latency added to every request.

    python -m bench.latency_server FOLDER --delay 0.05     # prints {"url": "http://127.0.0.1:PORT"}, serves
                                                            # FOLDER's files at /NAME until stdin closes

Run in a process of its own so that serving does not compete with the downloader for one GIL. The
listen backlog is raised from socketserver's 5 so that 64 simultaneous connects are not dropped (a
dropped SYN costs the client a one-second retransmit, which would be measured as latency).
"""

import argparse
import json
import sys
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

from tests.http_fixtures import FileServer


class LatencyServer(FileServer):
    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def _serve(self, handler):
        time.sleep(self.delay)  # the round trips and server time of a real image host
        super()._serve(handler)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.latency_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--delay", type=float, default=0.05, help="seconds added to every request [0.05]")
    a = ap.parse_args(argv)
    ThreadingHTTPServer.request_queue_size = 512  # this process only serves
    with LatencyServer(a.delay) as server:
        for f in sorted(a.folder.iterdir()):
            if f.is_file():
                server.add(f"/{f.name}", f.read_bytes(), content_type="image/jpeg")
        print(json.dumps({"url": server.url("")}), flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or exits)


if __name__ == "__main__":
    main()
