"""Registers every check under its catalogue ID: the wire checks (``protocol``) by
decorator, the mail checks (pure functions over the submitted mail) here."""

from __future__ import annotations

from simulators.core.verdict import Verdict
from simulators.mss.conformance.checks import extras, headers, protocol, xdm_package
from simulators.mss.conformance.checks.app_mail import judge_app_reply_to
from simulators.mss.conformance.observation import StepObservation
from simulators.mss.conformance.registry import StepCheck, register, register_message_judge

__all__ = ["protocol"]

register_message_judge("MSS-08", "main", headers.judge_nil)
register_message_judge("MSS-09", "with-cda", headers.judge_codecda_with_cda)
register_message_judge("MSS-09", "without-cda", headers.judge_codecda_without_cda)
register_message_judge("MSS-10", "with-cda", headers.judge_ins_with_cda)
register_message_judge("MSS-10", "without-cda", headers.judge_ins_without_cda)
register_message_judge("MSS-11", "main", headers.judge_message_format)
register_message_judge("MSS-12", "main", xdm_package.judge_xdm_package)
register_message_judge("MSS-X1", "main", extras.judge_delivery_notice)
register_message_judge("MSS-X2", "request", extras.judge_read_notice_request)
register_message_judge("MSS-X4", "main", extras.judge_patient_addressing)


@register("MSS-A4")
class AppReplyTo(StepCheck):
    def judge(self, obs: StepObservation) -> Verdict:
        store = obs.services.store

        def mailbox_type(address: str) -> str | None:
            box = store.get_mailbox(address)
            return box.type.value if box else None

        return judge_app_reply_to(obs.messages(), obs.ctx, mailbox_type=mailbox_type)


class _AnswersDeliveredMail(StepCheck):
    """Steps where the simulator delivered a mail first and the software answers it."""

    def _original(self, obs: StepObservation) -> str | None:
        value = obs.marks.get("delivered_message_id")
        return str(value) if value else None


@register("MSS-X2", "mdn")
class ReturnsMdn(_AnswersDeliveredMail):
    def judge(self, obs: StepObservation) -> Verdict:
        original = self._original(obs)
        if original is None:
            return Verdict.error("the simulator could not deliver the mail asking for a notice")
        return extras.judge_mdn(obs.messages(), obs.ctx, original_message_id=original)


@register("MSS-X3")
class RepliesInThread(_AnswersDeliveredMail):
    def judge(self, obs: StepObservation) -> Verdict:
        original = self._original(obs)
        if original is None:
            return Verdict.error("the simulator could not deliver the mail to reply to")
        return extras.judge_reply(obs.messages(), obs.ctx, original_message_id=original)
