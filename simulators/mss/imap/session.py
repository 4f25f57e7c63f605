"""The IMAP session: the connection plumbing plus every command, and the dispatch table."""

from __future__ import annotations

from simulators.mss.imap.cmd_auth import AuthCommands
from simulators.mss.imap.cmd_mailbox import MailboxCommands
from simulators.mss.imap.cmd_message import MessageCommands
from simulators.mss.imap.connection import (
    LINE_LIMIT,
    Bad,
    ImapConnection,
    No,
    SessionClosed,
)

__all__ = ["LINE_LIMIT", "Bad", "ImapConnection", "ImapSession", "No", "SessionClosed"]


class ImapSession(AuthCommands, MailboxCommands, MessageCommands):
    """One client connection (see ``connection.py`` for the design notes)."""


_ANY, _AUTH, _SELECTED = "any", "auth", "selected"
ImapSession.commands = {
    "CAPABILITY": (ImapSession.cmd_capability, _ANY),
    "NOOP": (ImapSession.cmd_noop, _ANY),
    "LOGOUT": (ImapSession.cmd_logout, _ANY),
    "ID": (ImapSession.cmd_id, _ANY),
    "STARTTLS": (ImapSession.cmd_starttls, _ANY),
    "LOGIN": (ImapSession.cmd_login, _ANY),
    "AUTHENTICATE": (ImapSession.cmd_authenticate, _ANY),
    "ENABLE": (ImapSession.cmd_enable, _AUTH),
    "NAMESPACE": (ImapSession.cmd_namespace, _AUTH),
    "SELECT": (ImapSession.cmd_select, _AUTH),
    "EXAMINE": (ImapSession.cmd_select, _AUTH),
    "CREATE": (ImapSession.cmd_create, _AUTH),
    "DELETE": (ImapSession.cmd_delete, _AUTH),
    "RENAME": (ImapSession.cmd_rename, _AUTH),
    "SUBSCRIBE": (ImapSession.cmd_subscribe, _AUTH),
    "UNSUBSCRIBE": (ImapSession.cmd_subscribe, _AUTH),
    "LIST": (ImapSession.cmd_list, _AUTH),
    "LSUB": (ImapSession.cmd_list, _AUTH),
    "STATUS": (ImapSession.cmd_status, _AUTH),
    "APPEND": (ImapSession.cmd_append, _AUTH),
    "IDLE": (ImapSession.cmd_idle, _AUTH),
    "CHECK": (ImapSession.cmd_check, _SELECTED),
    "CLOSE": (ImapSession.cmd_close, _SELECTED),
    "UNSELECT": (ImapSession.cmd_unselect, _SELECTED),
    "EXPUNGE": (ImapSession.cmd_expunge, _SELECTED),
    "SEARCH": (ImapSession.cmd_search, _SELECTED),
    "FETCH": (ImapSession.cmd_fetch, _SELECTED),
    "STORE": (ImapSession.cmd_store, _SELECTED),
    "COPY": (ImapSession.cmd_copy, _SELECTED),
    "MOVE": (ImapSession.cmd_move, _SELECTED),
    "UID": (ImapSession.cmd_uid, _SELECTED),
}
