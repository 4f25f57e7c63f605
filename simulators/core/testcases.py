"""Where the test catalogues (``testcases/<simulator>/``) are read from.

The catalogues are data a quality manager reviews, so they live at the top of the
repository rather than inside the Python packages. They are found, in this order:

1. ``$SEGUR_SIM_TESTCASES_DIR/<simulator>`` when the variable is set (a reviewed fork,
   or a copy installed elsewhere);
2. ``testcases/<simulator>`` in the source tree, when running from a checkout or an
   editable install (edits show at once);
3. the copy shipped inside the installed package: ``setup.py`` maps ``testcases/`` to
   the data package ``simulators._testcases``, so a wheel or ``pip install .`` carries
   it, found here through :mod:`importlib.resources`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

TESTCASES_ENV = "SEGUR_SIM_TESTCASES_DIR"
DATA_PACKAGE = "_testcases"  # simulators/_testcases in an installed wheel


def source_tree_dir() -> Path:
    """``testcases/`` at the top of the source tree this module was imported from."""
    return Path(__file__).resolve().parents[2] / "testcases"


def installed_dir() -> Path | None:
    """The catalogues shipped in the installed package, or None when there are none."""
    shipped = resources.files("simulators").joinpath(DATA_PACKAGE)
    # A regular (file system) install gives a Path; a zipped import cannot be globbed.
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped
    return None


def testcases_dir(simulator: str) -> Path:
    """The directory holding ``<simulator>``'s catalogue (see the module docstring)."""
    env = os.environ.get(TESTCASES_ENV)
    if env:
        return Path(env).expanduser() / simulator
    tree = source_tree_dir()
    if (tree / simulator).is_dir() and (tree.parent / "pyproject.toml").is_file():
        return tree / simulator
    shipped = installed_dir()
    if shipped is not None and (shipped / simulator).is_dir():
        return shipped / simulator
    # Nothing found: name the source-tree place, the loaders' errors then explain.
    return tree / simulator
