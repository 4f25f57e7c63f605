"""The official ANS rule pack: the schematron tree exactly as ANS publishes it.

``RulePack.open(rules_dir)`` takes the folder that holds ``schematrons/``,
``jeuxDeValeurs/`` and ``infrastructure/``. Header rules come from
``profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch``; the document-type
schematron ``CI-SIS_<VOLET>_<version>.sch`` is picked from the templateId.
Compiled schematrons are kept in memory per process and their XSLT on disk.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from simulators.interop.cda.builtin_rules import document_type_template
from simulators.interop.cda.schematron import (
    Failure,
    PackIssue,
    SaxonSchematron,
    compile_schematron,
    saxon_document,
)
from simulators.interop.cda.valuesets import DOCUMENT_TYPES, nearest_version
from simulators.interop.report import Location, Severity, SubReport, ValidationReport
from simulators.interop.safe_xml import readable_path

STRUCMIN = Path("profils") / "structurationMinimale" / "ASIP-STRUCT-MIN-StrucMin.sch"
_VOLET_RE = re.compile(r"^CI-SIS_(.+)_(\d{4}\.\d{2})\.sch$")
_STEP_RE = re.compile(r"Q\{([^}]*)\}([^\[/]+)\[(\d+)\]|@([^/]+)")

_LOCK = threading.RLock()
_COMPILED: dict[tuple[str, str], SaxonSchematron] = {}
_VOLETS: dict[tuple[str, int], tuple[Volet, ...]] = {}


@dataclass(frozen=True)
class Volet:
    name: str
    version: str
    path: Path


class RulePack:
    def __init__(self, rules_dir: Path, cache_dir: Path) -> None:
        self.rules_dir = rules_dir
        self.schematrons = rules_dir / "schematrons"
        self.cache_dir = cache_dir
        self.volets = self._index_volets()

    @classmethod
    def open(cls, rules_dir: Path, *, cache_dir: Path) -> RulePack:
        return cls(rules_dir, cache_dir)

    def _index_volets(self) -> list[Volet]:
        if not self.schematrons.is_dir():
            return []
        # one listing per folder state, not one per document
        key = (str(self.schematrons.resolve()), self.schematrons.stat().st_mtime_ns)
        with _LOCK:
            cached = _VOLETS.get(key)
        if cached is not None:
            return list(cached)
        found = []
        for path in sorted(self.schematrons.glob("CI-SIS_*.sch")):
            match = _VOLET_RE.match(path.name)
            if match:
                found.append(Volet(match.group(1), match.group(2), path))
        with _LOCK:
            _VOLETS[key] = tuple(found)
        return found

    def schematron(self, path: Path) -> SaxonSchematron:
        """Compile once per process (and once per rules content on disk)."""
        key = (str(path.resolve()), str(self.cache_dir))
        with _LOCK:
            cached = _COMPILED.get(key)
            if cached is None:
                compiled = compile_schematron(
                    path, rules_root=self.rules_dir, cache_dir=self.cache_dir
                )
                try:
                    cached = SaxonSchematron(compiled, self.cache_dir)
                except Exception:
                    # a rule context we turned into a select Saxon refuses: walk instead
                    compiled = compile_schematron(
                        path, rules_root=self.rules_dir, cache_dir=self.cache_dir, traverse=True
                    )
                    cached = SaxonSchematron(compiled, self.cache_dir)
                _COMPILED[key] = cached
            return cached

    def pick_volet(self, doc: etree._Element) -> tuple[Volet | None, str]:
        volet, why, _fallback = self.choose_volet(doc)
        return volet, why

    def choose_volet(self, doc: etree._Element) -> tuple[Volet | None, str, bool]:
        """(volet, why, fallback): ``fallback`` when the templateId names a version
        the pack has no schematron for and the nearest version's is used instead."""
        tpl, root = document_type_template(doc)
        if root is None or tpl is None:
            return None, "no document-type templateId", False
        doc_type = DOCUMENT_TYPES.get(root)
        if doc_type is None:
            return None, f"templateId {root} is not mapped to a volet", False
        wanted = doc_type.name.upper()
        candidates = [
            v
            for v in self.volets
            if v.name.split("_")[0].upper() == wanted
            or v.name.split("_")[0].upper().endswith("-" + wanted)
        ]
        if not candidates:
            return None, f"no CI-SIS_{doc_type.name}_*.sch in the rule pack", False
        version = tpl.get("extension")
        exact = [v for v in candidates if v.version == version]
        if exact:
            return exact[0], f"templateId {root} version {version}", False
        if not version:
            chosen = sorted(candidates, key=lambda v: v.version)[0]
            return (
                chosen,
                f"templateId {root}: no version in the templateId, using {chosen.path.name}",
                False,
            )
        nearest = nearest_version(version, [v.version for v in candidates])
        chosen = next(v for v in candidates if v.version == nearest)
        known = ", ".join(sorted({v.version for v in candidates}))
        return (
            chosen,
            f"templateId {root} version {version}: the rule pack has no {doc_type.name} "
            f"schematron of that version (it has {known}); the nearest one, "
            f"{chosen.path.name}, is used",
            True,
        )

    def validate(
        self, doc: etree._Element, report: ValidationReport, *, extra_profiles: tuple[str, ...] = ()
    ) -> None:
        # serialised and parsed for Saxon once, whatever the number of schematrons
        xml_doc = saxon_document(_saxon_input(doc))
        header = report.add("Header rules (official: StrucMin)")
        strucmin = self.schematrons / STRUCMIN
        if strucmin.is_file():
            self._run(strucmin, doc, xml_doc, header)
        else:
            header.fail("RULEPACK-STRUCMIN-01", f"{STRUCMIN} not found in the rule pack")
        doc_sub = report.add("Document type rules (official)")
        if doc.find("{urn:hl7-org:v3}component/{urn:hl7-org:v3}nonXMLBody") is not None:
            doc_sub.info("RULEPACK-VOLET-00", "level-1 document: no volet schematron applies")
        else:
            volet, why, fallback = self.choose_volet(doc)
            if volet is None:
                doc_sub.check(
                    "RULEPACK-VOLET-01",
                    False,
                    f"no volet schematron: {why}",
                    severity=Severity.WARNING,
                )
            elif fallback:
                doc_sub.check(
                    "RULEPACK-VOLET-03",
                    False,
                    why,
                    severity=Severity.WARNING,
                    location=_template_location(doc),
                )
                self._run(volet.path, doc, xml_doc, doc_sub)
            else:
                doc_sub.info("RULEPACK-VOLET-02", f"{volet.path.name} ({why})")
                self._run(volet.path, doc, xml_doc, doc_sub)
        for rel in extra_profiles:
            sub = report.add(f"Profile {rel} (official)")
            path = self.schematrons / rel
            if path.is_file():
                self._run(path, doc, xml_doc, sub)
            else:
                sub.fail("RULEPACK-PROFILE-01", f"{rel} not found in the rule pack")

    def _run(self, path: Path, doc: etree._Element, xml_doc: Any, sub: SubReport) -> None:
        sch = self.schematron(path)
        _pack_warnings(sch.compiled.issues, sub)
        failures = sch.run(xml_doc)
        sub.check(
            f"{path.stem}",
            True,
            f"{path.name}: {sch.compiled.asserts} assertions evaluated, {len(failures)} failed",
            severity=Severity.INFO,
            constraint_type="schematron",
        )
        for failure in failures:
            sub.check(
                failure.assert_id,
                False,
                failure.message,
                severity=_severity(failure),
                location=_locate(doc, failure.path),
                constraint_type="schematron",
            )


