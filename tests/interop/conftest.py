"""Fixtures of the interop tests (helpers live in interop_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_helpers import CORPUS, need_corpus


@pytest.fixture
def corpus() -> Path:
    need_corpus()
    return CORPUS
