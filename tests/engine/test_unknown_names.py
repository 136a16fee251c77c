"""A Check that names a type or an action the bundle does not know stays a deny, and its errors
say which name, with the nearest known one: the caller can tell a typo from a real deny."""

from __future__ import annotations

import pytest

from pdp.bundle import bundle_from_text
from pdp.engine import Engine
from pdp.model import Effect, Entity, Reason, Request

POLICY = """
type user { attributes { tenant: string } }
type robot { }
type document {
  attributes { tenant: string }
  actions read, write
  relation viewer: user
}
type folder { actions read }
permit shared_read: read on document when subject has viewer on resource
permit anyone_reads_folders: read on folder
"""
ERIN = Entity("user", "erin", {"tenant": "acme"})
DOC = Entity("document", "d1", {"tenant": "acme"})


@pytest.fixture(scope="module")
def engine() -> Engine:
    e = Engine()
    e.load(bundle_from_text(POLICY, ["document:d1#viewer@user:erin"]))
    return e


@pytest.mark.parametrize(
    ("request_", "errors"),
    [
        (
            Request(ERIN, "reed", DOC),
            ('unknown action "reed" for type document; did you mean "read"?',),
        ),
        (
            Request(ERIN, "read", Entity("documnt", "d1")),
            ('unknown type "documnt"; did you mean "document"?',),
        ),
        (Request(ERIN, "fly", Entity("plane", "p1")), ('unknown type "plane"',)),
        (
            Request(Entity("usr", "erin"), "read", DOC),
            ('unknown subject type "usr"; did you mean "user"?',),
        ),
        (
            Request(Entity("usr", "erin"), "delete", DOC),
            (
                'unknown action "delete" for type document',
                'unknown subject type "usr"; did you mean "user"?',
            ),
        ),
    ],
)
def test_an_unknown_name_is_a_deny_that_says_so(
    engine: Engine, request_: Request, errors: tuple[str, ...]
) -> None:
    for _ in range(2):  # the second time too: an answer with errors is never cached
        d = engine.check(request_)
        assert (d.effect, d.reason, d.errors) == (Effect.DENY, Reason.NOT_PERMITTED, errors)
        assert not d.cached


def test_known_names_deny_without_errors_and_allow_as_before(engine: Engine) -> None:
    # a real deny: every name known, no rule allows
    d = engine.check(Request(ERIN, "write", DOC))
    assert (d.effect, d.reason, d.errors) == (Effect.DENY, Reason.NOT_PERMITTED, ())
    d = engine.check(Request(Entity("user", "bob"), "read", DOC))
    assert (d.effect, d.errors) == (Effect.DENY, ())
    assert engine.check(Request(ERIN, "read", DOC)).effect is Effect.ALLOW
    # a rule that allows every subject allows one of a type the policy never declared: the
    # check names nothing, because nothing went wrong (an allow is never turned into a deny)
    d = engine.check(Request(Entity("satellite", "s1"), "read", Entity("folder", "f1")))
    assert (d.effect, d.errors) == (Effect.ALLOW, ())
    d = engine.check(Request(Entity("robot", "r1"), "read", DOC))
    assert (d.effect, d.errors) == (Effect.DENY, ())
