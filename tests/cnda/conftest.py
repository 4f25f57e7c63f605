"""Fixtures of the CNDA mock tests: one PKI per session, one store per test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cnda_support import BundleMaker

from simulators.cnda.catalogue import Catalogue, load_catalogue
from simulators.cnda.service import CndaService
from simulators.core import proof
from simulators.core.config import DataDir
from simulators.core.pki import TestPKI
from simulators.core.store.database import Database


class FakeClock:
    def __init__(self) -> None:
        self.now = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)  # strictly increasing, like a real clock
        return self.now


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI.load_or_create(tmp_path_factory.mktemp("pki"), "mssante.localhost")


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return load_catalogue()


@pytest.fixture
def data_dir(tmp_path: Path, pki: TestPKI) -> DataDir:
    data = DataDir.open(tmp_path / "data")
    # Share the session PKI: key generation is the slow part of a fresh data dir.
    data.pki_dir.symlink_to(pki.dir, target_is_directory=True)
    return data


@pytest.fixture
def db(data_dir: DataDir) -> Iterator[Database]:
    database = Database(data_dir.db_path, durable=False)
    yield database
    database.close()


@pytest.fixture
def service(db: Database, data_dir: DataDir, pki: TestPKI, catalogue: Catalogue) -> CndaService:
    return CndaService(db, data_dir, catalogue=catalogue, pki=pki, clock=FakeClock())


@pytest.fixture
def make_bundle(tmp_path: Path, pki: TestPKI) -> BundleMaker:
    counter = iter(range(1, 10_000))

    def make(
        result: str = "PASSED",
        *,
        signer: TestPKI | None = None,
        passed: list[str] | None = None,
        failed: list[str] | None = None,
        warned: list[str] | None = None,
        **extra: Any,
    ) -> Path:
        """A real signed bundle; ``passed``/``failed``/``warned`` name its tests."""
        n = next(counter)
        if failed is None:
            failed = ["MSS-IMAP-02"] if result == "FAILED" else []
        return proof.write_bundle(
            tmp_path / "runs" / f"run-{n}",
            kind="mss",
            predicate={
                "result": result,
                "passedTests": ["MSS-SMTP-01"] if passed is None else passed,
                "failedTests": failed,
                "warnedTests": warned or [],
                "suite": "MOTCO2",
                **extra,
            },
            artefacts={"transcript.txt": f"run {n}\r\n".encode()},
            html=f"<p>run {n}</p>",
            pki=signer or pki,
            run_id=f"run-{n}",
        )

    return make
