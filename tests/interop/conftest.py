"""Fixtures of the interop tests (helpers live in interop_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_helpers import ANS_CDA, CORPUS, need_corpus

from simulators.interop.engine import ValidationOptions


@pytest.fixture
def corpus() -> Path:
    need_corpus()
    return CORPUS


@pytest.fixture(scope="session")
def official(tmp_path_factory: pytest.TempPathFactory) -> ValidationOptions:
    """The ANS rule pack, one cache for the session (compiled schematrons are kept per
    process, keyed by path and cache directory: StrucMin compiles once)."""
    need_corpus()
    cache = tmp_path_factory.mktemp("rules-cache")
    return ValidationOptions(rules_dir=ANS_CDA, cache_dir=cache, rule_source="official")
