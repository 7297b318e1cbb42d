"""Helpers of the hostile-input tests: a file that must never be opened, and tiny files in the real formats.

`never_opened(path)` watches a file with Linux inotify, which sees every open(2) and read(2) of it by any
code in any process (Python, Pillow, the safetensors and Arrow native code alike) while stat(2) and
realpath(3), which containment needs, do not count. Elsewhere it only runs the block (the tests still
assert the named error or the counted skip).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

IN_ACCESS, IN_OPEN = 0x001, 0x020


def bomb_png(path: Path, width: int, height: int) -> None:
    """A tiny PNG file whose header claims width x height pixels (never decoded that far)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * (width + 1) * 2)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def deep_json(levels: int = 100_000) -> str:
    return "[" * levels + "]" * levels


@contextmanager
def never_opened(path):
    """Fail if `path` is opened or read inside the block (Linux inotify; elsewhere: no check)."""
    libc = None
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            libc = None
    if libc is None:
        yield
        return
    fd = libc.inotify_init1(os.O_NONBLOCK)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    try:
        assert libc.inotify_add_watch(fd, os.fsencode(path), IN_OPEN | IN_ACCESS) >= 0, os.strerror(ctypes.get_errno())
        yield
        try:
            events = os.read(fd, 65536)
        except BlockingIOError:
            events = b""
        masks = [struct.unpack_from("iIII", events, i)[1] for i in _offsets(events)]
        assert not [m for m in masks if m & (IN_OPEN | IN_ACCESS)], f"{path} was opened or read ({len(masks)} events)"
    finally:
        os.close(fd)


def _offsets(events: bytes):
    i = 0
    while i + 16 <= len(events):
        yield i
        i += 16 + struct.unpack_from("iIII", events, i)[3]
