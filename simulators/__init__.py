"""segur-sim: a local simulator of the Ségur e-health test environments.

Everything it produces is simulated; nothing it issues is an official ANS or CNDA proof.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "SIMULATION - produced by segur-sim, a local simulator. "
    "This is NOT an official ANS, MOTCO2, Gazelle or CNDA proof."
)
