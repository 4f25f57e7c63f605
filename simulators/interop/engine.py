"""The validation engine: pluggable validators behind one entry point.

A validator is anything with ``kind``, ``validator_id`` and
``validate(content, name, options) -> ValidationReport``. They register by kind;
``validate_bytes`` detects the kind when asked to and never raises on bad input.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from simulators.interop.report import ValidationReport, input_error_report

KINDS = ("cda", "hl7v2", "xds", "xdm", "fhir")


def default_cache_dir() -> Path:
    env = os.environ.get("SEGUR_SIM_CACHE_DIR")
    base = Path(env) if env else Path.home() / ".cache" / "segur-sim"
    return base / "rules"


@dataclass(frozen=True)
class ValidationOptions:
    """What a caller can choose; everything has a working default."""

    # the ANS tree (the folder holding schematrons/, jeuxDeValeurs/, infrastructure/)
    rules_dir: Path | None = None
    # "builtin", "official" or "both"; None = official when rules_dir is set
    rule_source: str | None = None
    xsd_path: Path | None = None
    cache_dir: Path | None = None
    # extra official schematrons to run (relative to rules_dir/schematrons)
    extra_profiles: tuple[str, ...] = ()

    @property
    def effective_rule_source(self) -> str:
        if self.rule_source:
            return self.rule_source
        return "official" if self.rules_dir else "builtin"

    @property
    def effective_cache_dir(self) -> Path:
        return self.cache_dir or default_cache_dir()


class Validator(Protocol):
    kind: str
    validator_id: str

    def validate(
        self, content: bytes, *, name: str, options: ValidationOptions
    ) -> ValidationReport: ...


_REGISTRY: dict[str, Callable[[], Validator]] = {}

# built-in validators, imported on first use (lxml/saxon/hl7apy load only when needed)
_BUILTIN: dict[str, str] = {
    "cda": "simulators.interop.cda.validator:CdaValidator",
    "hl7v2": "simulators.interop.hl7v2.validator:Hl7v2Validator",
    "xds": "simulators.interop.xds.validator:XdsValidator",
    "xdm": "simulators.interop.xds.validator:XdmValidator",
    "fhir": "simulators.interop.fhir:FhirValidator",
}


# kinds whose validator was plugged in at run time: worker processes do not know them
_CUSTOM: set[str] = set()


def register(kind: str, factory: Callable[[], Validator]) -> None:
    """Plug a validator in (or replace a built-in one) for a kind.

    Only this process knows it: the HTTP endpoints then validate in a thread of this
    process instead of a worker process (see ``simulators.interop.pool``)."""
    _REGISTRY[kind] = factory
    _CUSTOM.add(kind)


def uses_custom_validators() -> bool:
    """True once :func:`register` has been called in this process."""
    return bool(_CUSTOM)


def get_validator(kind: str) -> Validator:
    if kind not in _REGISTRY and kind in _BUILTIN:
        module_name, attr = _BUILTIN[kind].split(":")
        _REGISTRY[kind] = getattr(importlib.import_module(module_name), attr)
    try:
        return _REGISTRY[kind]()
    except KeyError:
        known = sorted(set(_REGISTRY) | set(_BUILTIN))
        raise ValueError(f"unknown validator kind {kind!r}; known: {known}") from None


_XML_ROOT_RE = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)[\s>/]")


def detect_kind(content: bytes, name: str = "") -> str | None:
    """Guess the kind from the first bytes (and the name as a tie-breaker)."""
    head = content[:8192].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"PK\x03\x04") or name.upper().endswith(".ZIP"):
        return "xdm"
    if head.startswith(b"MSH") or head.startswith(b"\x0bMSH"):
        return "hl7v2"
    if head.startswith(b"{"):
        return "fhir" if b'"resourceType"' in content[:65536] else None
    if head.startswith(b"<"):
        body = re.sub(rb"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>", b"", head, flags=re.S)
        match = _XML_ROOT_RE.search(body)
        root = match.group(1).decode("ascii", "replace") if match else ""
        if root in ("ClinicalDocument", "stylesheet"):
            return "cda"
        if root in (
            "SubmitObjectsRequest",
            "ProvideAndRegisterDocumentSetRequest",
            "RegistryObjectList",
        ):
            return "xds"
        if b"http://hl7.org/fhir" in head:
            return "fhir"
        return "cda" if b"urn:hl7-org:v3" in head else None
    return None


def validate_bytes(
    content: bytes,
    *,
    name: str = "object",
    kind: str = "auto",
    options: ValidationOptions | None = None,
) -> ValidationReport:
    """Validate one object. Bad input gives a FAILED report, never an exception."""
    options = options or ValidationOptions()
    if kind == "auto":
        detected = detect_kind(content, name)
        if detected is None:
            return input_error_report(
                content,
                name=name,
                kind="unknown",
                validator_id="auto",
                message="cannot detect the kind of object (CDA, HL7 v2, XDS, XDM or FHIR)",
                constraint_id="INPUT-KIND-01",
            )
        kind = detected
    validator = get_validator(kind)
    try:
        return validator.validate(content, name=name, options=options)
    except Exception as exc:  # last-resort guard: a report, not a traceback
        return input_error_report(
            content,
            name=name,
            kind=kind,
            validator_id=validator.validator_id,
            message=f"the validator could not process this object: {type(exc).__name__}: {exc}",
            constraint_id="INPUT-INTERNAL-01",
        )


def validate_file(
    path: Path, *, kind: str = "auto", options: ValidationOptions | None = None
) -> ValidationReport:
    return validate_bytes(path.read_bytes(), name=path.name, kind=kind, options=options)


def validation_artefacts(report: ValidationReport) -> dict[str, bytes]:
    """What a proof bundle needs for one validation: relative path -> content."""
    stem = f"interop/{report.uuid}"
    summary = (
        f"object={report.object_name}\nsha256={report.object_sha256}\n"
        f"size={report.object_size}\nkind={report.kind}\nvalidator={report.validator_id}\n"
        f"result={report.result.value}\ndate={report.date.isoformat()}\n"
    )
    return {
        f"{stem}/report.gvr.xml": report.to_gvr_bytes(),
        f"{stem}/report.json": report.to_json_bytes(),
        f"{stem}/report.txt": report.to_text().encode("utf-8"),
        f"{stem}/object.sha256": summary.encode("utf-8"),
    }
