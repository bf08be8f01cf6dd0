"""Where and when a run measured its times: the machine, its load, the date; durations as people read them.

Every time the README shows comes with this record of the run that measured it (`make demo` and
`make test` keep one under results/, `make readme` publishes it), so that a reader can tell a slow
machine, or one busy with other work, from a slow toolkit.
"""

import datetime
import os
import platform
from pathlib import Path


def loadavg() -> list[float]:
    """The 1, 5 and 15-minute load averages ([] where the system has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The machine at the start of a run: date (UTC), CPU model, cores, load average."""
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
            "cores": os.cpu_count() or 1, "loadavg": loadavg()}


def describe(info: dict) -> str:
    """'2026-12-04, AMD EPYC 7B13, 2 cores, load average 1.93 at the start' from machine()'s record."""
    load = info.get("loadavg") or []
    parts = [info.get("date", "?")[:10], info.get("cpu", "?"), f"{info.get('cores', '?')} cores"]
    if load:
        parts.append(f"load average {load[0]:.2f} at the start")
    return ", ".join(parts)


def duration(seconds: float) -> str:
    """'45 s', '7 min 33 s', '1 h 02 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"
