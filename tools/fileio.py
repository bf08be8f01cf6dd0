"""Atomic writes: a reader never sees half a file, and a failed write leaves the old file alone.
`write_if_changed` leaves a file with the same text untouched, so its date says when it last changed;
`write_prototxts` writes a generator's prototxts (nets, solvers) that way, whatever the generator.
`read_json` reads a JSON state file, moving a damaged one aside (a cache) or naming it and the fix."""

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from tools.errors import ToolkitError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask can only be read by setting it, which would race with threads that
# create files (the downloaders write in parallel).
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give what open() would
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno and e.filename in (None, tmp, str(tmp)):
            # a failed write (a full disk) names the file being written, not its hidden temporary name
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_if_changed(path, text: str) -> bool:
    """Write `text` to `path` atomically unless the file already holds exactly that text (its date is
    kept: generated prototxts and model cards whose date tells readers they changed). Returns whether
    it wrote."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_text(path, text)
    return True


def write_prototxts(mapping: dict, folder) -> list[Path]:
    """Write each `name -> NetParameter, SolverParameter or text` of `mapping` to folder/name with
    `write_if_changed` (atomic; an unchanged file keeps its date). Every generator of the committed prototxts
    writes through here. Returns the paths, in the mapping's order."""
    from google.protobuf import text_format  # late import: setup checks run before protobuf exists

    paths = []
    for name, content in mapping.items():
        text = content if isinstance(content, str) else text_format.MessageToString(content)
        write_if_changed(Path(folder) / name, text)
        paths.append(Path(folder) / name)
    return paths


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def move_aside(path, tag: str, name_of=None) -> Path:
    """Rename `path` (a file or folder) to `<name>.<tag>` beside it, or `<name>.<tag>.2`, ... if that is
    taken, and return the new path; `<name>` is that of `name_of` (a path in the same folder) when given,
    e.g. a download's `.part` moved aside under the name of the file it was for. Never overwrites: what is
    moved aside is kept for the user to look at."""
    path = Path(path)
    base = Path(name_of) if name_of else path
    for n in range(1, 10_000):
        target = path.with_name(f"{base.name}.{tag}" + (f".{n}" if n > 1 else ""))
        if target.exists() or target.is_symlink():
            continue
        try:
            # link + unlink for files so that a target created meanwhile is not replaced; a folder cannot be
            # hard-linked, and os.rename onto an existing non-empty folder fails anyway
            if path.is_dir():
                os.rename(path, target)
            else:
                try:
                    os.link(path, target)
                except FileExistsError:
                    raise
                except OSError:  # a file system without hard links
                    if target.exists():
                        continue
                    os.rename(path, target)
                    return target
                os.unlink(path)
            return target
        except FileExistsError:
            continue
    raise OSError(f"cannot find a free name to move {path} aside")


class DamagedFile(ToolkitError, ValueError):
    """A state file the toolkit wrote (a marker, a cache, a manifest) is not what it wrote: cut short, not
    UTF-8, not JSON, not a JSON object, or without the fields it always holds. The message names the file and
    the fix."""


NUMBER = (int, float)  # a JSON number (bool, which Python counts as an int, is refused where a number is due)


def _type_names(types) -> str:
    names = {int: "a whole number", float: "a number", str: "a string", list: "a list", dict: "an object",
             bool: "true or false", type(None): "null"}
    types = types if isinstance(types, tuple) else (types,)
    if set(types) >= {int, float}:
        types = tuple(t for t in types if t is not int)
    return " or ".join(names.get(t, t.__name__) for t in types)


def shape_problem(value: dict, expect) -> str | None:
    """What is wrong with a JSON object `value` given `expect`: None when it fits. `expect` is {key: type or
    tuple of types} (every key present, its value of one of those types; other keys are allowed), or a callable
    that takes the object and returns the problem or None."""
    if callable(expect):
        return expect(value)
    for key, types in expect.items():
        if key not in value:
            return f"no '{key}' field"
        v, allowed = value[key], types if isinstance(types, tuple) else (types,)
        if not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed):
            return f"'{key}' is {json.dumps(v)[:40]}, not {_type_names(types)}"
    return None


def read_json(path, *, fix: str | None = None, log=None, expect=None, again: str = "making it again") -> dict | None:
    """Read a JSON object that the toolkit wrote and keeps as state. None if there is no such file.

    A damaged one (cut short, garbled, not an object, or, with `expect` (see shape_problem), without the fields
    of the types it always holds) never raises a bare JSONDecodeError, nor a KeyError later: with `fix` None it
    is a cache that can be made again, so it is moved aside as `<name>.broken` (kept, never deleted), one line
    says so and what happens now (`again`; `log`, default stderr), and None is returned for the caller to
    rebuild it; with `fix` given it cannot be rebuilt here, and DamagedFile says which file and the fix, leaving
    the file alone. Other OSErrors (a folder in its place, no permission) propagate for tools.cli to name."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode())
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except ValueError as e:  # JSONDecodeError: cut short or garbled
        problem = f"not valid JSON: {e}"
    else:
        if not isinstance(value, dict):
            problem = f"a JSON {type(value).__name__}, not an object"
        else:
            problem = shape_problem(value, expect) if expect is not None else None
            if problem is None:
                return value
    if fix is not None:
        raise DamagedFile(f"{path} is damaged ({problem}). Fix: {fix}")
    aside = move_aside(path, "broken")
    (log or _stderr)(f"{path} was damaged ({problem}): moved aside to {aside.name}; {again}")
    return None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
