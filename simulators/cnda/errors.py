"""Errors of the CNDA mock. Each maps to one HTTP status and to CLI exit code 2."""

from __future__ import annotations


class CndaError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(CndaError):
    """An unknown NIE, NIL or dossier ID."""

    status_code = 404


class InvalidInputError(CndaError):
    """Malformed input: unknown service, bad perimeter, missing reason, bad date..."""

    status_code = 422


class ProofRefusedError(InvalidInputError):
    """A deposited proof bundle does not verify; ``problems`` says why."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


class ForbiddenRoleError(CndaError):
    """The action belongs to the other role (editor vs CNDA agent)."""

    status_code = 403


class IllegalTransitionError(CndaError):
    """The dossier's state does not allow this action; nothing was changed."""

    status_code = 409
