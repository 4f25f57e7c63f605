"""``python -m simulators`` is ``segur-sim``."""

from simulators.cli import main

main()
