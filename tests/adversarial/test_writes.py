"""The write path: a refused write is never stored, a restart never changes an answer, a schema
change never orphans a stored tuple, and a stored row that cannot be applied is quarantined and
reported instead of crashing the start or vanishing."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import grpc
import httpx

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.model import RelationTuple
from pdp.sidecar.grpc.wire import tuple_of

from .saas import document, user, with_reviewer
from .serve import Served, ServeFactory, code_of, operator_token, wait_for

INVALID = grpc.StatusCode.INVALID_ARGUMENT
REVIEWER = "document:d{doc}#reviewer@user:bob{i}"


def _reviewers(served: Served, token: str) -> set[str]:
    out: set[str] = set()
    page = ""
    while True:
        resp = served.admin(token).ReadTuples(
            pdp_pb2.ReadTuplesRequest(relation="reviewer", page_size=1000, page_token=page)
        )
        out.update(str(tuple_of(t)) for t in resp.tuples)
        page = resp.next_page_token
        if not page:
            return out


def _answers(served: Served, tuples: set[str]) -> dict[str, int]:
    """Check(bob_i read d_doc) for every tuple named: what a restart must not change."""
    out = {}
    for text in sorted(tuples):
        t = RelationTuple.parse(text)
        resp = served.check(user(t.subject_id), "read", document(t.object_id))
        out[text] = resp.decision
    return out


def test_refused_writes_are_never_stored_while_reloads_flip_the_schema(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    with_reviewer(saas_bundle, present=True)
    served = pdp_serve.start(saas_bundle)
    token = operator_token(pdp_serve, served)
    acked: set[str] = set()
    refused: set[str] = set()
    stop = threading.Event()
    errors: list[str] = []

    def write_and_delete() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            text = REVIEWER.format(doc=i % 7, i=i)
            code = code_of(lambda: served.write(token, writes=[text]))  # noqa: B023
            if code == grpc.StatusCode.OK:
                # deleted at once: a stored reviewer tuple would make every flip a refusal
                if code_of(lambda: served.write(token, deletes=[text])) != grpc.StatusCode.OK:  # noqa: B023
                    errors.append(f"delete of {text} failed")
                acked.add(text)
            elif code == INVALID:
                refused.add(text)
            else:
                errors.append(f"{text}: {code}")

    def flip() -> None:
        present = True
        while not stop.is_set():
            present = not present
            with_reviewer(saas_bundle, present)
            stop.wait(0.3)

    threads = [threading.Thread(target=write_and_delete), threading.Thread(target=flip)]
    for t in threads:
        t.start()
    time.sleep(6.0)  # the attack's duration, not a wait for a condition
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    assert acked and refused, "writes were all acknowledged or all refused: no race was run"
    # none of the writes survives (each acknowledged one was deleted, no refused one stored)
    assert not _reviewers(served, token)
    with_reviewer(saas_bundle, present=True)
    kept = {REVIEWER.format(doc=i, i=10_000 + i) for i in range(5)}
    wait_for(
        lambda: code_of(lambda: served.write(token, writes=sorted(kept))) == grpc.StatusCode.OK
    )
    assert _reviewers(served, token) == kept
    named = kept | set(list(refused)[:50]) | set(list(acked)[:50])
    before = _answers(served, named)
    status = served.status(token)

    served.kill()  # no drain, no flush
    again = pdp_serve.start(saas_bundle)
    token = operator_token(pdp_serve, again)
    assert _reviewers(again, token) == kept
    assert _answers(again, named) == before
    after = again.status(token)
    assert after.tuple_revision >= status.tuple_revision  # a revision never goes back
    assert after.quarantined_tuples == 0
    again.stop()


def test_a_schema_change_that_orphans_stored_tuples_is_refused(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    with_reviewer(saas_bundle, present=True)
    served = pdp_serve.start(saas_bundle)
    token = operator_token(pdp_serve, served)
    served.write(token, writes=["document:d1#reviewer@user:bob", "document:d2#reviewer@user:bob"])
    revision = served.status(token).revision
    with_reviewer(saas_bundle, present=False)

    def refused() -> pdp_pb2.RejectedBundle | None:
        st = served.status(token)
        return st.last_rejected if st.HasField("last_rejected") else None

    rejected = wait_for(refused, timeout=20)
    text = "\n".join(rejected.errors)
    assert "orphan 2 stored tuple(s) of `document#reviewer`" in text
    assert served.status(token).revision == revision  # the running bundle stays
    assert served.check(user("bob"), "read", document("d1")).decision == pdp_pb2.EFFECT_ALLOW
    # once the tuples are deleted, the same schema loads
    served.write(token, deletes=["document:d1#reviewer@user:bob", "document:d2#reviewer@user:bob"])
    with_reviewer(saas_bundle, present=True)
    with_reviewer(saas_bundle, present=False)
    wait_for(lambda: served.status(token).revision != revision, timeout=20)
    assert served.check(user("bob"), "read", document("d1")).decision == pdp_pb2.EFFECT_DENY
    served.stop()


def test_a_tuple_both_written_and_deleted_in_one_call_is_refused(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle)
    token = operator_token(pdp_serve, served)
    both = "document:d1#viewer@user:bob"
    assert code_of(lambda: served.write(token, writes=[both], deletes=[both])) == INVALID
    assert served.check(user("bob"), "read", document("d1")).decision == pdp_pb2.EFFECT_DENY
    served.kill()
    again = pdp_serve.start(saas_bundle)
    assert again.check(user("bob"), "read", document("d1")).decision == pdp_pb2.EFFECT_DENY
    again.stop()


def _stop_then_orphan(served: Served, bundle: Path) -> None:
    """Stop the server; while it is down the schema loses `reviewer`, and a row that is no tuple
    in today's identifier grammar appears in the log (as an older version could write)."""
    assert served.stop() == 0
    with_reviewer(bundle, present=False)
    with sqlite3.connect(served.data_dir / "tuples.db") as db:
        db.execute(
            "INSERT INTO overlay (tuple, present, revision) VALUES (?, 1, 99)",
            ("group:eng#member@user:eve#member x",),
        )


