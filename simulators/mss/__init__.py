"""MSSanté test mailboxes (SMTP/IMAP with TLS, PSC tokens) and the MOTCO2 unit tests."""
