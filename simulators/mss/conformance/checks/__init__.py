"""The judgement code of the MSS unit tests: one pure function per unit test (and step).

Each ``judge_*(messages, ctx) -> Verdict`` looks only at the mails it is given; the
runner registers them by catalogue ID. ``mail_parts`` holds the MIME/XDM helpers.
"""
