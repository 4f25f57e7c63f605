"""The CNDA mock's operations, for both roles. The API and the CLI are thin over this.

Every change to a dossier is ONE write job that re-reads the dossier inside the
writer's transaction, checks the state machine and the guards there, then updates
the row and appends the event. The writer runs jobs one at a time, so two
concurrent transitions cannot both see the old state: the second one is refused.
Slow work (copying and verifying bundles, signing the attestation) happens before
the job, and the job then checks the dossier's ``version`` did not move meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulators import DISCLAIMER
from simulators.cnda import identifiers
from simulators.cnda.attestation import ATTESTATION_TYPE, EXAM_MODES, write_attestation
from simulators.cnda.automation import AgentRules, AutomationReport, run_agent
from simulators.cnda.catalogue import Catalogue, CatalogueError, Service, load_catalogue
from simulators.cnda.coverage import (
    coverage_summary,
    plan_case_ids,
    plan_coverage,
    proof_outcomes,
)
from simulators.cnda.errors import (
    ForbiddenRoleError,
    IllegalTransitionError,
    InvalidInputError,
    NotFoundError,
    ProofRefusedError,
)
from simulators.cnda.repository import (
    CndaRepository,
    Document,
    Dossier,
    Editor,
    Event,
    Proof,
    Software,
    append_event_in,
    count_in,
    document_types_in,
    dossier_in,
    proofs_in,
    verify_chain,
)
from simulators.cnda.states import (
    DOCUMENT_STATES,
    PROOF_STATES,
    STATE_INFO,
    TERMINAL,
    TRANSITIONS,
    Action,
    DocumentType,
    Role,
    State,
    allowed_actions,
)
from simulators.cnda.storage import (
    CndaStorage,
    bundle_sha256,
    discard,
    is_bundle,
    safe_filename,
)
from simulators.core.config import DataDir
from simulators.core.pki import TestPKI
from simulators.core.proof import canonical_json, sha256_bytes, verify_bundle
from simulators.core.store.database import Database

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CndaService:
    def __init__(
        self,
        db: Database,
        data: DataDir,
        *,
        catalogue: Catalogue | None = None,
        pki: TestPKI | None = None,
        clock: Clock = _utc_now,
        use_openssl: bool = True,
    ) -> None:
        self.db = db
        self.data = data
        self.repo = CndaRepository(db)
        self.catalogue = catalogue or load_catalogue()
        self._pki = pki
        self.clock = clock
        self.storage = CndaStorage(data.root / "cnda")
        self.use_openssl = use_openssl

    @property
    def pki(self) -> TestPKI:
        # Loaded on first use: registering an editor should not pay for the PKI.
        if self._pki is None:
            self._pki = TestPKI.load_or_create(self.data.pki_dir, self.data.settings.domain)
        return self._pki

    def _now(self) -> str:
        return _iso(self.clock())

    # ---- registration -------------------------------------------------------------------
    def register_editor(self, name: str, contact_email: str = "") -> Editor:
        name = _required_text(name, "editor name")
        now = self._now()

        def job(conn: sqlite3.Connection) -> str:
            nie = _unique_id(conn, "editor", "SELECT 1 FROM cnda_editors WHERE nie = ?")
            conn.execute(
                "INSERT INTO cnda_editors (nie, name, contact_email, created_at) "
                "VALUES (?, ?, ?, ?)",
                (nie, name, contact_email.strip(), now),
            )
            return nie

        return self.editor(self.db.write_sync(job))

    def editor(self, nie: str) -> Editor:
        editor = self.repo.editor(nie)
        if editor is None:
            raise NotFoundError(f"unknown editor (NIE) {nie!r}")
        return editor

    def create_software(
        self, nie: str, name: str, version: str, *, component_of: str | None = None
    ) -> Software:
        """Register software (it gets a NIL) or, with ``component_of``, a component."""
        name = _required_text(name, "software name")
        version = _required_text(version, "software version")
        self.editor(nie)
        if component_of is not None:
            parent = self.software(component_of)
            if parent.nie != nie:
                raise InvalidInputError(f"{component_of} belongs to another editor")
            if parent.parent_nil is not None:
                raise InvalidInputError(f"{component_of} is itself a component")
        now = self._now()

        def job(conn: sqlite3.Connection) -> str:
            nil = _unique_id(conn, "software", "SELECT 1 FROM cnda_software WHERE nil = ?")
            conn.execute(
                "INSERT INTO cnda_software (nil, nie, name, version, parent_nil, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (nil, nie, name, version, component_of, now),
            )
            return nil

        return self.software(self.db.write_sync(job))

    def software(self, nil: str) -> Software:
        software = self.repo.software(nil)
        if software is None:
            raise NotFoundError(f"unknown software or component (NIL) {nil!r}")
        return software

    # ---- homologation requests ----------------------------------------------------------
    def open_request(
        self,
        nie: str,
        nil: str,
        service_id: str,
        perimeter: dict[str, list[str]],
        *,
        components: list[str] | None = None,
        actor: str = "editor",
    ) -> Dossier:
        self.editor(nie)
        software = self.software(nil)
        if software.nie != nie:
            raise InvalidInputError(f"{nil} does not belong to {nie}")
        if software.parent_nil is not None:
            raise InvalidInputError(f"{nil} is a component; open the request on its software")
        service = self._service(service_id)
        try:
            clean = service.check_perimeter(perimeter)
        except CatalogueError as exc:
            raise InvalidInputError(str(exc)) from exc
        known = {c.nil for c in self.repo.components_of(nil)}
        chosen = sorted(known) if components is None else sorted(set(components))
        strangers = [c for c in chosen if c not in known]
        if strangers:
            raise InvalidInputError(f"not components of {nil}: {strangers}")
        now = self._now()
        opened = {
            "nie": nie,
            "nil": nil,
            "service": service.id,
            "perimeter": clean,
            "components": chosen,
        }

        def job(conn: sqlite3.Connection) -> str:
            request_id = _unique_id(conn, "request", "SELECT 1 FROM cnda_requests WHERE id = ?")
            conn.execute(
                "INSERT INTO cnda_requests (id, nie, nil, service, perimeter, components, psc, "
                "state, head_hash, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    request_id,
                    nie,
                    nil,
                    service.id,
                    json.dumps(clean),
                    json.dumps(chosen),
                    int(service.uses_psc(clean)),
                    State.INITIALISATION.value,
                    "",
                    now,
                    now,
                ),
            )
            append_event_in(
                conn,
                request_id=request_id,
                at=now,
                role=Role.EDITOR,
                actor=actor,
                action="open",
                from_state=None,
                to_state=State.INITIALISATION,
                data=opened,
            )
            return request_id

        return self.dossier(self.db.write_sync(job))

    def dossier(self, request_id: str) -> Dossier:
        dossier = self.repo.dossier(request_id)
        if dossier is None:
            raise NotFoundError(f"unknown homologation request {request_id!r}")
        return dossier

    def _service(self, service_id: str) -> Service:
        try:
            return self.catalogue.service(service_id)
        except CatalogueError as exc:
            raise InvalidInputError(str(exc)) from exc

    # ---- deposits -----------------------------------------------------------------------
    def deposit_document(
        self,
        request_id: str,
        doc_type: str,
        filename: str,
        content: bytes,
        *,
        actor: str = "editor",
    ) -> Document:
        """Contract request, signed conditions, PSC attestations, questionnaire..."""
        try:
            kind = DocumentType(doc_type)
        except ValueError:
            raise InvalidInputError(
                f"unknown document type {doc_type!r}; expected one of "
                f"{[d.value for d in DocumentType]}"
            ) from None
        if not content:
            raise InvalidInputError("the document is empty")
        try:
            name = safe_filename(filename)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        dossier = self.dossier(request_id)
        psc_only = {DocumentType.PSC_MATURITY_ATTESTATION, DocumentType.PSC_HABILITATION_RECEIPT}
        if kind in psc_only and not dossier.psc:
            raise InvalidInputError(f"{kind.value} is only for PSC perimeters")
        digest, stored = self.storage.put_bytes(content)
        now = self._now()

        def job(conn: sqlite3.Connection) -> int:
            current = _locked(conn, request_id)
            state = State(current.state)
            if state not in DOCUMENT_STATES[kind]:
                raise IllegalTransitionError(
                    f"cannot deposit {kind.value} while the dossier is "
                    f"{_label(state)}; allowed in {_labels(DOCUMENT_STATES[kind])}"
                )
            cursor = conn.execute(
                "INSERT INTO cnda_documents (request_id, doc_type, filename, sha256, size, "
                "stored_path, deposited_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (request_id, kind.value, name, digest, len(content), str(stored), now),
            )
            append_event_in(
                conn,
                request_id=request_id,
                at=now,
                role=Role.EDITOR,
                actor=actor,
                action="deposit-document",
                from_state=state,
                to_state=state,
                evidence_sha256=digest,
                data={"docType": kind.value, "filename": name, "size": len(content)},
            )
            return int(cursor.lastrowid or 0)

        document_id = self.db.write_sync(job)
        return next(d for d in self.repo.documents(request_id) if d.id == document_id)

    def deposit_proof(
        self,
        request_id: str,
        path: Path,
        *,
        actor: str = "editor",
        cases: list[str] | None = None,
    ) -> Proof:
        """A proof bundle directory (verified) or any other file (hashed and kept).

        ``cases`` names test-plan cases the editor declares this proof covers (see
        ``coverage.py``); a bundle's own test lists are read whatever is declared.
        """
        path = Path(path)
        dossier = self.dossier(request_id)
        _check_proof_state(State(dossier.state))  # fail fast, checked again in the job
        declared = _check_declared(dossier, cases)
        if path.is_dir():
            if not is_bundle(path):
                raise InvalidInputError(
                    f"{path} is a directory but not a proof bundle "
                    "(no report.json + report.json.p7s); deposit files one by one"
                )
            return self._deposit_bundle(request_id, path, actor, declared)
        if not path.is_file():
            raise NotFoundError(f"no such file or directory: {path}")
        return self._deposit_file(request_id, path.name, path.read_bytes(), actor, declared)

    def deposit_proof_upload(
        self,
        request_id: str,
        filename: str,
        content: bytes,
        *,
        actor: str = "editor",
        cases: list[str] | None = None,
    ) -> Proof:
        """An uploaded proof: a zip holding a bundle is verified, anything else hashed."""
        dossier = self.dossier(request_id)
        _check_proof_state(State(dossier.state))
        declared = _check_declared(dossier, cases)
        if filename.lower().endswith(".zip"):
            try:
                extracted = self.storage.unzip_bundle(content)
            except ValueError as exc:
                raise InvalidInputError(f"{filename}: {exc}") from exc
            if extracted is not None:
                try:
                    return self._deposit_bundle(
                        request_id, extracted, actor, declared, name=filename
                    )
                finally:
                    discard(extracted)
        return self._deposit_file(request_id, filename, content, actor, declared)

    def _deposit_file(
        self, request_id: str, filename: str, content: bytes, actor: str, declared: list[str]
    ) -> Proof:
        try:
            name = safe_filename(filename)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        if not content:
            raise InvalidInputError(f"{name}: the file is empty")
        digest, stored = self.storage.put_bytes(content)
        details = {"note": "uploaded file, hashed; not verified by the simulator"}
        return self._record_proof(
            request_id, "file", name, digest, len(content), None, details, stored, actor, declared
        )

    def _deposit_bundle(
        self,
        request_id: str,
        source: Path,
        actor: str,
        declared: list[str],
        *,
        name: str | None = None,
    ) -> Proof:
        try:
            staged = self.storage.stage_bundle(source)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        try:
            result = verify_bundle(
                staged, ca_file=self.pki.root_cert_path, use_openssl=self.use_openssl
            )
            digest = bundle_sha256(staged)
        except BaseException:
            discard(staged)
            raise
        label = name or source.name
        if not result.ok:
            discard(staged)
            self._record_refused_proof(request_id, label, digest, result.problems, actor)
            raise ProofRefusedError(
                f"proof bundle {label} does not verify and was refused", result.problems
            )
        predicate = result.predicate
        details = {
            "runId": predicate.get("runId"),
            "bundleKind": predicate.get("kind"),
            "generatedAt": predicate.get("generatedAt"),
            "previousProofSha256": predicate.get("previousProofSha256"),
            "passedTests": len(predicate.get("passedTests") or []),
            "warnedTests": len(predicate.get("warnedTests") or []),
            "failedTests": list(predicate.get("failedTests") or []),
            # The test names plan coverage is read from (coverage.py).
            "tests": {
                key: sorted({str(n) for n in predicate.get(f"{key}Tests") or []})
                for key in ("passed", "failed", "warned")
            },
            "signer": result.signer,
            "verification": "signature, chain and every digest verified on deposit",
        }
        size = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file())
        stored = self.storage.keep_bundle(staged, digest)
        return self._record_proof(
            request_id,
            "bundle",
            label,
            digest,
            size,
            str(predicate.get("result")),
            details,
            stored,
            actor,
            declared,
        )

    def _record_proof(
        self,
        request_id: str,
        kind: str,
        name: str,
        digest: str,
        size: int,
        result: str | None,
        details: dict[str, Any],
        stored: Path,
        actor: str,
        declared: list[str],
    ) -> Proof:
        now = self._now()

        def job(conn: sqlite3.Connection) -> int:
            current = _locked(conn, request_id)
            state = State(current.state)
            _check_proof_state(state)
            _check_declared(current, declared)
            # Which plan cases this proof covers, fixed now and kept in the chain.
            outcomes = proof_outcomes(current.test_plan, details.get("tests"), declared)
            recorded = {**details, "cases": outcomes, "declaredCases": declared}
            if count_in(
                conn,
                "SELECT COUNT(*) FROM cnda_proofs WHERE request_id = ? AND round = ? "
                "AND sha256 = ?",
                (request_id, current.round, digest),
            ):
                raise IllegalTransitionError(
                    f"{name} (sha256 {digest}) is already deposited in round {current.round}"
                )
            cursor = conn.execute(
                "INSERT INTO cnda_proofs (request_id, round, kind, name, sha256, size, result, "
                "details, stored_path, deposited_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request_id,
                    current.round,
                    kind,
                    name,
                    digest,
                    size,
                    result,
                    json.dumps(recorded),
                    str(stored),
                    now,
                ),
            )
            append_event_in(
                conn,
                request_id=request_id,
                at=now,
                role=Role.EDITOR,
                actor=actor,
                action="deposit-proof",
                from_state=state,
                to_state=state,
                evidence_sha256=digest,
                data={
                    "kind": kind,
                    "name": name,
                    "result": result,
                    "round": current.round,
                    "cases": outcomes,
                },
            )
            return int(cursor.lastrowid or 0)

        proof_id = self.db.write_sync(job)
        return next(p for p in self.repo.proofs(request_id) if p.id == proof_id)

    def _record_refused_proof(
        self, request_id: str, name: str, digest: str, problems: list[str], actor: str
    ) -> None:
        now = self._now()

        def job(conn: sqlite3.Connection) -> None:
            current = _locked(conn, request_id)
            state = State(current.state)
            _check_proof_state(state)
            append_event_in(
                conn,
                request_id=request_id,
                at=now,
                role=Role.EDITOR,
                actor=actor,
                action="proof-refused",
                from_state=state,
                to_state=state,
                reason="the bundle does not verify: " + "; ".join(problems[:5]),
                evidence_sha256=digest,
                data={"name": name, "problems": problems},
            )

        self.db.write_sync(job)

    # ---- transitions --------------------------------------------------------------------
    def transition(
        self,
        request_id: str,
        action: str,
        *,
        role: str,
        actor: str | None = None,
        reason: str | None = None,
        exam_date: str | None = None,
        exam_mode: str | None = None,
    ) -> Dossier:
        """Apply one action of the state machine, or raise and change nothing."""
        try:
            act = Action(action)
        except ValueError:
            raise InvalidInputError(
                f"unknown action {action!r}; expected one of {[a.value for a in Action]}"
            ) from None
        try:
            who = Role(role)
        except ValueError:
            raise InvalidInputError(f"unknown role {role!r}; expected editor or agent") from None
        spec = TRANSITIONS[act]
        if who not in spec.roles:
            raise ForbiddenRoleError(
                f"{act.value} is done by the {' or '.join(sorted(r.value for r in spec.roles))}, "
                f"not the {who.value}"
            )
        reason = (reason or "").strip() or None
        if spec.needs_reason and not reason:
            raise InvalidInputError(f"{act.value} needs a reason")
        params: dict[str, Any] = {}
        if act in (Action.SCHEDULE_EXAM, Action.FAIL_EXAM):
            if not exam_date:
                what = "a new exam date" if act is Action.FAIL_EXAM else "an exam date"
                raise InvalidInputError(f"{act.value} needs {what}")
            params["exam_date"] = _parse_date(exam_date)
            if exam_mode is not None and exam_mode not in EXAM_MODES:
                raise InvalidInputError(f"exam mode must be one of {sorted(EXAM_MODES)}")
            params["exam_mode"] = exam_mode
        dossier = self.dossier(request_id)
        actor = actor or who.value

        prepared: Path | None = None
        expected_version: int | None = None
        if act is Action.FINALISE:
            _check_source(act, State(dossier.state))
            expected_version = dossier.version
            params["production_number"] = identifiers.new_id("production")
            prepared = self._prepare_attestation(dossier, params["production_number"])
            params["attestation_dir"] = str(prepared)
            params["attestation_sha256"] = sha256_bytes(
                (prepared / "attestation.json").read_bytes()
            )
        now = self.clock()

        def job(conn: sqlite3.Connection) -> None:
            current = _locked(conn, request_id)
            if expected_version is not None and current.version != expected_version:
                raise IllegalTransitionError(
                    f"{request_id} changed while the attestation was prepared; try again"
                )
            self._apply(conn, current, act, who, actor, reason, params, now)

        try:
            self.db.write_sync(job)
        except BaseException:
            if prepared is not None:
                shutil.rmtree(prepared, ignore_errors=True)
            raise
        return self.dossier(request_id)

    def _apply(
        self,
        conn: sqlite3.Connection,
        current: Dossier,
        act: Action,
        who: Role,
        actor: str,
        reason: str | None,
        params: dict[str, Any],
        now: dt.datetime,
    ) -> None:
        state = State(current.state)
        spec = TRANSITIONS[act]
        _check_source(act, state)
        updates: dict[str, Any] = {"state": spec.target.value}
        data: dict[str, Any] = {}
        evidence: str | None = None
        round_proofs = [p for p in proofs_in(conn, current.id) if p.round == current.round]

        if act is Action.SEND_TEST_PLAN:
            missing = _missing_documents(conn, current, initial=True)
            if missing:
                raise IllegalTransitionError(f"cannot send the test plan: missing {missing}")
            service = self._service(current.service)
            cases = service.test_plan_for(current.perimeter)
            plan = {
                "name": service.test_plan,
                "version": service.test_plan_version,
                "service": service.id,
                "cases": [c.as_dict() for c in cases],
            }
            provisional = identifiers.new_id("provisional")
            environment = {
                "url": service.test_environment.format(request=current.id),
                "login": f"{current.id}-editor",
                "note": "simulated environment access; nothing listens there by default",
            }
            returned = (now.date() + dt.timedelta(days=service.pre_examen_days)).isoformat()
            updates.update(
                test_plan=json.dumps(plan),
                test_environment=json.dumps(environment),
                provisional_number=provisional,
                expected_return_date=returned,
            )
            data = {
                "provisionalNumber": provisional,
                "testPlan": f"{plan['name']} {plan['version']}",
                "cases": [c.id for c in cases],
                "expectedReturnDate": returned,
            }
            evidence = sha256_bytes(canonical_json(plan))
        elif act is Action.REFUSE:
            updates["round"] = current.round + 1
            coverage = plan_coverage(current.test_plan, current.round, round_proofs)
            data = {
                "round": current.round,
                "refusedProofs": [p.sha256 for p in round_proofs],
                "coverage": coverage_summary(coverage),
            }
        elif act in (Action.VALIDATE, Action.RESUBMIT):
            if not round_proofs:
                what = "validate" if act is Action.VALIDATE else "resubmit"
                raise IllegalTransitionError(
                    f"cannot {what}: no proof deposited in round {current.round}"
                )
            hashes = sorted(p.sha256 for p in round_proofs)
            coverage = plan_coverage(current.test_plan, current.round, round_proofs)
            # A human agent may validate a plan that is not fully covered (files are
            # theirs to judge): the event records what it validated with.
            data = {
                "round": current.round,
                "proofs": hashes,
                "coverage": coverage_summary(coverage),
            }
            evidence = sha256_bytes(canonical_json(hashes))
        elif act is Action.SCHEDULE_EXAM:
            updates.update(exam_date=params["exam_date"], exam_mode=params["exam_mode"] or "remote")
            data = {"examDate": updates["exam_date"], "examMode": updates["exam_mode"]}
        elif act is Action.FAIL_EXAM:
            if params["exam_date"] == current.exam_date:
                raise InvalidInputError("a failed exam needs a NEW date")
            updates.update(
                exam_date=params["exam_date"],
                exam_mode=params["exam_mode"] or current.exam_mode,
                exam_attempts=current.exam_attempts + 1,
            )
            data = {
                "failedExamDate": current.exam_date,
                "newExamDate": updates["exam_date"],
                "examMode": updates["exam_mode"],
            }
        elif act is Action.PASS_EXAM:
            updates["exam_attempts"] = current.exam_attempts + 1
            data = {"examDate": current.exam_date, "examMode": current.exam_mode}
        elif act is Action.FINALISE:
            updates.update(
                production_number=params["production_number"],
                attestation_dir=params["attestation_dir"],
                attestation_sha256=params["attestation_sha256"],
            )
            data = {"productionNumber": params["production_number"]}
            evidence = params["attestation_sha256"]
        elif act is Action.COMPLETE:
            missing = _missing_documents(conn, current, initial=False)
            if missing:
                raise IllegalTransitionError(f"cannot complete the dossier: missing {missing}")

        assignments = ", ".join(f"{column} = ?" for column in updates)
        changed = conn.execute(
            f"UPDATE cnda_requests SET {assignments} WHERE id = ? AND version = ?",
            (*updates.values(), current.id, current.version),
        )
        if changed.rowcount != 1:  # cannot happen inside the writer; kept as a guard
            raise IllegalTransitionError(f"{current.id} changed concurrently; nothing done")
        append_event_in(
            conn,
            request_id=current.id,
            at=_iso(now),
            role=who,
            actor=actor,
            action=act.value,
            from_state=state,
            to_state=spec.target,
            reason=reason,
            evidence_sha256=evidence,
            data=data,
        )

    def _prepare_attestation(self, dossier: Dossier, production_number: str) -> Path:
        service = self._service(dossier.service)
        editor = self.editor(dossier.nie)
        software = self.software(dossier.nil)
        issued = self.clock()
        valid_until = issued.date() + dt.timedelta(days=service.attestation_validity_days)
        # Relied on: the proofs of the round the agent validated (earlier rounds were
        # refused). Validation is the only way out of pre_examen and keeps the round.
        proofs = [p for p in self.repo.proofs(dossier.id) if p.round == dossier.round]
        plan = dossier.test_plan or {}
        coverage = plan_coverage(dossier.test_plan, dossier.round, proofs)
        document = {
            "type": ATTESTATION_TYPE,
            "title": "Attestation de conformité (SIMULATION)",
            "simulation": True,
            "disclaimer": DISCLAIMER,
            "issuer": "CNDA mock of segur-sim (a simulator, not the CNDA)",
            "dossier": dossier.id,
            "editor": {"nie": editor.nie, "name": editor.name},
            "software": {"nil": software.nil, "name": software.name, "version": software.version},
            "components": [
                {"nil": c.nil, "name": c.name, "version": c.version}
                for c in (self.software(nil) for nil in dossier.components)
            ],
            "service": {"id": service.id, "name": service.name},
            "perimeter": dossier.perimeter,
            "referentiel": {"name": service.referentiel, "version": service.referentiel_version},
            "testPlan": {
                "name": plan.get("name"),
                "version": plan.get("version"),
                "cases": [c["id"] for c in plan.get("cases", [])],
            },
            "exam": {
                "date": dossier.exam_date,
                "mode": dossier.exam_mode,
                "attempts": dossier.exam_attempts,
            },
            "provisionalNumber": dossier.provisional_number,
            "productionNumber": production_number,
            "issuedAt": _iso(issued),
            "validUntil": valid_until.isoformat(),
            "proofs": [
                {
                    "name": p.name,
                    "kind": p.kind,
                    "round": p.round,
                    "result": p.result,
                    "sha256": p.sha256,
                    "runId": p.details.get("runId"),
                }
                for p in proofs
            ],
            "coverage": {
                "round": dossier.round,
                "complete": coverage["complete"],
                "cases": [
                    {
                        "id": c["id"],
                        "status": c["status"],
                        "proofs": sorted({p["sha256"] for p in c["proofs"]}),
                    }
                    for c in coverage["cases"]
                ],
            },
            "eventChainHead": dossier.head_hash,
        }
        out = self.storage.attestations / dossier.id / production_number
        return write_attestation(out, document, self.pki)

    # ---- reading ------------------------------------------------------------------------
    def events(self, request_id: str) -> list[Event]:
        self.dossier(request_id)
        return self.repo.events(request_id)

    def verify_events(self, request_id: str) -> list[str]:
        return verify_chain(self.dossier(request_id), self.repo.events(request_id))

    def attestation_dir(self, request_id: str) -> Path:
        dossier = self.dossier(request_id)
        if not dossier.attestation_dir:
            raise NotFoundError(f"{request_id} has no attestation yet ({_label(dossier.state)})")
        return Path(dossier.attestation_dir)

    def coverage(self, request_id: str) -> dict[str, Any]:
        """Which test-plan cases the current round's proofs cover (``coverage.py``)."""
        dossier = self.dossier(request_id)
        return plan_coverage(dossier.test_plan, dossier.round, self.repo.proofs(request_id))

    def status(self, request_id: str) -> dict[str, Any]:
        """Everything the status page and ``cnda status`` show, as plain data."""
        dossier = self.dossier(request_id)
        state = State(dossier.state)
        editor = self.editor(dossier.nie)
        software = self.software(dossier.nil)
        info = STATE_INFO[state]
        documents = self.repo.documents(request_id)
        proofs = self.repo.proofs(request_id)
        events = self.repo.events(request_id)
        coverage = plan_coverage(dossier.test_plan, dossier.round, proofs)
        return {
            "id": dossier.id,
            "simulation": True,
            "disclaimer": DISCLAIMER,
            "editor": {"nie": editor.nie, "name": editor.name},
            "software": {"nil": software.nil, "name": software.name, "version": software.version},
            "components": [
                {"nil": c.nil, "name": c.name, "version": c.version}
                for c in (self.software(nil) for nil in dossier.components)
            ],
            "service": dossier.service,
            "perimeter": dossier.perimeter,
            "psc": dossier.psc,
            "state": state.value,
            "phase": info.phase,
            "portalStatus": info.portal_status,
            "expectedReturnDate": dossier.expected_return_date,
            "provisionalNumber": dossier.provisional_number,
            "productionNumber": dossier.production_number,
            "round": dossier.round,
            "testPlan": dossier.test_plan,
            "testEnvironment": dossier.test_environment,
            "exam": {
                "date": dossier.exam_date,
                "mode": dossier.exam_mode,
                "attempts": dossier.exam_attempts,
            },
            "documents": [
                {"type": d.doc_type, "filename": d.filename, "sha256": d.sha256} for d in documents
            ],
            "proofs": [
                {
                    "id": p.id,
                    "round": p.round,
                    "kind": p.kind,
                    "name": p.name,
                    "sha256": p.sha256,
                    "result": p.result,
                    "cases": p.details.get("cases", {}),
                    "declaredCases": p.details.get("declaredCases", []),
                }
                for p in proofs
            ],
            "coverage": coverage,
            "attestationSha256": dossier.attestation_sha256,
            "allowedActions": [a.value for a in allowed_actions(state)],
            "nextSteps": self.next_steps(dossier),
            "events": len(events),
            "eventChainOk": not verify_chain(dossier, events),
            "createdAt": dossier.created_at,
            "updatedAt": dossier.updated_at,
        }

    def next_steps(self, dossier: Dossier) -> list[str]:
        """What the person at the keyboard (or the automated agent) should do next."""
        state = State(dossier.state)
        if state in TERMINAL:
            return []
        docs = {d.doc_type for d in self.repo.documents(dossier.id)}
        round_proofs = [p for p in self.repo.proofs(dossier.id) if p.round == dossier.round]
        steps: list[str] = []
        if state is State.INITIALISATION:
            steps += [
                f"editor: deposit {d}" for d in required_initial_documents(dossier) if d not in docs
            ]
            if not steps:
                steps.append("agent: send-test-plan")
        elif state in PROOF_STATES:
            coverage = plan_coverage(dossier.test_plan, dossier.round, round_proofs)
            if not round_proofs:
                steps.append(f"editor: deposit test proofs (round {dossier.round})")
            elif coverage["notPassed"]:
                steps.append(
                    f"editor: deposit passing proofs for the plan cases not covered yet "
                    f"(round {dossier.round}): {', '.join(coverage['notPassed'])}"
                )
            if round_proofs and state is State.CORRECTION:
                steps.append("editor: resubmit")
            elif round_proofs:
                steps.append("agent: validate or refuse the proofs")
        elif state is State.EXAMEN_A_PLANIFIER:
            steps.append("agent: schedule-exam")
        elif state is State.EXAMEN_PLANIFIE:
            steps.append(f"agent: pass-exam or fail-exam (exam on {dossier.exam_date})")
        elif state is State.FINALISATION:
            steps.append("agent: finalise (attestation and production number)")
        elif state is State.ATTESTATION_EMISE:
            steps += [
                f"editor: deposit {d}" for d in required_final_documents(dossier) if d not in docs
            ]
            if not steps:
                steps.append("editor: complete")
        return steps

    # ---- the automated agent ------------------------------------------------------------
    def run_agent(self, request_id: str, rules: AgentRules | None = None) -> AutomationReport:
        """Let the rules act as the CNDA agent until the dossier waits on someone."""
        return run_agent(self, request_id, rules or AgentRules())


