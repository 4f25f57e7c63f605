"""SMTP submission (STARTTLS and implicit TLS) built on aiosmtpd."""

from simulators.mss.smtp.listener import SmtpListener

__all__ = ["SmtpListener"]
