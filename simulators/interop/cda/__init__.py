"""CDA R2 validation: XSD, French header rules ("structuration minimale"), document-type rules."""
