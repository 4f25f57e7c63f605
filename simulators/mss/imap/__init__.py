"""The IMAP4rev1 server of the MSS simulator (STARTTLS and implicit TLS listeners)."""

from simulators.mss.imap.server import ImapServer, ImapSessionRegistry
from simulators.mss.imap.session import ImapSession

__all__ = ["ImapServer", "ImapSession", "ImapSessionRegistry"]
