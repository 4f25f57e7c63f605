"""Package data of the reference client (the CDA template)."""
