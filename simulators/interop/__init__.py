"""The local Gazelle: CDA, HL7 v2, XDS/XDM and FHIR validators with Gazelle-shaped reports."""
