"""XDS metadata (ebRIM 3.0) and XDM media (IHE_XDM.ZIP): validation and generation."""