# ---- helpers ----------------------------------------------------------------------------
def _required_text(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidInputError(f"{what} is required")
    if len(value) > 200:
        raise InvalidInputError(f"{what} is longer than 200 characters")
    return value


def _unique_id(conn: sqlite3.Connection, kind: str, exists_sql: str) -> str:
    for _ in range(20):
        candidate = identifiers.new_id(kind)
        if conn.execute(exists_sql, (candidate,)).fetchone() is None:
            return candidate
    raise RuntimeError(f"could not find a free {kind} identifier")


def _locked(conn: sqlite3.Connection, request_id: str) -> Dossier:
    """The dossier as the writer's transaction sees it (the only view that counts)."""
    dossier = dossier_in(conn, request_id)
    if dossier is None:
        raise NotFoundError(f"unknown homologation request {request_id!r}")
    return dossier


def _label(state: State | str) -> str:
    state = State(state)
    return f"{state.value} ({STATE_INFO[state].portal_status})"


def _labels(states: frozenset[State]) -> str:
    return ", ".join(sorted(s.value for s in states))


def _check_source(act: Action, state: State) -> None:
    spec = TRANSITIONS[act]
    if state not in spec.sources:
        closed = " (the dossier is closed)" if state in TERMINAL else ""
        raise IllegalTransitionError(
            f"cannot {act.value} while the dossier is {_label(state)}{closed}; "
            f"{act.value} is allowed from {_labels(spec.sources)}"
        )


def _check_declared(dossier: Dossier, cases: list[str] | None) -> list[str]:
    """The declared case IDs, deduplicated, each in the dossier's test plan."""
    declared = sorted({c.strip() for c in cases or [] if c.strip()})
    known = plan_case_ids(dossier.test_plan)
    unknown = [c for c in declared if c not in known]
    if unknown:
        raise InvalidInputError(
            f"not cases of {dossier.id}'s test plan: {unknown}; the plan has {known}"
        )
    return declared


def _check_proof_state(state: State) -> None:
    if state not in PROOF_STATES:
        closed = " (the dossier is closed)" if state in TERMINAL else ""
        raise IllegalTransitionError(
            f"cannot deposit proofs while the dossier is {_label(state)}{closed}; "
            f"proofs are deposited in {_labels(PROOF_STATES)}"
        )


def required_initial_documents(dossier: Dossier) -> list[str]:
    docs = [DocumentType.CONTRACT_REQUEST.value, DocumentType.SIGNED_CONDITIONS.value]
    if dossier.psc:
        docs.append(DocumentType.PSC_MATURITY_ATTESTATION.value)
    return docs


def required_final_documents(dossier: Dossier) -> list[str]:
    docs = [DocumentType.SATISFACTION_QUESTIONNAIRE.value]
    if dossier.psc:
        docs.insert(0, DocumentType.PSC_HABILITATION_RECEIPT.value)
    return docs


def _missing_documents(conn: sqlite3.Connection, dossier: Dossier, *, initial: bool) -> list[str]:
    present = document_types_in(conn, dossier.id)
    wanted = required_initial_documents(dossier) if initial else required_final_documents(dossier)
    return [d for d in wanted if d not in present]


def _parse_date(value: str) -> str:
    try:
        return dt.date.fromisoformat(value.strip()[:10]).isoformat()
    except ValueError:
        raise InvalidInputError(f"{value!r} is not a date (expected YYYY-MM-DD)") from None
