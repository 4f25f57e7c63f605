"""Services and test cases of the CNDA mock, loaded from ``testcases/cnda/*.toml``.

The catalogue is data a quality manager can review: which services exist, which
perimeter axes each one has, and which cases a declared perimeter selects. Nothing
about a particular service is hard-coded here.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.core.testcases import TESTCASES_ENV, testcases_dir

Perimeter = dict[str, list[str]]


class CatalogueError(ValueError):
    """The catalogue files are inconsistent, or a perimeter does not fit a service."""


@dataclass(frozen=True)
class Dimension:
    id: str
    label: str
    values: tuple[str, ...]
    required: bool


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest class

    id: str
    title: str
    source: str
    requirements: tuple[str, ...]
    selected_by: dict[str, tuple[str, ...]]
    # Test names in other proof bundles that count as evidence for this case (see
    # coverage.py); the case's own ID always counts.
    covered_by: tuple[str, ...] = ()

    def selected(self, perimeter: Perimeter) -> bool:
        return all(
            set(perimeter.get(axis, ())) & set(values) for axis, values in self.selected_by.items()
        )

    def as_dict(self) -> dict[str, Any]:
        case: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "source": self.source,
            "requirements": list(self.requirements),
        }
        if self.covered_by:
            case["coveredBy"] = list(self.covered_by)
        return case


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    referentiel: str
    referentiel_version: str
    test_plan: str
    test_plan_version: str
    pre_examen_days: int
    attestation_validity_days: int
    test_environment: str
    dimensions: tuple[Dimension, ...]
    psc_when: dict[str, tuple[str, ...]] | None
    cases: tuple[TestCase, ...] = field(default=())
    source_file: str = ""

    def check_perimeter(self, perimeter: Perimeter) -> Perimeter:
        """The perimeter, normalised (sorted, deduplicated), or CatalogueError."""
        known = {d.id: d for d in self.dimensions}
        unknown = sorted(set(perimeter) - set(known))
        if unknown:
            raise CatalogueError(
                f"unknown perimeter axis {unknown} for {self.id}; expected {sorted(known)}"
            )
        clean: Perimeter = {}
        for dim in self.dimensions:
            values = sorted(set(perimeter.get(dim.id, [])))
            bad = [v for v in values if v not in dim.values]
            if bad:
                raise CatalogueError(
                    f"{self.id} {dim.id}: unknown value(s) {bad}; allowed {list(dim.values)}"
                )
            if dim.required and not values:
                raise CatalogueError(
                    f"{self.id}: choose at least one {dim.id} among {list(dim.values)}"
                )
            if values:
                clean[dim.id] = values
        return clean

    def uses_psc(self, perimeter: Perimeter) -> bool:
        if self.psc_when is None:
            return False
        return all(set(perimeter.get(a, ())) & set(v) for a, v in self.psc_when.items())

    def test_plan_for(self, perimeter: Perimeter) -> list[TestCase]:
        return [case for case in self.cases if case.selected(perimeter)]


@dataclass(frozen=True)
class Catalogue:
    services: dict[str, Service]
    directory: Path

    def service(self, service_id: str) -> Service:
        # Case-insensitive: editors type "dmp" as often as "DMP".
        for key, service in self.services.items():
            if key.lower() == service_id.lower():
                return service
        raise CatalogueError(f"unknown service {service_id!r}; known: {sorted(self.services)}")


def default_directory() -> Path:
    """``$SEGUR_SIM_TESTCASES_DIR/cnda``, else the source tree's, else the installed copy."""
    return testcases_dir("cnda")


def load_catalogue(directory: Path | None = None) -> Catalogue:
    directory = directory or default_directory()
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise CatalogueError(
            f"no CNDA catalogue in {directory}; set {TESTCASES_ENV} to the testcases directory"
        )
    services: dict[str, Service] = {}
    for file in files:
        service = _load_file(file)
        if service.id.lower() in {k.lower() for k in services}:
            raise CatalogueError(f"{file.name}: service {service.id} is declared twice")
        services[service.id] = service
    return Catalogue(services, directory)


def _load_file(file: Path) -> Service:
    with file.open("rb") as fh:
        data = tomllib.load(fh)
    where = file.name
    try:
        raw = data["service"]
        dimensions = tuple(
            Dimension(d["id"], d.get("label", d["id"]), tuple(d["values"]), bool(d["required"]))
            for d in raw.get("dimension", [])
        )
        axes = {d.id: set(d.values) for d in dimensions}
        psc_when = raw.get("psc_when")
        service = Service(
            id=raw["id"],
            name=raw["name"],
            referentiel=raw["referentiel"],
            referentiel_version=raw["referentiel_version"],
            test_plan=raw["test_plan"],
            test_plan_version=raw["test_plan_version"],
            pre_examen_days=int(raw.get("pre_examen_days", 30)),
            attestation_validity_days=int(raw.get("attestation_validity_days", 1095)),
            test_environment=raw.get("test_environment", "https://test.cnda.localhost/{request}"),
            dimensions=dimensions,
            psc_when=_selector(psc_when, axes, f"{where} psc_when") if psc_when else None,
            source_file=where,
        )
        cases = []
        seen: set[str] = set()
        for item in data.get("case", []):
            case_id = item["id"]
            if case_id in seen:
                raise CatalogueError(f"{where}: case {case_id} appears twice")
            seen.add(case_id)
            if item.get("source") not in ("public", "illustrative"):
                raise CatalogueError(f"{where}: case {case_id} needs source public|illustrative")
            covered_by = item.get("covered_by", [])
            if not isinstance(covered_by, list) or not all(
                isinstance(name, str) and name.strip() for name in covered_by
            ):
                raise CatalogueError(f"{where}: case {case_id} covered_by must list test names")
            cases.append(
                TestCase(
                    id=case_id,
                    title=item["title"],
                    source=item["source"],
                    requirements=tuple(item.get("requirements", [])),
                    selected_by=_selector(
                        item.get("selected_by", {}), axes, f"{where} case {case_id}"
                    ),
                    covered_by=tuple(covered_by),
                )
            )
    except KeyError as exc:
        raise CatalogueError(f"{where}: missing field {exc}") from exc
    return Service(**{**service.__dict__, "cases": tuple(cases)})


def _selector(
    raw: dict[str, Any], axes: dict[str, set[str]], where: str
) -> dict[str, tuple[str, ...]]:
    selector: dict[str, tuple[str, ...]] = {}
    for axis, values in raw.items():
        if axis not in axes:
            raise CatalogueError(f"{where}: unknown axis {axis!r}")
        bad = sorted(set(values) - axes[axis])
        if bad:
            raise CatalogueError(f"{where}: {axis} has unknown value(s) {bad}")
        selector[axis] = tuple(values)
    return selector
