"""The CNDA console pages in real headless Chromium: test-plan coverage.

A dossier is opened and its test plan sent over the CNDA REST API (HTTPS, httpx);
then, in Debian's ``chromium`` driven by Playwright, the editor deposits a file
declaring a plan case through the request page's form and sees that case's coverage
change, then a signed proof bundle that passes another case and sees the count move;
the agent sees, beside Validate, that validating records the incomplete coverage.

Like tests/web/test_browser.py, Chromium trusts exactly the simulator's HTTPS key
(``--ignore-certificate-errors-spki-list``), never every certificate.
"""

from __future__ import annotations

import io
import ssl
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import chromium_for, new_tab, requires_chromium

from simulators.cnda.api import ROLE_HEADER
from simulators.controller import SimulatorController
from simulators.core import proof

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = requires_chromium
CNDA = "/api/cnda"
PLAN = ["0.1-210", "0.2-100", "3.1-100", "3.2-100"]


@pytest.fixture(scope="module")
def web_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorController]:
    with SimulatorController(tmp_path_factory.mktemp("browser-cnda") / "data") as controller:
        yield controller


@pytest.fixture(scope="module")
def browser(web_sim: SimulatorController) -> Iterator[Any]:
    with chromium_for(web_sim) as chromium:
        yield chromium


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with new_tab(browser) as tab:
        yield tab


def base(sim: SimulatorController) -> str:
    return str(sim.endpoints["console_url"]).rstrip("/")


def dossier_with_plan(sim: SimulatorController) -> str:
    """Over the CNDA REST API: editor, software, a DMP request, its plan sent."""
    trust = ssl.create_default_context(cafile=sim.endpoints["ca_bundle"])
    editor = {ROLE_HEADER: "editor"}
    with httpx.Client(base_url=base(sim) + CNDA, verify=trust, timeout=30) as http:

        def ok(response: httpx.Response) -> Any:
            assert response.status_code in (200, 201), response.text
            return response.json()

        nie = ok(http.post("/editors", json={"name": "Éditeur Chromium"}, headers=editor))["nie"]
        nil = ok(
            http.post(
                f"/editors/{nie}/software",
                json={"name": "DPI Chromium", "version": "3.1"},
                headers=editor,
            )
        )["nil"]
        opened = ok(
            http.post(
                "/requests",
                json={
                    "nie": nie,
                    "nil": nil,
                    "service": "DMP",
                    "perimeter": {
                        "profiles": ["consultation"],
                        "auth_modes": ["indirecte-certificat-es"],
                    },
                },
                headers=editor,
            )
        )
        request_id = str(opened["id"])
        for doc_type in ("contract_request", "signed_conditions"):
            ok(
                http.post(
                    f"/requests/{request_id}/documents",
                    data={"doc_type": doc_type},
                    files={"file": (f"{doc_type}.pdf", b"%PDF-1.4 simulated")},
                    headers=editor,
                )
            )
        sent = ok(
            http.post(
                f"/requests/{request_id}/actions/send-test-plan", headers={ROLE_HEADER: "agent"}
            )
        )
        assert [c["id"] for c in sent["testPlan"]["cases"]] == PLAN
    return request_id


def coverage_of(page: Any, case: str) -> str:
    return str(page.locator(f'#test-plan tr[data-case="{case}"] td.coverage').inner_text())


def zipped(bundle: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                zf.write(path, f"{bundle.name}/{path.relative_to(bundle).as_posix()}")
    return buffer.getvalue()


def test_deposit_a_file_declaring_a_case_and_see_the_coverage_change(
    page: Any, web_sim: SimulatorController, tmp_path: Path
) -> None:
    request_id = dossier_with_plan(web_sim)
    page.goto(f"{base(web_sim)}/cnda/requests/{request_id}?role=editor")
    assert page.locator("#coverage-count").inner_text() == "0/4"
    assert [coverage_of(page, c) for c in PLAN] == ["uncovered"] * 4
    assert page.locator("#coverage-not-passed").inner_text() == ", ".join(PLAN)
    offered = page.locator('#declare-cases input[name="cases"]')
    assert [offered.nth(i).get_attribute("value") for i in range(offered.count())] == PLAN

    # the editor deposits captures and declares that they cover 0.1-210
    page.set_input_files(
        '#deposit-proof input[name="file"]',
        {"name": "captures-0.1-210.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4 c"},
    )
    page.check('#declare-cases input[value="0.1-210"]')
    with page.expect_navigation():
        page.click('#deposit-proof button[type="submit"]')
    assert page.locator('p[role="alert"]').count() == 0
    assert coverage_of(page, "0.1-210") == "declared"
    cell = page.locator('#test-plan tr[data-case="0.1-210"] td.case-proofs').inner_text()
    assert cell == "captures-0.1-210.pdf (declared)"
    assert [coverage_of(page, c) for c in PLAN[1:]] == ["uncovered"] * 3
    covered = page.locator("#proofs td.covered-cases").first.inner_text()
    assert covered == "0.1-210 declared"
    assert page.locator("#coverage-count").inner_text() == "0/4"  # declared is not passed

    # a signed bundle that passes 0.2-100: the count and the list of cases to cover move
    assert web_sim.services is not None
    bundle = proof.write_bundle(
        tmp_path / "bundle",
        kind="interop",
        predicate={"result": "PASSED", "passedTests": ["0.2-100"], "failedTests": []},
        artefacts={"transcript.txt": b"DMP 0.2-100\r\n"},
        html="<p>0.2-100</p>",
        pki=web_sim.services.pki,
        run_id="chromium-coverage",
    )
    page.set_input_files(
        '#deposit-proof input[name="file"]',
        {"name": "dmp-0.2-100.zip", "mimeType": "application/zip", "buffer": zipped(bundle)},
    )
    with page.expect_navigation():
        page.click('#deposit-proof button[type="submit"]')
    assert coverage_of(page, "0.2-100") == "passed"
    assert page.locator("#coverage-count").inner_text() == "1/4"
    assert page.locator("#coverage-not-passed").inner_text() == "0.1-210, 3.1-100, 3.2-100"

    # the agent is told, beside Validate, what validating this plan records
    page.goto(f"{base(web_sim)}/cnda/requests/{request_id}?role=agent")
    note = page.locator("#validate-coverage-note")
    assert note.is_visible()
    assert "1/4 cases passed" in note.inner_text()
    assert "validating records the incomplete coverage in the event" in note.inner_text()
    with page.expect_navigation():
        page.click("button.action-validate")
    assert page.locator("#validate-coverage-note").count() == 0
    assert "validate" in page.locator("#events").inner_text()
