"""Pieces shared by every simulator: configuration, PKI, store, recorder, proofs."""
