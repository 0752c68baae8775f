"""The key/value section of a GGUF header, read without materialising its big arrays.

``gguf.GGUFReader`` builds a numpy view of every item of every array: for Gemma 3's 262,144-token
vocabulary that is 13 s of CPU, to learn a dozen integers. This reader walks the same format
(llama.cpp's ``gguf.md``: magic, version, tensor count, KV count, then ``key, type, value`` records)
over a memory map and keeps only the keys ``wanted`` accepts; an array it does not keep is skipped
by its size (numbers) or by hopping from length to length (strings), so no token is decoded.

``HeaderCache`` memoises the planner's fields by (path, size, mtime): a config reload, a second
``config check`` or eight members naming one file read its header once per process.
"""

from __future__ import annotations

import mmap
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping
from itertools import repeat
from pathlib import Path
from typing import TypeAlias

MAGIC = b"GGUF"
# gguf.md's value types: the struct format of each fixed-size one.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# No key the planner reads is an array this long (per-layer arrays have block_count items); a
# longer one is skipped even when ``wanted`` accepts its key.
MAX_KEPT_ARRAY = 65_536

# A header value: a number (bools unpack as ``bool``, an int), a string, or an array of values
# (None for an inner array too long to keep).
GGUFValue: TypeAlias = "int | float | str | list[GGUFValue | None]"


class _Cursor:
    """A read position in the header, in the file's byte order."""

    def __init__(self, buf: mmap.mmap, order: str) -> None:
        self.buf, self.order, self.off = buf, order, 0
        self._u64 = struct.Struct(order + "Q").unpack_from

    def scalar(self, fmt: str) -> int | float:
        s = struct.Struct(self.order + fmt)
        (value,) = s.unpack_from(self.buf, self.off)
        self.off += s.size
        number: int | float = value
        return number

    def count(self, fmt: str) -> int:
        """An unsigned integer field (a length, a type, a count)."""
        return int(self.scalar(fmt))

    def string(self) -> str:
        n = self.count("Q")
        raw = self.buf[self.off : self.off + n]
        if len(raw) != n:
            raise ValueError("a string runs past the end of the file")
        self.off += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool) -> GGUFValue | None:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise ValueError(f"unknown value type {vtype}")
        item_type, count = self.count("I"), self.count("Q")
        if keep and count <= MAX_KEPT_ARRAY:
            return [self.value(item_type, True) for _ in range(count)]
        self.skip_array(item_type, count)
        return None

    def skip_array(self, item_type: int, count: int) -> None:
        if item_type in _SCALARS:
            self.off += count * struct.calcsize(self.order + _SCALARS[item_type])
        elif item_type == _STRING:
            self.off = _skip_strings(self.buf, self.off, count, self._u64)
        else:  # arrays of arrays: no model writes them, but the format allows it
            for _ in range(count):
                self.value(item_type, False)
        if self.off > len(self.buf):
            raise ValueError("an array runs past the end of the file")


def _skip_strings(buf: mmap.mmap, off: int, count: int, u64: Callable[[mmap.mmap, int], tuple[int]]) -> int:
    """The offset after ``count`` length-prefixed strings: the vocabulary's hot loop (no decoding)."""
    for _ in repeat(None, count):
        off += 8 + u64(buf, off)[0]
    return off


def read_header(path: Path, wanted: Callable[[str], bool]) -> dict[str, GGUFValue]:
    """The header's values of the keys ``wanted`` accepts (arrays as lists); raises ValueError when
    the file is not a GGUF or its header is cut short, OSError when it cannot be opened."""
    with path.open("rb") as f:
        if path.stat().st_size < 24:
            raise ValueError("too short for a GGUF header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != MAGIC:
                raise ValueError(f"no GGUF magic (starts with {bytes(buf[:4])!r})")
            # A big-endian file's version reads as a huge number in little-endian.
            order = "<" if struct.unpack_from("<I", buf, 4)[0] < 0x10000 else ">"
            cursor = _Cursor(buf, order)
            cursor.off = 4
            version = cursor.count("I")
            if version < 2:
                raise ValueError(f"GGUF version {version} is not supported (2 and later are)")
            cursor.scalar("Q")  # tensor count: the tensors are not read
            kv_count = cursor.count("Q")
            out: dict[str, GGUFValue] = {}
            try:
                for _ in range(kv_count):
                    key = cursor.string()
                    keep = wanted(key)
                    value = cursor.value(cursor.count("I"), keep)
                    if keep and value is not None:
                        out[key] = value
            except struct.error:
                raise ValueError("the header runs past the end of the file") from None
            return out


Fields = dict[str, object]  # what a caller derives from a header: read_header's, or its own


class HeaderCache:
    """Fields read from GGUF headers, by (resolved path, size, mtime in ns); at most ``capacity``
    files, the least recently used dropped first. A file rewritten in place gets a new mtime (or
    size) and is read again."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, int, int], Fields] = OrderedDict()

    def get(self, path: Path, read: Callable[[Path], Mapping[str, object]]) -> Fields:
        """``read(path)``, or what it returned for this same file before (a copy either way)."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return dict(self._entries[key])
        self.misses += 1
        fields = read(path)
        self._entries[key] = dict(fields)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return dict(fields)


# The process's one cache: the loader runs at start, at every reload and at each `config check`,
# and none of them has a place to keep it; memoising a pure read of a file by its identity
# changes no result, so this global hides nothing a caller could observe but the time.
GGUF_HEADERS = HeaderCache()
