"""Protobuf messages to `pdp.model` values and back: every check on a field's shape and size, with
INVALID_ARGUMENT naming the field, happens here. Also PlanResources' filter tree (pdp.engine.plan)
to its message and back, for the servicer and the client alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.engine.plan import (
    ALWAYS_ALLOWED,
    ALWAYS_DENIED,
    COMPARE_OPS,
    CONDITIONAL,
    FALSE,
    TRUE,
    And,
    Compare,
    Const,
    Filter,
    Not,
    Or,
    PlanKind,
    Present,
    Scalar,
)
from pdp.errors import InvalidRequest
from pdp.identifiers import id_problem, name_problem
from pdp.model import EMPTY, Decision, Effect, Entity, Reason, RelationTuple, Value
from pdp.sidecar import audit
from pdp.sidecar.config import Limits
from pdp.sidecar.grpc.status import RequestInvalid

# ---- protobuf -> model ---------------------------------------------------------------------

_MAX_EXACT_INT = 2**53  # beyond this a JSON/Struct number is no longer an exact integer


def attrs(struct: struct_pb2.Struct, path: str, limits: Limits) -> Mapping[str, Value]:
    fields = struct.fields
    if not fields:
        return EMPTY
    if len(fields) > limits.max_attributes:
        raise RequestInvalid(
            path, f"{len(fields)} attributes exceed the limit of {limits.max_attributes}"
        )
    out: dict[str, Value] = {}
    for key, v in fields.items():
        out[key] = _value(v, f"{path}.{key}", limits)
    return MappingProxyType(out)


def _value(v: struct_pb2.Value, path: str, limits: Limits) -> Value:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        if len(v.string_value) > limits.max_string:
            raise RequestInvalid(path, f"longer than {limits.max_string} characters")
        text: str = v.string_value
        return text
    if kind == "bool_value":
        flag: bool = v.bool_value
        return flag
    if kind == "number_value":
        return _int(v.number_value, path)
    if kind == "list_value":
        return _list(v.list_value, path, limits)
    if kind == "struct_value":
        raise RequestInvalid(path, "nested maps are not allowed; attributes are flat")
    raise RequestInvalid(path, "null is not an attribute value")


def _int(n: float, path: str) -> int:
    if not n.is_integer():
        raise RequestInvalid(path, f"{n} is a float; only whole numbers are allowed")
    if abs(n) > _MAX_EXACT_INT:
        raise RequestInvalid(path, "integer out of range (|n| <= 2**53)")
    return int(n)


def _list(lv: struct_pb2.ListValue, path: str, limits: Limits) -> Value:
    items = lv.values
    if len(items) > limits.max_list_items:
        raise RequestInvalid(
            path, f"{len(items)} items exceed the limit of {limits.max_list_items}"
        )
    kinds = {item.WhichOneof("kind") for item in items}
    if not kinds:
        return frozenset()
    if kinds == {"string_value"}:
        for i, item in enumerate(items):
            if len(item.string_value) > limits.max_string:
                raise RequestInvalid(f"{path}[{i}]", f"longer than {limits.max_string} characters")
        return frozenset(item.string_value for item in items)
    if kinds == {"number_value"}:
        return frozenset(_int(item.number_value, f"{path}[{i}]") for i, item in enumerate(items))
    if len(kinds) > 1:
        raise RequestInvalid(path, "mixed list; a list holds only strings or only integers")
    raise RequestInvalid(path, "a list holds only strings or only integers")


def name(value: str, path: str, limits: Limits) -> str:
    """A type, relation or action name (pdp.identifiers)."""
    if len(value) > limits.max_string:
        raise RequestInvalid(path, f"longer than {limits.max_string} characters")
    problem = name_problem(value)
    if problem is not None:
        raise RequestInvalid(path, problem)
    return value


def _id(value: str, path: str, *, wildcard: bool = False) -> str:
    """An object id (pdp.identifiers); `*` only where a subject wildcard is meant."""
    problem = id_problem(value, wildcard=wildcard)
    if problem is not None:
        raise RequestInvalid(path, problem)
    return value


def entity(msg: pdp_pb2.Entity, path: str, limits: Limits) -> Entity:
    return Entity(
        name(msg.type, f"{path}.type", limits),
        _id(msg.id, f"{path}.id"),
        attrs(msg.attributes, f"{path}.attributes", limits),
    )


def relation_tuple(msg: pdp_pb2.RelationTuple, path: str, limits: Limits) -> RelationTuple:
    subject_relation = msg.subject_relation
    if subject_relation:
        name(subject_relation, f"{path}.subject_relation", limits)
    return RelationTuple(
        name(msg.object_type, f"{path}.object_type", limits),
        _id(msg.object_id, f"{path}.object_id"),
        name(msg.relation, f"{path}.relation", limits),
        name(msg.subject_type, f"{path}.subject_type", limits),
        # `user:*` is every user; `group:*#member` means nothing and is refused
        _id(msg.subject_id, f"{path}.subject_id", wildcard=not subject_relation),
        subject_relation,
    )


# ---- model -> protobuf ---------------------------------------------------------------------

_EFFECT = {Effect.ALLOW: pdp_pb2.EFFECT_ALLOW, Effect.DENY: pdp_pb2.EFFECT_DENY}
EFFECT_BACK = {v: k for k, v in _EFFECT.items()}
_REASON = {r: pdp_pb2.Reason.Value(f"REASON_{r.name}") for r in Reason}


class ResponseTemplates:
    """Decision -> its CheckResponse without the decision id, built once per decision object.

    The engine hands out the same immutable Decision for the same outcome, so copying a finished
    message (one C call) replaces a Python-level assignment per field on most calls."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._by_id: dict[int, tuple[Decision, pdp_pb2.CheckResponse]] = {}

    def _template(self, dec: Decision) -> pdp_pb2.CheckResponse:
        item = self._by_id.get(id(dec))
        if item is None or item[0] is not dec:  # the id of a collected decision can be reused
            template = pdp_pb2.CheckResponse()
            fill(template, dec, "")
            if len(self._by_id) >= self._limit:
                self._by_id = {}
            item = self._by_id[id(dec)] = (dec, template)
        return item[1]

    def fill(self, resp: pdp_pb2.CheckResponse, dec: Decision, decision_id: str) -> None:
        resp.CopyFrom(self._template(dec))
        resp.decision_id = decision_id

    def fill_batch(
        self,
        results: Any,
        correlation_ids: Sequence[str],
        decisions: Sequence[Decision],
        decision_ids: Sequence[str],
        failed: Mapping[int, tuple[int, str]],
    ) -> None:
        """A BatchCheckResponse's `results`, in one pass: item i echoes `correlation_ids[i]` and
        holds its error from `failed`, or else the next of `decisions` (and of `decision_ids`).

        Setting fields on the result `add()` returned is the cheapest way measured to build one
        (against building the bytes in Python and parsing them, or passing messages to the
        constructor): the result messages are made once, the decision copied in by one C call."""
        add = results.add
        by_id = self._by_id
        template = self._template
        if not failed:  # the usual batch: no index to test
            for cid, dec, decision_id in zip(correlation_ids, decisions, decision_ids, strict=True):
                result = add()
                if cid:
                    result.correlation_id = cid
                item = by_id.get(id(dec))
                resp = result.response
                resp.CopyFrom(item[1] if item is not None and item[0] is dec else template(dec))
                resp.decision_id = decision_id
            return
        answers = iter(zip(decisions, decision_ids, strict=True))
        for i, cid in enumerate(correlation_ids):
            result = add()
            if cid:
                result.correlation_id = cid
            if i in failed:
                code, message = failed[i]
                result.error.code = code
                result.error.message = message
                continue
            dec, decision_id = next(answers)
            item = by_id.get(id(dec))
            resp = result.response
            resp.CopyFrom(item[1] if item is not None and item[0] is dec else template(dec))
            resp.decision_id = decision_id


