"""Helpers shared by the interop tests: corpus location, fixtures, mutations.

A uniquely named module (tests/ has no __init__.py: test dirs are on sys.path)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORPUS = (REPO / ".." / "shared" / "corpus").resolve()
ANS_CDA = CORPUS / "ans-cda"
ANS_HL7 = CORPUS / "ans-hl7v2"
FIXTURES = REPO / "fixtures"
CDA_XSD = ANS_CDA / "infrastructure" / "cda" / "CDA_extended.xsd"


def corpus_cda_files() -> list[Path]:
    """The 94 ANS example documents. Seven of them sit in a folder named '"ExemplesCDA'
    (a quoting artefact of the upstream export, names with octal escapes)."""
    files: list[Path] = []
    for folder in ("ExemplesCDA", '"ExemplesCDA'):
        if (ANS_CDA / folder).is_dir():
            files.extend(p for p in (ANS_CDA / folder).iterdir() if p.is_file())
    return sorted(files)


def corpus_hl7_files() -> list[Path]:
    if not ANS_HL7.is_dir():
        return []
    return sorted(p for p in ANS_HL7.rglob("*") if p.is_file() and p.suffix in (".er7", ".hl7"))


def need_corpus() -> None:
    if not ANS_CDA.is_dir():
        pytest.skip(f"ANS corpus not found at {CORPUS} (it is present in CI)")


def mutate(content: bytes, old: bytes, new: bytes, count: int = 1) -> bytes:
    """Replace text, failing loudly when the mutation would silently not apply."""
    assert old in content, f"mutation target {old!r} not found"
    return content.replace(old, new, count)


def zip_entries(archive: bytes) -> dict[str, bytes]:
    """Every entry of a ZIP archive, by name (to mutate an XDM and rebuild it)."""
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return {n: z.read(n) for n in z.namelist()}


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()
