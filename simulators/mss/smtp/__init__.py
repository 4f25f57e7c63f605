"""SMTP submission (STARTTLS and implicit TLS) on our own lean command engine."""

from simulators.mss.smtp.listener import SmtpListener

__all__ = ["SmtpListener"]
