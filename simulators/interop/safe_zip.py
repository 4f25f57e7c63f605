"""Reading untrusted ZIP archives in memory, with limits checked before extraction.

Limits: number of entries, total uncompressed size, per-entry compression ratio;
no absolute paths, no "..", no backslashes or drive letters, no symlinks, no
encrypted entries. Nothing is ever written to disk. Sizes announced by the
archive are checked first, then enforced again while decompressing (headers lie).
"""

from __future__ import annotations

import io
import lzma
import stat
import zipfile
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 1000
    max_total_bytes: int = 200 * 1024 * 1024
    max_ratio: float = 100.0
    # small entries compress well legitimately: the ratio applies above this size
    ratio_floor_bytes: int = 1024 * 1024


class UnsafeZip(ValueError):
    """The archive is malformed or breaks a safety limit."""


def _check_name(name: str) -> None:
    if not name or "\x00" in name:
        raise UnsafeZip("an entry has an empty or NUL-bearing name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeZip(f"absolute path in archive entry {name!r}")
    if "\\" in name:
        raise UnsafeZip(f"backslash in archive entry {name!r}")
    if ".." in name.split("/"):
        raise UnsafeZip(f"path traversal in archive entry {name!r}")


def read_zip(content: bytes, limits: ZipLimits | None = None) -> dict[str, bytes]:
    """All file entries of the archive, by name, read in memory."""
    limits = limits or ZipLimits()
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnsafeZip(f"not a readable ZIP archive: {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise UnsafeZip(f"{len(infos)} entries, more than the limit of {limits.max_entries}")
        announced = 0
        seen: set[str] = set()
        for info in infos:
            _check_name(info.filename)
            if info.filename.upper() in seen:
                raise UnsafeZip(f"duplicate entry {info.filename!r}")
            seen.add(info.filename.upper())
            if info.flag_bits & 0x1:
                raise UnsafeZip(f"encrypted entry {info.filename!r}")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeZip(f"symbolic link entry {info.filename!r}")
            announced += info.file_size
            if info.file_size > limits.ratio_floor_bytes and info.compress_size >= 0:
                ratio = info.file_size / max(info.compress_size, 1)
                if ratio > limits.max_ratio:
                    raise UnsafeZip(
                        f"entry {info.filename!r} has a compression ratio of "
                        f"{ratio:.0f}, more than {limits.max_ratio:.0f} (zip bomb?)"
                    )
        if announced > limits.max_total_bytes:
            raise UnsafeZip(f"{announced} bytes uncompressed, more than {limits.max_total_bytes}")
        out: dict[str, bytes] = {}
        total = 0
        for info in infos:
            if info.is_dir():
                continue
            chunks: list[bytes] = []
            size = 0
            try:
                with archive.open(info) as stream:
                    while chunk := stream.read(65536):
                        size += len(chunk)
                        total += len(chunk)
                        if total > limits.max_total_bytes:
                            raise UnsafeZip("uncompressed content exceeds the total size limit")
                        if (
                            size > limits.ratio_floor_bytes
                            and size / max(info.compress_size, 1) > limits.max_ratio
                        ):
                            raise UnsafeZip(
                                f"entry {info.filename!r} inflates beyond the "
                                "ratio limit (zip bomb?)"
                            )
                        chunks.append(chunk)
            except (
                zipfile.BadZipFile,
                OSError,
                EOFError,
                NotImplementedError,
                zlib.error,  # a corrupt deflate stream
                lzma.LZMAError,
            ) as exc:
                raise UnsafeZip(f"entry {info.filename!r} cannot be read: {exc}") from None
            out[info.filename] = b"".join(chunks)
        return out
