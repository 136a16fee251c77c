"""The hypothesis strategies more than one test module draws from: random policies over one
schema (rules and roles), tuples over a small universe of ids, and requests against that schema.

tests/engine/test_differential.py checks the compiled engine against the reference interpreter on
them; tests/engine/test_cache.py checks a cached engine against an uncached one.
"""

from __future__ import annotations

from hypothesis import strategies as st

from pdp.model import Entity, Request

SCHEMA = """
type user { attributes { tenant?: string, level?: int, tags?: set<string>, flag?: bool, roles?: set<string> } }
type group { relation member: user | group#member }
type folder {
  actions a, b
  attributes { tenant?: string, level?: int, owner?: string }
  relation owner: user
  relation editor: user | group#member
  relation viewer: user | group#member
  relation parent: folder
  permission edit = owner + editor + parent->edit
  permission view = viewer + edit + parent->view
  permission both = edit & viewer
}
type doc {
  actions a, b, c
  attributes { tenant?: string, level?: int, owner?: string }
  relation owner: user
  relation editor: user | group#member
  relation viewer: user | group#member | user:*
  relation parent: folder
  relation banned: user
  permission edit = owner + editor
  permission view = (edit + viewer + parent->view) - banned
  permission both = edit & viewer
}
context { hour?: int }
"""

ATOMS = [
    "subject.level >= resource.level",
    "resource.tenant == subject.tenant",
    'subject.tenant == "t0"',
    '"x" in subject.tags',
    'subject.tags.contains_any(["x", "y"])',
    "has(subject.level)",
    "has(resource.owner)",
    "subject.flag",
    "resource.owner == subject.id",
    "subject has view on resource",
    "subject has edit on resource",
    "subject has both on resource",
    "subject has role r1",
    "context.hour > 5",
    "true",
    "false",
]

conditions = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda c: f"not ({c})"),
    ),
    max_leaves=4,
)

targets = st.tuples(
    st.sampled_from(["*", "a", "b", "a, b", "c"]),
    st.sampled_from(["*", "doc", "folder", "doc, folder"]),
)


@st.composite
def rules(draw: st.DrawFn) -> str:
    out = []
    for i in range(draw(st.integers(0, 6))):
        effect = draw(st.sampled_from(["permit", "forbid"]))
        actions, types = draw(targets)
        if types == "folder" and actions == "c":
            actions = "a"
        if "c" in actions and "folder" in types:
            actions = "*"
        hidden = " as not_found" if effect == "forbid" and draw(st.booleans()) else ""
        cond = draw(st.none() | conditions)
        when = f" when {cond}" if cond else ""
        out.append(f"{effect} rule{i}{hidden}: {actions} on {types}{when}")
    return "\n".join(out)


@st.composite
def roles(draw: st.DrawFn) -> str:
    out = []
    for i in range(4):
        parents = [f"r{j}" for j in range(i) if draw(st.booleans())]
        extends = f" extends {', '.join(parents)}" if parents else ""
        scope = " scoped by tenant" if draw(st.booleans()) else ""
        grants = draw(st.lists(targets, max_size=2))
        body = " ".join(f"allow {'a' if a == 'c' and t != 'doc' else a} on {t}" for a, t in grants)
        out.append(f"role r{i}{scope}{extends} {{ {body} }}")
    out.append("bind roles from subject.roles")
    if draw(st.booleans()):
        condition = draw(conditions.filter(lambda c: "has role" not in c))
        out.append(f"bind r{draw(st.integers(0, 3))} when {condition}")
    return "\n".join(out)


IDS = ["u0", "u1", "u2"]
tuple_strings = st.one_of(
    st.builds(
        lambda d, u: f"doc:{d}#owner@user:{u}", st.sampled_from(["d0", "d1"]), st.sampled_from(IDS)
    ),
    st.builds(
        lambda d, u: f"doc:{d}#editor@user:{u}", st.sampled_from(["d0", "d1"]), st.sampled_from(IDS)
    ),
    st.builds(
        lambda d, g: f"doc:{d}#editor@group:{g}#member",
        st.sampled_from(["d0", "d1"]),
        st.sampled_from(["g0", "g1"]),
    ),
    st.builds(
        lambda d, u: f"doc:{d}#viewer@user:{u}",
        st.sampled_from(["d0", "d1"]),
        st.sampled_from([*IDS, "*"]),
    ),
    st.builds(
        lambda d, u: f"doc:{d}#banned@user:{u}", st.sampled_from(["d0", "d1"]), st.sampled_from(IDS)
    ),
    st.builds(
        lambda d, f: f"doc:{d}#parent@folder:{f}",
        st.sampled_from(["d0", "d1"]),
        st.sampled_from(["f0", "f1"]),
    ),
    st.builds(
        lambda f, p: f"folder:{f}#parent@folder:{p}",
        st.sampled_from(["f0", "f1"]),
        st.sampled_from(["f0", "f1"]),
    ),
    st.builds(
        lambda f, g: f"folder:{f}#viewer@group:{g}#member",
        st.sampled_from(["f0", "f1"]),
        st.sampled_from(["g0", "g1"]),
    ),
    st.builds(
        lambda f, u: f"folder:{f}#owner@user:{u}",
        st.sampled_from(["f0", "f1"]),
        st.sampled_from(IDS),
    ),
    st.builds(
        lambda g, u: f"group:{g}#member@user:{u}",
        st.sampled_from(["g0", "g1"]),
        st.sampled_from(IDS),
    ),
    st.builds(
        lambda g, h: f"group:{g}#member@group:{h}#member",
        st.sampled_from(["g0", "g1"]),
        st.sampled_from(["g0", "g1"]),
    ),
)


def maybe(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | strategy


@st.composite
def requests(draw: st.DrawFn) -> Request:
    def attrs(pairs: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in pairs.items() if v is not None}

    subject = Entity(
        "user",
        draw(st.sampled_from(IDS)),
        attrs(
            {
                "tenant": draw(maybe(st.sampled_from(["t0", "t1"]))),
                "level": draw(maybe(st.integers(0, 3))),
                "tags": draw(maybe(st.frozensets(st.sampled_from(["x", "y", "z"])))),
                "flag": draw(maybe(st.booleans())),
                "roles": draw(
                    maybe(st.frozensets(st.sampled_from(["r0", "r1", "r2", "r3", "zz"])))
                ),
            }
        ),  # type: ignore[arg-type]
    )
    rtype = draw(st.sampled_from(["doc", "folder"]))
    resource = Entity(
        rtype,
        draw(st.sampled_from(["d0", "d1"] if rtype == "doc" else ["f0", "f1"])),
        attrs(
            {
                "tenant": draw(maybe(st.sampled_from(["t0", "t1"]))),
                "level": draw(maybe(st.integers(0, 3))),
                "owner": draw(maybe(st.sampled_from(IDS))),
            }
        ),  # type: ignore[arg-type]
    )
    context = attrs({"hour": draw(maybe(st.integers(0, 23)))})
    return Request(subject, draw(st.sampled_from(["a", "b", "c", "zz"])), resource, context)  # type: ignore[arg-type]
