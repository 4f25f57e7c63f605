"""The CNDA catalogue is data: services, perimeter axes and the filtered test plan."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from simulators.cnda.catalogue import (
    TESTCASES_ENV,
    Catalogue,
    CatalogueError,
    default_directory,
    load_catalogue,
)


def test_shipped_services(catalogue: Catalogue) -> None:
    assert {"DMP", "INSi", "e-prescription", "ApCV"} <= set(catalogue.services)
    dmp = catalogue.service("dmp")
    assert [d.id for d in dmp.dimensions] == ["profiles", "auth_modes", "transactions"]
    ids = {c.id for c in dmp.cases}
    assert {"0.1-210", "0.2-100"} <= ids
    assert {c.source for c in dmp.cases} == {"public", "illustrative"}
    assert all(c.requirements for s in catalogue.services.values() for c in s.cases)


def test_plan_is_filtered_by_perimeter(catalogue: Catalogue) -> None:
    dmp = catalogue.service("DMP")
    consult = [
        c.id
        for c in dmp.test_plan_for({"profiles": ["consultation"], "auth_modes": ["directe-cps"]})
    ]
    assert consult == ["0.1-220", "0.2-100", "3.1-100", "3.2-100"]
    # A case with two axes needs both: TD0.3 only with the consultation profile.
    with_td03 = {"profiles": ["consultation"], "auth_modes": ["psc"], "transactions": ["TD0.3"]}
    assert "0.3-100" in [c.id for c in dmp.test_plan_for(with_td03)]
    with_td03["profiles"] = ["alimentation"]
    assert "0.3-100" not in [c.id for c in dmp.test_plan_for(with_td03)]
    # A case without selected_by is always in the plan.
    apcv = catalogue.service("ApCV")
    assert [c.id for c in apcv.test_plan_for({"usages": ["lecture-identite"]})] == [
        "APCV-010",
        "APCV-030",
    ]


def test_psc_rule_is_data(catalogue: Catalogue) -> None:
    dmp = catalogue.service("DMP")
    assert dmp.uses_psc({"profiles": ["alimentation"], "auth_modes": ["psc"]})
    assert not dmp.uses_psc({"profiles": ["alimentation"], "auth_modes": ["directe-cps"]})
    assert not catalogue.service("INSi").uses_psc({"operations": ["verification"]})


def test_perimeter_is_normalised(catalogue: Catalogue) -> None:
    dmp = catalogue.service("DMP")
    clean = dmp.check_perimeter(
        {"profiles": ["consultation", "alimentation", "consultation"], "auth_modes": ["psc"]}
    )
    assert clean == {"profiles": ["alimentation", "consultation"], "auth_modes": ["psc"]}


def test_env_var_selects_the_testcases_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "testcases" / "cnda"
    target.mkdir(parents=True)
    shutil.copy(default_directory() / "insi.toml", target)
    monkeypatch.setenv(TESTCASES_ENV, str(tmp_path / "testcases"))
    assert default_directory() == target
    assert set(load_catalogue().services) == {"INSi"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ('selected_by = { operations = ["recherche-carte-vitale"] }',
         "unknown value"),
        ('selected_by = { colour = ["red"] }', "unknown axis"),
        ('source = "leaked"', "source public|illustrative"),
    ],
)  # fmt: skip
def test_inconsistent_catalogue_is_refused(tmp_path: Path, patch: str, message: str) -> None:
    text = (default_directory() / "insi.toml").read_text()
    if "selected_by" in patch:
        bad = patch.replace("recherche-carte-vitale", "teleportation")
        text = text.replace('selected_by = { operations = ["verification"] }', bad, 1)
    else:
        text = text.replace('source = "public"', patch, 1)
    (tmp_path / "insi.toml").write_text(text)
    with pytest.raises(CatalogueError, match=message):
        load_catalogue(tmp_path)


def test_empty_directory_is_explained(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match=TESTCASES_ENV):
        load_catalogue(tmp_path)
