"""Files deposited on the CNDA mock, content-addressed under ``DATA_DIR/cnda``.

Content addressing makes a deposit idempotent and leaves nothing to clean up if the
database write that records it is refused: an unreferenced blob is harmless.
Bundles are copied first and the copy is verified, so the files we keep are the
files we checked (no window for the source to change in between).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from simulators.core.proof import REPORT_JSON, SIGNATURE, safe_relative_name, sha256_file

MAX_UPLOAD_BYTES = 200 * 1024 * 1024
MAX_ZIP_ENTRIES = 10_000


class CndaStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "deposits" / "files"
        self.bundles = root / "deposits" / "bundles"
        self.attestations = root / "attestations"
        self.tmp = root / "tmp"

    def put_bytes(self, data: bytes) -> tuple[str, Path]:
        digest = hashlib.sha256(data).hexdigest()
        target = self.blobs / digest[:2] / digest
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            partial.write_bytes(data)
            partial.replace(target)
        return digest, target

    def put_file(self, path: Path) -> tuple[str, Path]:
        return self.put_bytes(path.read_bytes())

    def stage_bundle(self, source: Path) -> Path:
        """Copy a bundle directory to a private staging place and return the copy."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="bundle-", dir=self.tmp))
        copy = staging / "bundle"
        shutil.copytree(source, copy, symlinks=True)
        if any(p.is_symlink() for p in copy.rglob("*")):
            shutil.rmtree(staging)
            raise ValueError("a proof bundle must not contain symbolic links")
        return copy

    def keep_bundle(self, staged: Path, report_sha256: str) -> Path:
        target = self.bundles / report_sha256
        if target.exists():
            discard(staged)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(target)
            shutil.rmtree(staged.parent, ignore_errors=True)
        return target

    def unzip_bundle(self, data: bytes) -> Path | None:
        """Extract an uploaded zip holding a bundle; None when it holds none."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="upload-", dir=self.tmp))
        archive = staging / "upload.zip"
        archive.write_bytes(data)
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                if len(infos) > MAX_ZIP_ENTRIES:
                    raise ValueError("too many entries in the zip")
                if sum(i.file_size for i in infos) > MAX_UPLOAD_BYTES:
                    raise ValueError("the zip expands beyond the upload limit")
                out = staging / "bundle"
                for info in infos:
                    if info.is_dir():
                        continue
                    name = safe_relative_name(info.filename)  # no zip-slip
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise ValueError(f"{info.filename}: symbolic links are refused")
                    target = out / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(info))
        except zipfile.BadZipFile:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        root = _bundle_root(out)
        if root is None:
            shutil.rmtree(staging, ignore_errors=True)
        return root


def is_bundle(path: Path) -> bool:
    return path.is_dir() and (path / REPORT_JSON).is_file() and (path / SIGNATURE).is_file()


def _bundle_root(out: Path) -> Path | None:
    """The bundle inside an extracted zip: at its top, or in its single top folder."""
    if is_bundle(out):
        return out
    children = [c for c in out.iterdir()] if out.is_dir() else []
    if len(children) == 1 and is_bundle(children[0]):
        return children[0]
    return None


def discard(staged: Path) -> None:
    """Remove a staged copy and its private staging directory."""
    parent = staged.parent
    shutil.rmtree(parent if parent.name.startswith(("bundle-", "upload-")) else staged, True)


def bundle_sha256(bundle: Path) -> str:
    """A bundle's identity: the sha256 of its report.json (what chains link to)."""
    return sha256_file(bundle / REPORT_JSON)


def safe_filename(name: str) -> str:
    """Keep only the last path component of an uploaded file name."""
    base = PurePosixPath(name.replace("\\", "/")).name.strip()
    if not base or base in (".", ".."):
        raise ValueError(f"unusable file name {name!r}")
    return base[:200]
