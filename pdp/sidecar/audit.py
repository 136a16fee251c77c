"""Audit events: a hub fans decision, bundle and tuple events out to bounded subscriber queues.

Emitting appends to one bounded queue and returns; one dispatcher thread applies the filters and
fills the subscribers' queues. A full queue drops the event (counted, and a subscriber is told of
its gap): emitting never waits, and costs the same whatever the number of subscribers.
Exceptions: `TooManySubscribers(RuntimeError)`.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pdp.errors import Overloaded
from pdp.model import Decision, Effect, Request
from pdp.sidecar.config import DEFAULT_AUDIT, AuditSettings

DECISION = "decision"
BUNDLE_LOADED = "bundle_loaded"
BUNDLE_REJECTED = "bundle_rejected"
TUPLES_WRITTEN = "tuples_written"
TUPLES_QUARANTINED = "tuples_quarantined"  # stored rows a start could not apply
TOKEN = "token"  # token endpoint and key events: detail `event` (issued, revoked, ...) and `fields`
LOOKUP_RESOURCES = "lookup_resources"  # one per lookup stream: the question, how many ids, notes
LOOKUP_SUBJECTS = "lookup_subjects"
PLAN_RESOURCES = "plan_resources"  # the question and the plan's kind, never its filter
GAP = "gap"
KINDS = frozenset(
    {
        DECISION,
        BUNDLE_LOADED,
        BUNDLE_REJECTED,
        TUPLES_WRITTEN,
        TUPLES_QUARANTINED,
        TOKEN,
        LOOKUP_RESOURCES,
        LOOKUP_SUBJECTS,
        PLAN_RESOURCES,
    }
)

MASK = "***"
# Credentials never reach an event, whatever the configuration says.
NEVER_LOGGED_METADATA = frozenset({"authorization", "cookie", "proxy-authorization"})


class TooManySubscribers(Overloaded):
    """The configured maximum number of audit subscribers is already connected."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    sequence: int
    kind: str
    time: float  # unix seconds
    decision_id: str = ""
    request: Request | None = None
    decision: Decision | None = None
    fail_open: bool = False
    metadata: tuple[tuple[str, str], ...] = ()
    missed: int = 0  # for GAP: events this subscriber lost
    detail: Mapping[str, Any] = field(default_factory=dict)  # bundle/tuple specifics

    @property
    def subject(self) -> str:
        return str(self.request.subject) if self.request else ""

    @property
    def resource(self) -> str:
        return str(self.request.resource) if self.request else ""


@dataclass(frozen=True, slots=True)
class Filter:
    """What a subscriber wants; empty fields match everything. Gap notices always pass."""

    kinds: frozenset[str] = frozenset()
    effect: Effect | None = None
    subject: str = ""
    resource_type: str = ""
    rule_id: str = ""

    def matches(self, ev: AuditEvent) -> bool:
        if self.kinds and ev.kind not in self.kinds:
            return False
        if ev.kind != DECISION:
            # decision-only filters say nothing about bundle or tuple events
            return not (self.effect or self.subject or self.resource_type or self.rule_id)
        req, dec = ev.request, ev.decision
        if req is None or dec is None:
            return False
        if self.effect is not None and dec.effect is not self.effect:
            return False
        if self.subject and str(req.subject) != self.subject:
            return False
        if self.resource_type and req.resource.type != self.resource_type:
            return False
        return not (self.rule_id and self.rule_id not in dec.rule_ids)


_EVERYTHING = Filter()


