"""Checks registered by catalogue ID, in the style of aiosmtpd's handler hooks.

A check judges one step of a unit test. It says when the step has seen enough to be
judged (``ready``), when the runner's mid-step action may fire (``trigger``), and the
verdict (``judge``). Implement only what differs from :class:`StepCheck`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from simulators.core.verdict import Verdict
from simulators.mss.conformance.observation import StepObservation
from simulators.mss.conformance.observed import JudgeContext, ObservedMessage

_SENDING = {"send-mail", "send-mail-with-cda", "send-to-patient", "reply-to-mail", "return-mdn"}


class StepCheck:
    """Defaults follow the step's client action."""

    def ready(self, obs: StepObservation) -> bool:
        action = obs.step.action
        if action in _SENDING and not obs.submissions():
            return False
        if action in ("read-mail", "send-and-read") and not any(
            s.get("auth_ok") for s in obs.sessions("imap")
        ):
            return False
        if action == "send-and-read" and not obs.submissions():
            return False
        return obs.quiet()

    def trigger(self, obs: StepObservation) -> bool:
        """When the step's runner action fires; by default at the start of the step."""
        return True

    def judge(self, obs: StepObservation) -> Verdict:
        raise NotImplementedError


CheckFactory = Callable[[], StepCheck]
_REGISTRY: dict[tuple[str, str], CheckFactory] = {}
C = TypeVar("C", bound=type[StepCheck])


def register(test_id: str, step_id: str = "main") -> Callable[[C], C]:
    def decorate(cls: C) -> C:
        key = (test_id, step_id)
        if key in _REGISTRY:
            raise ValueError(f"a check is already registered for {test_id} step {step_id}")
        _REGISTRY[key] = cls
        return cls

    return decorate


MessageJudge = Callable[[Sequence[ObservedMessage], JudgeContext], Verdict]


def register_message_judge(test_id: str, step_id: str, judge: MessageJudge) -> None:
    """A check that judges only the mail the step submitted, with a pure function."""

    class _MessageCheck(StepCheck):
        def judge(self, obs: StepObservation) -> Verdict:
            return judge(obs.messages(), obs.ctx)

    _MessageCheck.__name__ = f"MessageCheck_{test_id}_{step_id}"
    register(test_id, step_id)(_MessageCheck)


def check_for(test_id: str, step_id: str) -> StepCheck:
    _load_checks()
    try:
        return _REGISTRY[(test_id, step_id)]()
    except KeyError:
        raise LookupError(f"no check registered for {test_id} step {step_id}") from None


def registered() -> set[tuple[str, str]]:
    _load_checks()
    return set(_REGISTRY)


def _load_checks() -> None:
    # Importing the modules registers their checks.
    from simulators.mss.conformance.checks import wiring  # noqa: F401
