"""Where the test catalogues (``testcases/<simulator>/``) are read from.

The catalogues are data a quality manager reviews, so they live at the top of the
repository rather than inside the Python packages. ``SEGUR_SIM_TESTCASES_DIR`` points
at another copy (a reviewed fork, or an installed copy outside the source tree).
"""

from __future__ import annotations

import os
from pathlib import Path

TESTCASES_ENV = "SEGUR_SIM_TESTCASES_DIR"


def testcases_dir(simulator: str) -> Path:
    """``$SEGUR_SIM_TESTCASES_DIR/<simulator>``, else ``testcases/<simulator>`` in the tree."""
    env = os.environ.get(TESTCASES_ENV)
    if env:
        return Path(env).expanduser() / simulator
    return Path(__file__).resolve().parents[2] / "testcases" / simulator
