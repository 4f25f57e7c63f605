"""The wheel carries the test catalogues, and an installed copy finds them.

``testcases/`` stays at the top of the repository (a quality manager reviews it);
``setup.py`` maps it to the data package ``simulators._testcases``. This builds a real
wheel from a copy of the source tree, checks that every catalogue file is inside, then
loads the MSS and CNDA catalogues from the unpacked wheel in a separate interpreter
whose path does not lead to the source tree.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTCASES = ROOT / "testcases"
# What a build needs from the tree: the metadata, the build script, code and catalogues.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "simulators", "testcases")


def _builds_without_isolation() -> bool:
    """setuptools makes wheels by itself from 70.1; before that it needs ``wheel``."""
    if importlib.util.find_spec("wheel") is not None:
        return True
    release = importlib.metadata.version("setuptools").split(".")
    major, minor = int(release[0]), int(release[1]) if len(release) > 1 else 0
    return (major, minor) >= (70, 1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel-build")
    source = work / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in BUILD_INPUTS:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, source / name, ignore=ignore)
        else:
            shutil.copy2(item, source / name)
    out = work / "dist"
    # Build a copy, not the checkout: setuptools writes build/ and *.egg-info in place.
    # Offline (--no-build-isolation) when this environment can build wheels; otherwise
    # pip sets up build-system.requires itself, from the same index as `pip install -e`.
    isolation = ["--no-build-isolation"] if _builds_without_isolation() else []
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(out)]
    proc = subprocess.run(
        [*command, str(source)], capture_output=True, text=True, check=False, cwd=work
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("segur_sim-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_every_catalogue_file(wheel: Path) -> None:
    expected = {
        f"simulators/_testcases/{path.relative_to(TESTCASES).as_posix()}"
        for path in TESTCASES.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert any(name.startswith("simulators/_testcases/cnda/") for name in expected)
    assert any(name.startswith("simulators/_testcases/mss/tests/") for name in expected)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = sorted(expected - names)
        assert missing == [], f"catalogue files left out of the wheel: {missing}"
        shipped = sorted(n for n in names if n.startswith("simulators/_testcases/"))
        assert shipped == sorted(expected)  # nothing else slipped in either
        for name in expected:
            source = TESTCASES / name.removeprefix("simulators/_testcases/")
            assert zf.read(name) == source.read_bytes(), name


LOAD_FROM_WHEEL = textwrap.dedent(
    """
    import json, os, sys
    # The editable install of this checkout puts the source tree on sys.path and a
    # finder on sys.meta_path (from a .pth file): take both away before any import.
    source = os.path.realpath(sys.argv[1])
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != source]
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in repr(f)]
    sys.path_importer_cache.clear()
    import simulators
    from simulators.cnda.catalogue import default_directory, load_catalogue as load_cnda
    from simulators.core.testcases import installed_dir, testcases_dir
    from simulators.mss.conformance.catalogue import load_catalogue as load_mss

    cnda, mss = load_cnda(), load_mss()
    print(json.dumps({
        "package": simulators.__file__,
        "installed": str(installed_dir()),
        "cnda_dir": str(default_directory()),
        "mss_dir": str(testcases_dir("mss")),
        "cnda_services": sorted(cnda.services),
        "dmp_cases": len(cnda.service("DMP").cases),
        "mss_tests": len(mss.tests),
        "sys_path": sys.path,
        "modules": sorted(
            m.__file__ for n, m in sys.modules.items()
            if n.split(".")[0] == "simulators" and getattr(m, "__file__", None)
        ),
    }))
    """
)


def test_installed_wheel_finds_the_catalogues_without_the_source_tree(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    env = {k: v for k, v in os.environ.items() if k not in ("SEGUR_SIM_TESTCASES_DIR",)}
    env["PYTHONPATH"] = str(site)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_FROM_WHEEL, str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    shipped = site / "simulators" / "_testcases"
    assert Path(seen["package"]).resolve().is_relative_to(site.resolve())
    assert Path(seen["installed"]) == shipped
    assert Path(seen["cnda_dir"]) == shipped / "cnda"
    assert Path(seen["mss_dir"]) == shipped / "mss"
    assert not [p for p in seen["sys_path"] if p and Path(p).resolve() == ROOT]
    assert seen["modules"] and all(Path(m).is_relative_to(site) for m in seen["modules"])
    assert {"DMP", "INSi", "e-prescription", "ApCV"} <= set(seen["cnda_services"])
    assert seen["dmp_cases"] == len(list(_cases(TESTCASES / "cnda" / "dmp.toml")))
    assert seen["mss_tests"] == len(list((TESTCASES / "mss" / "tests").glob("*.toml")))


def _cases(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line == "[[case]]"]


def test_env_var_wins_over_every_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from simulators.core.testcases import TESTCASES_ENV, testcases_dir

    assert testcases_dir("mss") == TESTCASES / "mss"  # the source tree, in a checkout
    monkeypatch.setenv(TESTCASES_ENV, str(tmp_path))
    assert testcases_dir("mss") == tmp_path / "mss"
