"""``segur-sim interop`` commands: exit codes, formats, XDM build."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from click.testing import CliRunner
from interop_helpers import FIXTURES, mutate
from lxml import etree

from simulators.interop.cli import interop
from simulators.interop.report import GVR_NS

GOOD = FIXTURES / "cda" / "segur-sim_VAC-NOTE_2023.01.xml"


def _bad(tmp_path: Path) -> Path:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(
        mutate(GOOD.read_bytes(), b'confidentialityCode code="N"', b'confidentialityCode code="X"')
    )
    return bad


def test_validate_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(interop, ["validate", str(GOOD)])
    assert ok.exit_code == 0 and "PASSED" in ok.output
    mixed = runner.invoke(interop, ["validate", str(GOOD), str(_bad(tmp_path))])
    assert mixed.exit_code == 1
    assert "[2/2] FAILED" in mixed.output  # progress display (stderr is mixed in)
    usage = runner.invoke(interop, ["validate", "--rule-source", "official", str(GOOD)])
    assert usage.exit_code == 2
    missing = runner.invoke(interop, ["validate", str(tmp_path / "nope.xml")])
    assert missing.exit_code == 2


def test_validate_formats_and_out_file(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "r.xml"
    result = runner.invoke(
        interop, ["validate", "--format", "gvr", "--out", str(out), str(_bad(tmp_path))]
    )
    assert result.exit_code == 1
    root = etree.parse(str(out)).getroot()
    assert root.tag == f"{{{GVR_NS}}}validationReport" and root.get("result") == "FAILED"
    js = runner.invoke(interop, ["validate", "--format", "json", "--kind", "cda", str(GOOD)])
    assert json.loads(js.stdout)["result"] == "PASSED"


def test_xdm_build_then_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "IHE_XDM.ZIP"
    built = runner.invoke(interop, ["xdm", "build", str(GOOD), "--out", str(out)])
    assert built.exit_code == 0, built.output
    assert "IHE_XDM/SUBSET01/METADATA.XML" in zipfile.ZipFile(out).namelist()
    assert runner.invoke(interop, ["validate", str(out)]).exit_code == 0
    not_cda = tmp_path / "x.xml"
    not_cda.write_bytes(b"<a/>")
    assert runner.invoke(interop, ["xdm", "build", str(not_cda)]).exit_code == 2