class Subscription:
    """A bounded queue of events for one consumer. `put` never blocks; overflow is counted."""

    def __init__(self, capacity: int, flt: Filter = Filter()) -> None:
        self.capacity = capacity
        self.filter = flt
        self.dropped = 0  # total over the subscription's life, for metrics
        self._queue: deque[AuditEvent] = deque()
        self._missed = 0  # dropped since the last gap notice
        self._cond = threading.Condition(threading.Lock())
        self._closed = False

    def put(self, ev: AuditEvent) -> None:
        self.put_many((ev,))

    def put_many(self, events: Sequence[AuditEvent]) -> None:
        """Queue the events this subscriber's filter wants; one wake-up for the lot.

        A full queue costs the same whatever the batch's size: a stuck subscriber is skipped
        and counted, never walked event by event (the dispatcher shares the GIL with Check)."""
        if self.filter == _EVERYTHING:
            wanted = events
        else:
            matches = self.filter.matches
            wanted = [ev for ev in events if matches(ev)]
        if not wanted:
            return
        queue = self._queue
        with self._cond:
            room = self.capacity - len(queue)
            if room <= 0:
                self._missed += len(wanted)
                self.dropped += len(wanted)
                return
            if self._missed:
                # INVARIANT: the gap notice sits exactly where the events went missing
                queue.append(_gap(self._missed))
                self._missed = 0
            if len(wanted) > room:
                lost = len(wanted) - room
                self._missed += lost
                self.dropped += lost
                wanted = wanted[:room]
            queue.extend(wanted)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> AuditEvent | None:
        """The next event, a gap notice, or None on timeout or once closed and drained."""
        with self._cond:
            if not self._queue and not self._missed and not self._closed:
                self._cond.wait(timeout)
            if self._queue:
                return self._queue.popleft()
            if self._missed:
                missed, self._missed = self._missed, 0
                return _gap(missed)
            return None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _gap(missed: int) -> AuditEvent:
    return AuditEvent(sequence=0, kind=GAP, time=time.time(), missed=missed)


class RenderCache:
    """One rendering of each event shared by every consumer of that rendering (16 audit streams
    serialise an event once, not 16 times). Bounded: cleared when full."""

    def __init__(self, render: Callable[[AuditEvent], Any], size: int = 4096) -> None:
        self._render = render
        self._size = size
        self._done: dict[int, Any] = {}

    def __call__(self, ev: AuditEvent) -> Any:
        if ev.sequence == 0:  # gap notices are per subscriber
            return self._render(ev)
        done = self._done
        out = done.get(ev.sequence)
        if out is None:
            out = self._render(ev)  # two threads may both render: harmless, same result
            if len(done) >= self._size:
                done.clear()
            done[ev.sequence] = out
        return out


