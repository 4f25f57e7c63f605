"""HL7 v2 validation for the Ségur profiles (CDA transmission, ACK, PAM France)."""
