"""The homologation dossier lifecycle: states, who may do what, and from where.

This table is the whole state machine; ``service.py`` applies it and adds the
guards that need data (documents present, proofs deposited...). Keeping it as data
lets the API, the CLI, the status page and the docs all show the same rules.

The steps follow the public CNDA process: Initialisation, Pré-examen ("En cours
actif" for the editor), Examen de conformité, Finalisation. Abandonment is possible
from any open state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    INITIALISATION = "initialisation"
    PRE_EXAMEN = "pre_examen"
    CORRECTION = "correction"  # proofs refused, returned to the editor for correction
    EXAMEN_A_PLANIFIER = "examen_a_planifier"
    EXAMEN_PLANIFIE = "examen_planifie"
    FINALISATION = "finalisation"  # exam passed, attestation to issue
    ATTESTATION_EMISE = "attestation_emise"  # waiting for the editor's last documents
    CONFORME = "conforme"
    ABANDONNE = "abandonne"


class Role(StrEnum):
    EDITOR = "editor"
    AGENT = "agent"


TERMINAL = frozenset({State.CONFORME, State.ABANDONNE})
OPEN_STATES = frozenset(set(State) - TERMINAL)


@dataclass(frozen=True)
class StateInfo:
    phase: str  # one of the four public steps, or "Clos"
    portal_status: str  # what the editor's portal shows


STATE_INFO: dict[State, StateInfo] = {
    State.INITIALISATION: StateInfo("Initialisation", "Initialisation"),
    State.PRE_EXAMEN: StateInfo("Pré-examen", "En cours actif"),
    State.CORRECTION: StateInfo("Pré-examen", "En cours actif - retour pour correction"),
    State.EXAMEN_A_PLANIFIER: StateInfo("Examen de conformité", "Examen à planifier"),
    State.EXAMEN_PLANIFIE: StateInfo("Examen de conformité", "Examen planifié"),
    State.FINALISATION: StateInfo("Finalisation", "Examen réussi - attestation en cours"),
    State.ATTESTATION_EMISE: StateInfo("Finalisation", "Attestation émise - documents attendus"),
    State.CONFORME: StateInfo("Clos", "Conforme"),
    State.ABANDONNE: StateInfo("Clos", "Abandonné"),
}


class Action(StrEnum):
    SEND_TEST_PLAN = "send-test-plan"
    VALIDATE = "validate"
    REFUSE = "refuse"
    RESUBMIT = "resubmit"
    SCHEDULE_EXAM = "schedule-exam"
    FAIL_EXAM = "fail-exam"
    PASS_EXAM = "pass-exam"
    FINALISE = "finalise"
    COMPLETE = "complete"
    ABANDON = "abandon"


@dataclass(frozen=True)
class Transition:
    action: Action
    sources: frozenset[State]
    target: State
    roles: frozenset[Role]
    needs_reason: bool
    summary: str


def _t(
    action: Action,
    sources: set[State] | frozenset[State],
    target: State,
    roles: set[Role],
    summary: str,
    *,
    needs_reason: bool = False,
) -> Transition:
    return Transition(action, frozenset(sources), target, frozenset(roles), needs_reason, summary)


TRANSITIONS: dict[Action, Transition] = {
    t.action: t
    for t in (
        _t(
            Action.SEND_TEST_PLAN,
            {State.INITIALISATION},
            State.PRE_EXAMEN,
            {Role.AGENT},
            "CNDA sends the filtered test plan, the test-environment access and a "
            "provisional number (needs the contract request and signed conditions, and "
            "the technical-maturity attestation for PSC)",
        ),
        _t(
            Action.REFUSE,
            {State.PRE_EXAMEN},
            State.CORRECTION,
            {Role.AGENT},
            "CNDA refuses the proofs with reasons and returns the dossier for correction",
            needs_reason=True,
        ),
        _t(
            Action.RESUBMIT,
            {State.CORRECTION},
            State.PRE_EXAMEN,
            {Role.EDITOR},
            "the editor hands back corrected proofs (needs a proof deposited since the refusal)",
        ),
        _t(
            Action.VALIDATE,
            {State.PRE_EXAMEN},
            State.EXAMEN_A_PLANIFIER,
            {Role.AGENT},
            "CNDA validates the proofs of the current round (needs at least one proof)",
        ),
        _t(
            Action.SCHEDULE_EXAM,
            {State.EXAMEN_A_PLANIFIER},
            State.EXAMEN_PLANIFIE,
            {Role.AGENT},
            "CNDA sets the date and mode (remote or in person) of the conformity exam",
        ),
        _t(
            Action.FAIL_EXAM,
            {State.EXAMEN_PLANIFIE},
            State.EXAMEN_PLANIFIE,
            {Role.AGENT},
            "the exam fails; a new date is proposed",
            needs_reason=True,
        ),
        _t(
            Action.PASS_EXAM,
            {State.EXAMEN_PLANIFIE},
            State.FINALISATION,
            {Role.AGENT},
            "the exam passes",
        ),
        _t(
            Action.FINALISE,
            {State.FINALISATION},
            State.ATTESTATION_EMISE,
            {Role.AGENT},
            "CNDA issues the signed attestation de conformité and a production number",
        ),
        _t(
            Action.COMPLETE,
            {State.ATTESTATION_EMISE},
            State.CONFORME,
            {Role.EDITOR, Role.AGENT},
            "the dossier closes compliant (needs the satisfaction questionnaire, and the "
            "PSC habilitation receipt for PSC perimeters)",
        ),
        _t(
            Action.ABANDON,
            OPEN_STATES,
            State.ABANDONNE,
            {Role.EDITOR, Role.AGENT},
            "the dossier is abandoned",
            needs_reason=True,
        ),
    )
}


class DocumentType(StrEnum):
    CONTRACT_REQUEST = "contract_request"
    SIGNED_CONDITIONS = "signed_conditions"
    PSC_MATURITY_ATTESTATION = "psc_maturity_attestation"
    PSC_HABILITATION_RECEIPT = "psc_habilitation_receipt"
    SATISFACTION_QUESTIONNAIRE = "satisfaction_questionnaire"


# Where each contractual document may be deposited.
DOCUMENT_STATES: dict[DocumentType, frozenset[State]] = {
    DocumentType.CONTRACT_REQUEST: frozenset({State.INITIALISATION}),
    DocumentType.SIGNED_CONDITIONS: frozenset({State.INITIALISATION}),
    DocumentType.PSC_MATURITY_ATTESTATION: frozenset({State.INITIALISATION}),
    DocumentType.PSC_HABILITATION_RECEIPT: frozenset({State.FINALISATION, State.ATTESTATION_EMISE}),
    DocumentType.SATISFACTION_QUESTIONNAIRE: frozenset(
        {State.FINALISATION, State.ATTESTATION_EMISE}
    ),
}

PROOF_STATES = frozenset({State.PRE_EXAMEN, State.CORRECTION})


def allowed_actions(state: State) -> list[Action]:
    return [t.action for t in TRANSITIONS.values() if state in t.sources]
