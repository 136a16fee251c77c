"""The hypothesis strategies more than one test module draws from: random policies over one
schema (rules and roles), tuples over a small universe of ids, and requests against that schema.
Its arrows walk relations holding objects and usersets alike (`doc:d0#parent@folder:f1#viewer`
hops to `folder:f1`, Zanzibar's tuple-to-userset), one holding only usersets (`shelf`), a type
without the permission asked (`group`), and cycles through usersets
(`folder:f0#parent@folder:f0#parent`).

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
  relation parent: folder | folder#parent
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
  relation parent: folder | folder#viewer | folder#parent | group#member
  relation shelf: folder#parent
  relation banned: user
  permission edit = owner + editor
  permission view = (edit + viewer + parent->view + shelf->edit) - banned
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

# Half the atoms drawn ask a relation, so that a relation walk decides many more examples.
RELATION_ATOMS = [a for a in ATOMS if " has " in a and "role" not in a]
conditions = st.recursive(
    st.one_of(st.sampled_from(ATOMS), st.sampled_from(RELATION_ATOMS)),
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
def rules(draw: st.DrawFn, min_rules: int = 0, max_rules: int = 6) -> str:
    out = []
    for i in range(draw(st.integers(min_rules, max_rules))):
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
DOCS, FOLDERS, GROUPS = ["d0", "d1"], ["f0", "f1"], ["g0", "g1"]


def _tuples(shape: str, objects: list[str], subjects: list[str]) -> st.SearchStrategy[str]:
    """`shape` with `{o}` the object id and `{s}` the subject drawn from the lists."""
    return st.builds(
        lambda o, s: shape.format(o=o, s=s), st.sampled_from(objects), st.sampled_from(subjects)
    )


# The tuples an arrow walks, objects and usersets alike, and the grants at the far end. Drawn as
# often as all the others together: a check that hops through a userset needs two or three of
# them to line up.
_arrow_tuples = st.one_of(
    _tuples(
        "doc:{o}#parent@{s}",
        DOCS,
        ["folder:f0", "folder:f1", "folder:f0#viewer", "folder:f1#parent", "group:g0#member"],
    ),
    _tuples("doc:{o}#shelf@folder:{s}#parent", DOCS, FOLDERS),
    _tuples("folder:{o}#parent@folder:{s}", FOLDERS, ["f0", "f1", "f0#parent", "f1#parent"]),
    _tuples("folder:{o}#viewer@user:{s}", FOLDERS, IDS),
    _tuples("folder:{o}#owner@user:{s}", FOLDERS, IDS),
)
_other_tuples = st.one_of(
    _tuples("doc:{o}#owner@user:{s}", DOCS, IDS),
    _tuples("doc:{o}#editor@user:{s}", DOCS, IDS),
    _tuples("doc:{o}#editor@group:{s}#member", DOCS, GROUPS),
    _tuples("doc:{o}#viewer@user:{s}", DOCS, [*IDS, "*"]),
    _tuples("doc:{o}#banned@user:{s}", DOCS, IDS),
    _tuples("folder:{o}#viewer@group:{s}#member", FOLDERS, GROUPS),
    _tuples("group:{o}#member@user:{s}", GROUPS, IDS),
    _tuples("group:{o}#member@group:{s}#member", GROUPS, GROUPS),
)
tuple_strings = st.booleans().flatmap(lambda arrow: _arrow_tuples if arrow else _other_tuples)


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