class AuditHub:
    """Numbers events, hands out decision ids, and fans events out. Thread-safe.

    The emitting thread does constant work: build the event (only if someone subscribes) and
    append it to one bounded deque. It wakes nobody: the dispatcher thread polls every
    `dispatch_interval` while there are subscribers (and sleeps on an event when there are none),
    so a burst of decisions costs the dispatcher one pass and each subscriber one wake-up.
    """

    def __init__(self, settings: AuditSettings = DEFAULT_AUDIT) -> None:
        self.settings = settings
        self.metadata_keys = settings.metadata - NEVER_LOGGED_METADATA
        self._seq = itertools.count(1)
        self._prefix = secrets.token_hex(4)  # decision ids stay unique across restarts
        self._subs: tuple[Subscription, ...] = ()  # copy-on-write: emit iterates without a lock
        self._lock = threading.Lock()
        self._dropped_closed = 0  # drops of subscriptions since gone, so the counter never falls
        self._rng = random.Random()
        self._pending: deque[AuditEvent] = deque()  # emitted, not yet dispatched
        self._queue_dropped = 0  # emitted while the pending queue was full (under _drop_lock)
        self._drop_lock = threading.Lock()
        self._wake = threading.Event()  # subscribe, flush and close: no per-event wake-up
        self._dispatching = False
        self._closing = False
        self._dispatcher: threading.Thread | None = None
        self._renderers: dict[str, RenderCache] = {}

    def subscribe(self, flt: Filter = Filter(), capacity: int | None = None) -> Subscription:
        sub = Subscription(capacity or self.settings.subscriber_capacity, flt)
        with self._lock:
            if len(self._subs) >= self.settings.max_subscribers:
                raise TooManySubscribers(
                    f"at most {self.settings.max_subscribers} audit subscribers may connect"
                )
            self._subs = (*self._subs, sub)
            if self._dispatcher is None and not self._closing:
                self._dispatcher = threading.Thread(
                    target=self._dispatch, name="audit-dispatcher", daemon=True
                )
                self._dispatcher.start()
        self._wake.set()  # from waiting for a subscriber to polling for events
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs = tuple(s for s in self._subs if s is not sub)
                self._dropped_closed += sub.dropped
        sub.close()

    @property
    def dropped(self) -> int:
        """Events lost: the pending queue's overflow plus every subscriber's."""
        return self._queue_dropped + self._dropped_closed + sum(s.dropped for s in self._subs)

    def renderer(self, name: str, render: Callable[[AuditEvent], Any]) -> RenderCache:
        """The shared `RenderCache` called `name` (the first caller's `render` makes it)."""
        with self._lock:
            cache = self._renderers.get(name)
            if cache is None:
                cache = self._renderers[name] = RenderCache(render)
            return cache

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def decision(
        self,
        request: Request,
        decision: Decision,
        metadata: Callable[[], Iterable[tuple[str, str | bytes]]] | None = None,
    ) -> str:
        """Record a decision; returns its decision id (also for sampled-out allows)."""
        seq = next(self._seq)
        decision_id = f"{self._prefix}-{seq:x}"
        rate = self.settings.allow_sample_rate
        if decision.allowed and rate < 1.0 and self._rng.random() >= rate:
            return decision_id
        subs = self._subs
        if not subs:
            return decision_id
        # only fetched when someone will read it: most checks are never looked at
        kept = tuple(
            (k, v)
            for k, v in (metadata() if metadata else ())
            if k in self.metadata_keys and isinstance(v, str)
        )
        ev = AuditEvent(
            sequence=seq,
            kind=DECISION,
            time=time.time(),
            decision_id=decision_id,
            request=request,
            decision=decision,
            fail_open=decision.reason.value == "fail_open",
            metadata=kept,
        )
        self._emit(ev)
        return decision_id

    def decisions(
        self,
        requests: Sequence[Request],
        decisions: Sequence[Decision],
        metadata: Callable[[], Iterable[tuple[str, str | bytes]]] | None = None,
    ) -> list[str]:
        """`decision` for a batch, in order: one event per decision (the same sampling), their
        decision ids. One block of sequence numbers, one clock read and one metadata fetch for the
        lot, and one append to the pending queue."""
        seqs = list(itertools.islice(self._seq, len(decisions)))  # in C: one unbroken block
        prefix = self._prefix
        ids = [f"{prefix}-{seq:x}" for seq in seqs]
        subs = self._subs
        if not subs:
            return ids
        kept = tuple(
            (k, v)
            for k, v in (metadata() if metadata else ())
            if k in self.metadata_keys and isinstance(v, str)
        )
        rate = self.settings.allow_sample_rate
        sample = self._rng.random
        now = time.time()
        events = [
            AuditEvent(
                sequence=seq,
                kind=DECISION,
                time=now,
                decision_id=decision_id,
                request=request,
                decision=decision,
                fail_open=decision.reason.value == "fail_open",
                metadata=kept,
            )
            for seq, decision_id, request, decision in zip(
                seqs, ids, requests, decisions, strict=True
            )
            if not (decision.allowed and rate < 1.0 and sample() >= rate)
        ]
        self._emit_many(events)
        return ids

    def event(self, kind: str, detail: Mapping[str, Any]) -> None:
        if not self._subs:
            next(self._seq)  # numbered all the same: sequence numbers count every event
            return
        self._emit(AuditEvent(sequence=next(self._seq), kind=kind, time=time.time(), detail=detail))

    def _emit(self, ev: AuditEvent) -> None:
        # INVARIANT: constant work in the caller's thread, whatever the number of subscribers
        pending = self._pending
        if len(pending) >= self.settings.queue_capacity:
            with self._drop_lock:
                self._queue_dropped += 1
            return
        pending.append(ev)  # deque.append is atomic: no lock on the hot path

    def _emit_many(self, events: list[AuditEvent]) -> None:
        """`_emit` for each, in order, in one append: past the queue's capacity the rest drop."""
        pending = self._pending
        room = self.settings.queue_capacity - len(pending)
        if len(events) > room:
            lost = len(events) - max(room, 0)
            with self._drop_lock:
                self._queue_dropped += lost
            events = events[: max(room, 0)]
        pending.extend(events)  # deque.extend is atomic too

    def _dispatch(self) -> None:
        pending, wake = self._pending, self._wake
        interval = self.settings.dispatch_interval
        while True:
            wake.wait(interval if self._subs else None)
            wake.clear()
            if not self._subs:
                pending.clear()  # left behind by the last subscriber: nobody's to have
            self._dispatching = True
            try:
                while pending:
                    batch = [pending.popleft() for _ in range(min(len(pending), 1024))]
                    for sub in self._subs:
                        sub.put_many(batch)
            finally:
                self._dispatching = False
            if self._closing and not pending:
                return

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event emitted so far sits in its subscribers' queues."""
        if self._dispatcher is None:
            return not self._pending
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._pending or self._dispatching:
            if time.monotonic() >= deadline or not self._dispatcher.is_alive():
                return False
            time.sleep(0.001)
        return True

    def close(self) -> None:
        """Dispatch what is pending, then close every subscription."""
        self._closing = True
        self._wake.set()
        if self._dispatcher is not None:
            self._dispatcher.join(5.0)
        with self._lock:
            subs, self._subs = self._subs, ()
            self._dropped_closed += sum(s.dropped for s in subs)
        for sub in subs:
            sub.close()