def test_a_start_refuses_a_schema_that_orphans_stored_tuples(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    with_reviewer(saas_bundle, present=True)
    served = pdp_serve.start(saas_bundle)
    token = operator_token(pdp_serve, served)
    served.write(token, writes=["document:d1#reviewer@user:bob", "document:d1#viewer@user:carol"])
    _stop_then_orphan(served, saas_bundle)

    again = pdp_serve.start(saas_bundle)  # starts: fail closed, and keeps watching
    token = operator_token(pdp_serve, again)
    st = again.status(token)
    assert not st.serving
    assert "orphan 1 stored tuple(s) of `document#reviewer`" in "\n".join(st.last_rejected.errors)
    denied = again.check(user("carol"), "read", document("d1"))
    assert (denied.decision, denied.reason) == (pdp_pb2.EFFECT_DENY, pdp_pb2.REASON_NO_BUNDLE)
    # the schema that accepts them comes back: it loads, with every acknowledged write
    with_reviewer(saas_bundle, present=True)
    wait_for(lambda: again.status(token).serving, timeout=20)
    assert again.check(user("bob"), "read", document("d1")).decision == pdp_pb2.EFFECT_ALLOW
    assert again.check(user("carol"), "read", document("d1")).decision == pdp_pb2.EFFECT_ALLOW
    assert again.status(token).quarantined_tuples == 1  # only the row that is no tuple
    again.stop()


def test_quarantine_orphans_sets_stored_rows_aside_and_reports_them(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path
) -> None:
    with_reviewer(saas_bundle, present=True)
    audit_file = tmp_path / "audit.jsonl"
    args = ["--audit-file", str(audit_file), "--quarantine-orphans"]
    served = pdp_serve.start(saas_bundle, args=args)
    token = operator_token(pdp_serve, served)
    served.write(token, writes=["document:d1#reviewer@user:bob", "document:d1#viewer@user:carol"])
    _stop_then_orphan(served, saas_bundle)

    again = pdp_serve.start(saas_bundle, args=args)
    token = operator_token(pdp_serve, again)
    st = again.status(token)
    assert st.serving
    assert st.quarantined_tuples == 2
    quarantined = {q.tuple for q in st.quarantined_examples}
    assert quarantined == {"document:d1#reviewer@user:bob", "group:eng#member@user:eve#member x"}
    metrics = httpx.get(f"http://{again.http}/metrics", timeout=5).text
    assert "pdp_tuples_quarantined 2" in metrics
    # the rest of the log is applied
    assert again.check(user("carol"), "read", document("d1")).decision == pdp_pb2.EFFECT_ALLOW
    assert again.stop() == 0
    assert '"kind":"tuples_quarantined"' in audit_file.read_text()

    # a quarantined row is never applied again, even once a schema accepts it
    with_reviewer(saas_bundle, present=True)
    third = pdp_serve.start(saas_bundle)
    assert third.check(user("bob"), "read", document("d1")).decision == pdp_pb2.EFFECT_DENY
    assert third.status(operator_token(pdp_serve, third)).quarantined_tuples == 2
    third.stop()
