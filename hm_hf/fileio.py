"""Atomic file writes (readers see the old file or the complete new one, never a part of it), and the
one JSON parser for input from outside.

Every cache, report, record and small output hm_hf writes goes through here (`atomic_write_bytes` /
`atomic_write_text` for data in memory, `atomic_path` for writers that take a file name), so a kill at any
moment loses nothing already written and leaves no half-written file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def public_mode(path) -> None:
    """Give a file made by `mkstemp` (mode 0600), or a folder made by `mkdtemp` (0700), the usual permissions
    (0666, or 0777 for a folder, less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def file_in_the_way(path) -> Path | None:
    """The nearest existing parent of `path` when it is not a folder (a file there keeps anything from being
    written at `path`), else None: checked before long work, so that the error comes first, not last."""
    for parent in Path(path).parents:
        if parent.exists() or parent.is_symlink():
            return None if parent.is_dir() else parent
    return None


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; when the block succeeds it replaces `path` (with the
    usual permissions), and when it fails the temporary file is removed and `path` is left as it was.

    For writers that want a file name (safetensors, fastText, copies) rather than bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        public_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_folder(folder, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside `folder` to write into; when the block succeeds it becomes `folder` in one
    rename, so an interrupted writer leaves `folder` as it was, never half old and half new. A `folder` that
    exists and is not empty is refused before the block runs, unless `overwrite` (then it is replaced whole)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file: give a folder to write into")
    if not overwrite and folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} already holds files: give a new or empty folder, or ask to overwrite it "
                              "(--overwrite): it is then replaced whole")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        yield staging
        public_mode(staging)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.replace(folder, old)  # (an empty old folder is replaced by the rename)
        os.replace(staging, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class JsonInputError(ValueError):
    """Text that is not usable JSON; the message says why (the caller adds the file and line)."""


_DECODER = json.JSONDecoder()


@contextmanager
def _json_input_errors():
    """Every way hostile JSON can fail, as a JsonInputError: besides invalid JSON, nesting deep enough to
    exhaust Python's recursion limit (a 100,000-level array raises RecursionError in the decoder) and
    numbers too long for Python's int conversion limit (a ValueError that is not a JSONDecodeError)."""
    try:
        yield
    except json.JSONDecodeError as err:
        raise JsonInputError(f"invalid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except RecursionError:
        raise JsonInputError(f"JSON nested too deeply (over {sys.getrecursionlimit()} levels)") from None
    except UnicodeDecodeError as err:
        raise JsonInputError(f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except ValueError as err:  # e.g. an integer with more digits than int() converts
        raise JsonInputError(f"unusable JSON value ({err})") from None


def parse_json(text: str | bytes):
    """`json.loads` for input from outside: any failure is a `JsonInputError` saying why."""
    with _json_input_errors():
        return json.loads(text)


def read_json_object(path, what: str, fix: str) -> dict:
    """The JSON object in the file `path` (holding `what`, e.g. "processor settings"), read with `parse_json`:
    a damaged, truncated, too deeply nested, non-UTF-8 or wrong-typed file is a ValueError naming the file,
    what is wrong with it and how to `fix` it."""
    path = Path(path)
    try:
        value = parse_json(path.read_bytes())
    except JsonInputError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); {fix}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object of {what}, got a JSON {type(value).__name__}; {fix}")
    return value


def parse_json_prefix(text: str, start: int = 0):
    """(value, end): the JSON value that starts at `text[start]` (`JSONDecoder.raw_decode`), same errors."""
    with _json_input_errors():
        return _DECODER.raw_decode(text, start)
