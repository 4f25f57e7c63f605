"""Robustness suite: crash safety, fuzzing, hostile inputs, isolation (issue 7).

Every test here drives real processes over real sockets; see docs/robustness.md.
"""