def fill(resp: pdp_pb2.CheckResponse, dec: Decision, decision_id: str) -> None:
    """Write a decision into `resp` in place: a batch fills its results without copying them."""
    resp.decision = _EFFECT[dec.effect]
    resp.reason = _REASON[dec.reason]
    resp.decision_id = decision_id
    resp.bundle_revision = dec.bundle_revision
    resp.tuple_revision = dec.tuple_revision
    if dec.rule_ids:
        resp.rule_ids.extend(dec.rule_ids)
    if dec.not_found:
        resp.not_found = True
    if dec.cached:
        resp.cached = True
    if dec.errors:
        resp.errors.extend(dec.errors)
    if dec.trace is not None:
        resp.trace.extend(
            pdp_pb2.TraceStep(
                kind=s.kind,
                id=s.id,
                outcome=s.outcome,
                detail=s.detail,
                depth=s.depth,
                values=[pdp_pb2.TraceValue(expr=e, value=v) for e, v in s.values],
            )
            for s in dec.trace
        )


def tuple_message(t: RelationTuple) -> pdp_pb2.RelationTuple:
    return pdp_pb2.RelationTuple(
        object_type=t.object_type,
        object_id=t.object_id,
        relation=t.relation,
        subject_type=t.subject_type,
        subject_id=t.subject_id,
        subject_relation=t.subject_relation,
    )


def tuple_of(msg: pdp_pb2.RelationTuple) -> RelationTuple:
    """A tuple as ReadTuples answers it, back as a value (the server sends only valid ones)."""
    return RelationTuple(
        msg.object_type,
        msg.object_id,
        msg.relation,
        msg.subject_type,
        msg.subject_id,
        msg.subject_relation,
    )


def timestamp(unix: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(unix * 1e9))
    return ts


