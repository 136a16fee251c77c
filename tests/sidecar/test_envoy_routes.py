"""The Envoy route mapping (pdp.sidecar.envoy_routes): the file format, first match wins, no
match is None, and the path rules: no route ever sees a dot segment, an encoded separator or an
id outside pdp.identifiers' grammar, however the path is encoded (hypothesis)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdp.identifiers import ID_PATTERN, is_id
from pdp.model import Entity
from pdp.sidecar.envoy_routes import (
    MAX_PATH,
    HttpRequest,
    MalformedPath,
    Match,
    Routes,
    RoutesError,
    load_routes,
    parse_routes,
    split_path,
)

DOC = Path(__file__).parents[2] / "docs" / "envoy.md"

ROUTES = parse_routes(
    {
        "actions": {"GET": "read", "HEAD": "read", "PUT": "update", "DELETE": "delete"},
        "routes": [
            {"path": "/documents/search", "resource_type": "service", "resource_id": "search"},
            {
                "path": "/tenants/{tenant}/documents/{id}",
                "resource_type": "document",
                "resource_id": "{tenant}/{id}",
                "resource_attributes": {"tenant": "{tenant}", "classification": 0},
                "context_headers": {"x-client-version": "client_version"},
            },
            {
                "path": "/documents/{id}",
                "hosts": ["docs.example.com"],
                "resource_type": "document",
                "actions": {"POST": "approve"},
            },
            {"path": "/folders/{id}/", "resource_type": "folder", "methods": ["GET"]},
        ],
    }
)


def match(path: str, method: str = "GET", host: str = "docs.example.com", **headers: str) -> Any:
    return ROUTES.match(HttpRequest(method, host, path, headers))


def test_a_route_binds_the_resource_attributes_and_context() -> None:
    m = match("/tenants/acme/documents/d1", "PUT", **{"x-client-version": "7"})
    assert m == Match(
        1,
        "update",
        Entity("document", "acme/d1", {"tenant": "acme", "classification": 0}),
        {"client_version": "7"},
    )


def test_first_match_wins() -> None:
    assert match("/documents/search").resource == Entity("service", "search")


def test_the_method_table_and_the_host_are_part_of_the_match() -> None:
    assert match("/documents/d1", "POST").action == "approve"
    assert match("/documents/d1", "GET") is None  # this route answers POST only
    assert match("/documents/d1", "POST", host="DOCS.example.com:8443").action == "approve"
    assert match("/documents/d1", "POST", host="evil.example.com") is None
    assert match("/tenants/acme/documents/d1", "PATCH") is None  # no action: no route
    assert match("/tenants/acme/documents/d1", "get") is None  # methods are case-sensitive


def test_no_route_is_none() -> None:
    assert match("/") is None
    assert match("/tenants/acme/documents") is None
    assert match("/tenants/acme/documents/d1/extra") is None
    assert match("/tenants/acme/documents/d1/") is None  # a trailing slash is a segment


def test_a_trailing_slash_matches_only_a_pattern_written_with_one() -> None:
    assert match("/folders/f1/").resource == Entity("folder", "f1")
    assert match("/folders/f1") is None
    with pytest.raises(MalformedPath):
        match("/folders//")  # an empty segment before the last is refused


def test_query_and_fragment_are_not_the_path() -> None:
    m = match("/tenants/acme/documents/d1?access_token=x&id=d2#frag")
    assert m.resource.id == "acme/d1"


def test_percent_encoding_is_decoded_once() -> None:
    assert match("/tenants/acme/docu%6Dents/d%31").resource.id == "acme/d1"
    # decoded once: `%2531` is `%31`, not `1`, and a decoded `%` is refused
    with pytest.raises(MalformedPath):
        match("/tenants/acme/documents/d%2531")


@pytest.mark.parametrize(
    "path",
    [
        "documents/d1",  # not absolute
        "/tenants/acme/documents/..",
        "/tenants/acme/documents/.",
        "/tenants/acme/../documents/d1",
        "/tenants/acme/documents/%2e%2e",
        "/tenants/acme/documents/%2E.",
        "/tenants/acme/documents/.%2e",
        "/tenants/acme%2Fglobex/documents/d1",  # an encoded separator
        "/tenants/acme/documents/a%5cb",  # an encoded backslash
        "/tenants/acme/documents/a\\b",
        "/tenants/acme/documents/a%00",
        "/tenants/acme/documents/a%zz",
        "/tenants/acme/documents/a%4",
        "/tenants/acme/documents/%ff",  # not UTF-8
        "/tenants//documents/d1",
        "/tenants/acme/documents/d 1",
        "/tenants/acme/documents/d1\n",
        "/" + "a" * MAX_PATH,
        "",
    ],
)
def test_malformed_paths_are_refused_before_any_route(path: str) -> None:
    with pytest.raises(MalformedPath):
        match(path)


@pytest.mark.parametrize(
    "path",
    [
        "/tenants/acme/documents/a.b",  # `.` is no id character
        "/tenants/acme/documents/*",  # the wildcard is never a resource
        "/tenants/acme/documents/d1;jsessionid=x",
        "/tenants/acme/documents/%C3%A9",  # UTF-8, decoded, but no id
        "/tenants/" + "a" * 1020 + "/documents/d1234",  # each fits, `{tenant}/{id}` does not
    ],
)
def test_a_bound_value_outside_the_id_grammar_is_malformed_not_the_next_route(path: str) -> None:
    with pytest.raises(MalformedPath):
        match(path)


def test_a_long_header_copied_into_the_context_is_malformed() -> None:
    with pytest.raises(MalformedPath):
        match("/tenants/acme/documents/d1", **{"x-client-version": "v" * 1025})


def test_defaults_and_upstream_headers() -> None:
    routes = parse_routes(
        {
            "routes": [
                {
                    "path": "/",
                    "resource_type": "app",
                    "resource_id": "x",
                    "actions": {"GET": "read"},
                }
            ]
        }
    )
    assert routes.realm == "pdp"
    assert (routes.subject_header, routes.decision_header) == ("x-pdp-subject", "x-pdp-decision-id")
    assert routes.match(HttpRequest("GET", "h", "/")) == Match(0, "read", Entity("app", "x"), {})
    assert routes.match(HttpRequest("PUT", "h", "/")) is None


def with_route(**route: Any) -> dict[str, Any]:
    return {"actions": {"GET": "read"}, "routes": [{"resource_type": "document", **route}]}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"routes": []}, "at least one"),
        ({"route": [], "routes": [{}]}, "unknown key `route`"),
        ({"actions": {"get": "read"}, "routes": [{}]}, "HTTP method"),
        ({"actions": {"GET": "read-it"}, "routes": [{}]}, "not an action name"),
        ({"realm": 'a"b', "routes": [{}]}, "realm"),
        ({"upstream_headers": {"subject": "X-Sub"}, "routes": [{}]}, "lowercase header name"),
        ({"upstream_headers": {"subject": "x", "decision_id": "x"}, "routes": [{}]}, "different"),
        (with_route(), "`path` is required"),
        (with_route(path="documents/{id}"), "must start with `/`"),
        (with_route(path="/documents/../{id}"), "neither a literal"),
        (with_route(path="/documents/./{id}"), "neither a literal"),
        (with_route(path="/documents/d{id}"), "neither a literal"),
        (with_route(path="/documents/{id}.json"), "neither a literal"),
        (with_route(path="/a//{id}"), "neither a literal"),
        (with_route(path="/{id}/{id}"), "appears twice"),
        (with_route(path="/{id}", resource_id="{tenant}"), "`{tenant}` is not a parameter"),
        (with_route(path="/{id}", resource_id="{id"), "not a `{param}`"),
        (with_route(path="/{id}", resource_id=3), "is a string"),
        (with_route(path="/{id}", resource_type="doc-ument"), "`resource_type`"),
        (with_route(path="/{id}", methods=["POST"]), "method `POST` has no action"),
        (with_route(path="/{id}", actions={}), "no method maps"),
        (with_route(path="/{id}", hosts=["h:80"]), "`hosts`"),
        (with_route(path="/{id}", resource_attributes={"x": 1.5}), "a string, an integer"),
        (with_route(path="/{id}", context_headers={"authorization": "a"}), "may be copied"),
        (with_route(path="/{id}", context_headers={"cookie": "c"}), "may be copied"),
        (with_route(path="/{id}", context={"v": "1"}, context_headers={"x-v": "v"}), "also in"),
        (with_route(path="/{id}", nope=1), "unknown key `nope`"),
    ],
)
def test_a_bad_routes_file_is_refused_naming_the_problem(
    data: dict[str, Any], problem: str
) -> None:
    with pytest.raises(RoutesError, match=re.escape(problem)):
        parse_routes(data, "routes.toml")


def test_an_unreadable_or_invalid_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RoutesError, match=r"missing\.toml"):
        load_routes(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("routes = [")
    with pytest.raises(RoutesError, match=r"bad\.toml"):
        load_routes(bad)


def test_the_documented_example_loads_and_means_what_docs_envoy_md_says(tmp_path: Path) -> None:
    (example,) = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    path = tmp_path / "envoy-routes.toml"
    path.write_text(example)
    routes = load_routes(path)
    assert tomllib.loads(example)  # the same text, as TOML
    doc = routes.match(HttpRequest("GET", "docs.example.com", "/tenants/acme/documents/d1", {}))
    assert doc is not None and doc.action == "read"
    assert doc.resource.id == "d1" and doc.resource.attrs["tenant"] == "acme"


# ---- properties ------------------------------------------------------------------------------

_ID_CHARS = "ABCXYZabcxyz0189_|-=+"  # `/` too is an id character, but never in one segment
ids = st.text(alphabet=_ID_CHARS, min_size=1, max_size=12)
dots = st.sampled_from([".", ".."])


@st.composite
def encoded(draw: st.DrawFn, text: str) -> str:
    """`text` with any of its characters percent-encoded, in either case of hex digit."""
    out = []
    for c in text:
        if draw(st.booleans()):
            hexed = f"%{ord(c):02x}"
            out.append(hexed.upper() if draw(st.booleans()) else hexed)
        else:
            out.append(c)
    return "".join(out)


@given(
    before=st.lists(ids, max_size=3),
    dot=dots.flatmap(lambda d: encoded(d)),
    after=st.lists(ids, max_size=3),
    query=st.sampled_from(["", "?a=b", "?x=/../", "#f"]),
)
def test_no_path_with_a_dot_segment_reaches_any_route(
    before: list[str], dot: str, after: list[str], query: str
) -> None:
    path = "/" + "/".join([*before, dot, *after]) + query
    with pytest.raises(MalformedPath):
        split_path(path)


# Patterns of every arity, all parameters: any path of that many segments reaches them.
OPEN = Routes(
    tuple(
        parse_routes(
            {
                "actions": {"GET": "read"},
                "routes": [
                    {
                        "path": "/" + "/".join(f"{{p{i}}}" for i in range(n)),
                        "resource_type": "thing",
                        "resource_id": "{p0}" if n else "root",
                        "resource_attributes": {f"p{i}": f"{{p{i}}}" for i in range(n)},
                    }
                ],
            }
        ).routes[0]
        for n in range(6)
    )
)
_PATH_ALPHABET = "/.%\\2eEfF5cC0aA:;@*?# xé\x00"


@given(st.text(alphabet=_ID_CHARS + _PATH_ALPHABET, max_size=40))
def test_whatever_the_path_a_match_binds_only_ids(text: str) -> None:
    path = "/" + text
    try:
        m = OPEN.match(HttpRequest("GET", "h", path))
    except MalformedPath:
        return
    if m is None:
        return
    assert is_id(m.resource.id) or m.resource.id == "root"
    for value in m.resource.attrs.values():
        assert isinstance(value, str) and re.fullmatch(ID_PATTERN, value)
        assert value not in (".", "..")


@given(
    st.lists(ids, min_size=1, max_size=5).flatmap(
        lambda xs: st.tuples(st.just(xs), *map(encoded, xs))
    )
)
def test_any_encoding_of_ids_decodes_to_the_same_ids(drawn: tuple[Any, ...]) -> None:
    plain, *written = drawn
    assert split_path("/" + "/".join(written)) == tuple(plain)
    m = OPEN.match(HttpRequest("GET", "h", "/" + "/".join(written)))
    assert m is not None and m.resource.id == plain[0]


@given(st.text(max_size=60))
def test_any_text_is_a_match_none_or_malformed_never_an_other_error(text: str) -> None:
    try:
        ROUTES.match(HttpRequest("GET", "docs.example.com", text, {}))
    except MalformedPath:
        pass