def _pack_warnings(issues: list[PackIssue], sub: SubReport) -> None:
    for issue in issues:
        sub.check(
            issue.code,
            False,
            f"rule pack defect in {issue.source}: {issue.message}",
            severity=Severity.WARNING,
            constraint_type="rulepack",
        )


def _severity(failure: Failure) -> Severity:
    role = failure.role.lower()
    if role in ("warning", "warn"):
        return Severity.WARNING
    if role in ("info", "information"):
        return Severity.INFO
    if role in ("error", "fatal"):
        return Severity.ERROR
    if failure.kind == "report":
        # an unqualified <report> in the ANS volets signals a notice, not an error
        return Severity.WARNING
    text = failure.message.lower()
    if "attention" in text or "avertissement" in text or "warning" in text:
        return Severity.WARNING
    return Severity.ERROR


def _template_location(doc: etree._Element) -> Location | None:
    tpl, _root = document_type_template(doc)
    return Location(line=tpl.sourceline, xpath=readable_path(tpl)) if tpl is not None else None


def _saxon_input(doc: etree._Element) -> str:
    """The text handed to Saxon: the CDA alone, already parsed safely (no DOCTYPE, no
    entities). Locations are mapped back onto the original lxml tree, so line
    numbers stay those of the file."""
    return etree.tostring(doc, encoding="unicode")


def _locate(doc: etree._Element, path: str) -> Location:
    """Turn Saxon's path() into our readable XPath and the element's line."""
    steps = [s for s in path.split("/") if s]
    current: etree._Element | None = None
    for i, step in enumerate(steps):
        match = _STEP_RE.fullmatch(step)
        if match is None:
            current = None
            break
        ns, name, index, attr = match.groups()
        if attr is not None:
            break
        tag = f"{{{ns}}}{name}" if ns else name
        if i == 0:
            current = doc if doc.tag == tag else None
        elif current is not None:
            same = [c for c in current if c.tag == tag]
            current = same[int(index) - 1] if int(index) <= len(same) else None
        if current is None:
            break
    node = current
    if node is None:
        readable = re.sub(r"Q\{[^}]*\}", "", path)
        return Location(xpath=readable or None)
    return Location(line=node.sourceline, xpath=readable_path(node))
