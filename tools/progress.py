"""Progress of a long loop: a tqdm bar on a terminal, a plain line every few percent anywhere else.

    bar = progress_bar(total=1500, desc="q1/baseline", unit="it")
    bar.update(20); bar.set_postfix({"loss": "0.41"}, refresh=False); bar.close()
    for batch in progress_iter(range(0, n, 50), desc="predict", unit="batch"): ...

A bar redraws itself with carriage returns, which a terminal turns into one moving line and a log
file (`make demo > demo.log 2>&1`) keeps as hundreds of kilobytes of redraws. So the bar is drawn only
when its stream is a terminal; otherwise each `every` percent (default 10) gives one line, e.g.
`q1/baseline: 40% (600/1500 it) in 31 s, loss=0.41 lr=0.01`, and the end one more.
"""

import sys
import time

from tqdm import tqdm

EVERY_PERCENT = 10


def is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PlainProgress:
    """What the callers use of tqdm (update, set_postfix, write, close, n, total), as plain lines."""

    def __init__(self, total=None, initial=0, desc="", unit="it", file=None, every=EVERY_PERCENT):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.file = file if file is not None else sys.stderr
        self.every, self.postfix = every, {}
        self.start, self.closed = time.monotonic(), False
        self.printed = self._step()  # a resumed run does not repeat the steps it already passed
        self.printed_n = initial

    def _step(self) -> int:
        if not self.total:
            return 0
        return int(100 * min(self.n, self.total) / self.total) // self.every

    def _line(self) -> str:
        done = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        percent = f"{100 * min(self.n, self.total) // self.total}% ({done})" if self.total else done
        extra = ", " + " ".join(f"{k}={v}" for k, v in self.postfix.items()) if self.postfix else ""
        return f"{self.desc}: {percent} in {time.monotonic() - self.start:.0f} s{extra}"

    def _print(self):
        print(self._line(), file=self.file, flush=True)
        self.printed_n = self.n

    def update(self, k=1):
        self.n += k
        step = self._step()
        if step > self.printed:
            self.printed = step
            self._print()

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def write(self, text):
        print(text, file=self.file, flush=True)

    def close(self):
        if not self.closed and self.n != self.printed_n:
            self._print()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_bar(*, total=None, initial=0, desc="", unit="it", enabled=True, file=None, **tqdm_args):
    """A tqdm bar when `file` (default stderr) is a terminal, PlainProgress otherwise; `enabled=False`:
    a bar that shows nothing."""
    file = file if file is not None else sys.stderr
    if enabled and not is_terminal(file):
        return PlainProgress(total=total, initial=initial, desc=desc, unit=unit, file=file)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, file=file, **tqdm_args)


def progress_iter(iterable, *, total=None, desc="", unit="it", enabled=True, file=None):
    """`iterable`, reporting its progress like progress_bar."""
    if total is None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    bar = progress_bar(total=total, desc=desc, unit=unit, enabled=enabled, file=file)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    finally:
        bar.close()
