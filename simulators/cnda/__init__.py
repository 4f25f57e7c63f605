"""The CNDA homologation portal mock: editors, software, dossiers, attestations."""