def audit_event_pb(ev: audit.AuditEvent, mask: frozenset[str]) -> pdp_pb2.AuditEvent:
    out = pdp_pb2.AuditEvent(
        sequence=ev.sequence,
        kind=ev.kind,
        time=timestamp(ev.time),
        decision_id=ev.decision_id,
        missed=ev.missed,
        json=audit.to_json(ev, mask).decode(),
    )
    if ev.request is not None and ev.decision is not None:
        dec = ev.decision
        out.decision = _EFFECT[dec.effect]
        out.reason = _REASON[dec.reason]
        out.subject = ev.subject
        out.action = ev.request.action
        out.resource = ev.resource
        out.rule_ids.extend(dec.rule_ids)
        out.bundle_revision = dec.bundle_revision
        out.tuple_revision = dec.tuple_revision
    return out


# ---- plans (pdp.engine.plan) <-> protobuf, both ways ---------------------------------------

_PLAN_KIND: Mapping[PlanKind, pdp_pb2.PlanKind] = {
    ALWAYS_ALLOWED: pdp_pb2.PLAN_KIND_ALWAYS_ALLOWED,
    ALWAYS_DENIED: pdp_pb2.PLAN_KIND_ALWAYS_DENIED,
    CONDITIONAL: pdp_pb2.PLAN_KIND_CONDITIONAL,
}
PLAN_KIND_BACK: Mapping[pdp_pb2.PlanKind, PlanKind] = {v: k for k, v in _PLAN_KIND.items()}
_COMPARE_OP = {op: pdp_pb2.CompareOp.Value(f"COMPARE_OP_{op.upper()}") for op in COMPARE_OPS}
_COMPARE_OP_BACK = {v: k for k, v in _COMPARE_OP.items()}


def plan_kind(kind: PlanKind) -> pdp_pb2.PlanKind:
    return _PLAN_KIND[kind]


def filter_message(f: Filter) -> pdp_pb2.PlanFilter:
    """A filter tree as its PlanFilter message (`filter_of` reads it back, equal)."""
    if isinstance(f, Const):
        return pdp_pb2.PlanFilter(constant=f.value)
    if isinstance(f, And):
        return pdp_pb2.PlanFilter(all=_operands(f.operands))
    if isinstance(f, Or):
        return pdp_pb2.PlanFilter(any=_operands(f.operands))
    if isinstance(f, Not):
        return pdp_pb2.PlanFilter(negation=filter_message(f.operand))
    if isinstance(f, Present):
        return pdp_pb2.PlanFilter(present=f.field)
    out = pdp_pb2.PlanCompare(op=_COMPARE_OP[f.op], field=f.field)
    if isinstance(f.value, tuple):
        out.values.extend(_plan_value(v) for v in f.value)
    else:
        out.value.CopyFrom(_plan_value(f.value))
    return pdp_pb2.PlanFilter(compare=out)


def _operands(fs: tuple[Filter, ...]) -> pdp_pb2.PlanOperands:
    return pdp_pb2.PlanOperands(operands=[filter_message(o) for o in fs])


def _plan_value(v: Scalar) -> pdp_pb2.PlanValue:
    if isinstance(v, bool):  # before int: a bool is an int
        return pdp_pb2.PlanValue(bool_value=v)
    if isinstance(v, int):
        return pdp_pb2.PlanValue(int_value=v)
    return pdp_pb2.PlanValue(string_value=v)


def filter_of(msg: pdp_pb2.PlanFilter, path: str = "filter") -> Filter:
    """A PlanFilter message back as a filter tree; RequestInvalid names a malformed node (a
    client that reads one must fail closed: nothing but the sidecar's own messages is valid)."""
    which = msg.WhichOneof("node")
    try:
        if which == "constant":
            return TRUE if msg.constant else FALSE
        if which == "all":
            return And(_operands_of(msg.all, f"{path}.all"))
        if which == "any":
            return Or(_operands_of(msg.any, f"{path}.any"))
        if which == "negation":
            return Not(filter_of(msg.negation, f"{path}.negation"))
        if which == "present":
            return Present(msg.present)
        if which == "compare":
            return _compare_of(msg.compare, f"{path}.compare")
    except RequestInvalid:
        raise
    except InvalidRequest as exc:  # a field or an op the filter tree refuses
        raise RequestInvalid(f"{path}.{which}", str(exc)) from None
    raise RequestInvalid(path, "is empty: a filter node is required")


def _operands_of(msg: pdp_pb2.PlanOperands, path: str) -> tuple[Filter, ...]:
    return tuple(filter_of(o, f"{path}.operands[{i}]") for i, o in enumerate(msg.operands))


def _compare_of(msg: pdp_pb2.PlanCompare, path: str) -> Compare:
    op = _COMPARE_OP_BACK.get(msg.op)
    if op is None:
        raise RequestInvalid(f"{path}.op", "is required")
    if op == "in":
        values = tuple(_scalar(v, f"{path}.values[{i}]") for i, v in enumerate(msg.values))
        return Compare(op, msg.field, values)
    return Compare(op, msg.field, _scalar(msg.value, f"{path}.value"))


def _scalar(msg: pdp_pb2.PlanValue, path: str) -> Scalar:
    which = msg.WhichOneof("kind")
    if which is None:
        raise RequestInvalid(path, "is required")
    value: Scalar = getattr(msg, which)
    return value
