"""The one thing pyproject.toml cannot say: ship ``testcases/`` inside the wheel.

The test catalogues stay at the top of the repository, where a quality manager reviews
them. This maps them to the data package ``simulators._testcases`` so that a wheel or a
plain ``pip install .`` carries them too; ``simulators.core.testcases`` finds that copy
through importlib.resources when there is no source tree. Everything else about the
project (metadata, dependencies, package data globs) is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["simulators*"]), "simulators._testcases"],
    package_dir={"simulators._testcases": "testcases"},
)