def _masked(prefix: str, attrs: Mapping[str, Any], mask: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if k in mask or f"{prefix}.{k}" in mask:
            out[k] = MASK
        elif isinstance(v, frozenset):
            out[k] = sorted(v)
        else:
            out[k] = v
    return out


def to_dict(ev: AuditEvent, mask: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The event as JSON-ready data, sensitive attributes masked."""
    out: dict[str, Any] = {"seq": ev.sequence, "kind": ev.kind, "time": ev.time}
    if ev.kind == GAP:
        out["missed"] = ev.missed
        return out
    req, dec = ev.request, ev.decision
    if req is not None and dec is not None:
        out.update(
            decision_id=ev.decision_id,
            effect=dec.effect.value,
            reason=dec.reason.value,
            fail_open=ev.fail_open,
            rule_ids=list(dec.rule_ids),
            bundle_revision=dec.bundle_revision,
            tuple_revision=dec.tuple_revision,
            cached=dec.cached,
            subject={
                "type": req.subject.type,
                "id": req.subject.id,
                "attrs": _masked("subject", req.subject.attrs, mask),
            },
            action=req.action,
            resource={
                "type": req.resource.type,
                "id": req.resource.id,
                "attrs": _masked("resource", req.resource.attrs, mask),
            },
            context=_masked("context", req.context, mask),
        )
        if dec.not_found:
            out["not_found"] = True
        if dec.errors:
            out["errors"] = list(dec.errors)
        if ev.metadata:
            out["metadata"] = dict(ev.metadata)
    out.update(ev.detail)
    return out


def to_json(ev: AuditEvent, mask: frozenset[str] = frozenset()) -> bytes:
    return orjson.dumps(to_dict(ev, mask))


class FileSink:
    """JSON lines, one event a line, rotated by size (`audit.jsonl` → `.1` → ... `.{backups}`).

    Runs in its own thread off a bounded subscription, so a slow disk loses events (counted) and
    never slows a Check.
    """

    def __init__(
        self,
        hub: AuditHub,
        path: Path,
        *,
        max_bytes: int = 64 << 20,
        backups: int = 5,
        capacity: int = 100_000,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._hub = hub
        self._mask = hub.settings.mask
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._size = self._file.tell()
        self._sub = hub.subscribe(capacity=capacity)
        self._thread = threading.Thread(target=self._run, name="audit-file-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sub = self._sub
        while True:
            ev = sub.get(timeout=0.5)
            if ev is None:
                self._file.flush()
                if sub.closed:
                    return
                continue
            line = to_json(ev, self._mask) + b"\n"
            if self._size + len(line) > self.max_bytes and self._size > 0:
                self._rotate()
            self._file.write(line)
            self._size += len(line)

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._file = self.path.open("ab")
        self._size = 0

    def close(self, timeout: float = 5.0) -> None:
        """Drain what is queued, flush and close (graceful shutdown)."""
        self._hub.flush(timeout)  # what the hub has not dispatched yet is ours too
        self._hub.unsubscribe(self._sub)
        self._thread.join(timeout)
        self._file.flush()
        self._file.close()
