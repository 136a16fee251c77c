"""The playground's use cases and HTTP guard in process: validation with positions, checks that
fail closed, tests, saves only on request and atomically, and the local-only guard (Host, Origin,
JSON bodies) that keeps other origins and rebound names from driving it."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from pdp.authoring import drafts
from pdp.authoring.playground import ListenError, Playground, parse_listen
from pdp.authoring.playground_http import create_app
from pdp.cli import main

SAAS = Path(__file__).parents[2] / "bundles" / "saas"
BROKEN = "permit x: read on document when resource.tenant = 1\n"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "saas"
    shutil.copytree(SAAS, root)
    return root


@pytest.fixture
def server(bundle: Path) -> Iterator[int]:
    """The playground app served on an ephemeral loopback port in a thread: its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts: no polling
    port: int = sock.getsockname()[1]
    app = create_app(Playground(bundle, drafts.read(bundle)), port)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    http = uvicorn.Server(config)
    thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        http.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive()


@pytest.fixture
def client(server: int) -> Iterator[httpx.Client]:
    origin = f"http://127.0.0.1:{server}"
    with httpx.Client(base_url=origin, headers={"Origin": origin}, timeout=30) as c:
        yield c


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_the_page_and_its_assets_come_from_the_package(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    for element in ('id="policy"', 'id="request"', 'id="run"', 'id="decision"', 'id="trace"'):
        assert element in page.text
    assert 'id="errors"' in page.text and 'id="tests"' in page.text
    assert "http" not in page.text.replace('lang="en"', "")  # no CDN: every asset is local
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert client.get("/assets/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/assets/style.css").status_code == 200
    assert client.get("/assets/..%2fplayground.py").status_code == 404


def test_state_lists_editable_files_and_a_request_from_the_tests(client: httpx.Client) -> None:
    state = client.get("/api/bundle").json()
    assert set(state["files"]) == {
        "policies/roles.pdp",
        "policies/rules.pdp",
        "policies/schema.pdp",
        "tuples/sharing.jsonl",
    }
    assert state["request"]["subject"] == "user:alice"
    assert state["request"]["subject_attrs"]["tenant"] == "acme"


def test_validate_reports_what_pdp_validate_reports(
    client: httpx.Client, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert client.post("/api/validate", json={"files": {}}).json() == {"diagnostics": []}
    got = client.post("/api/validate", json={"files": {"policies/rules.pdp": BROKEN}}).json()
    (bundle / "policies" / "rules.pdp").write_text(BROKEN)
    assert main(["validate", str(bundle)]) == 1
    expected = [line for line in capsys.readouterr().err.splitlines() if ": error[" in line]
    assert [d["text"] for d in got["diagnostics"]] == [
        e.replace(f"{bundle}/", "") for e in expected
    ]
    first = got["diagnostics"][0]
    assert (first["file"], first["line"], first["col"]) == ("policies/rules.pdp", 1, 49)
    assert first["hint"]


def test_a_check_runs_the_edited_policy_with_its_trace(client: httpx.Client) -> None:
    request = client.get("/api/bundle").json()["request"]
    out = client.post("/api/check", json={"files": {}, "request": request}).json()
    assert out["decision"] == "ALLOW"
    assert out["rules"] == ["shared_read"]
    tree = out["tree"]
    permit = next(n for n in tree["children"] if n["id"] == "shared_read")

    def hops(node: dict) -> list[dict]:  # type: ignore[type-arg]
        return node.get("hops", []) + [h for c in node["children"] for h in hops(c)]

    path = [h["id"] for h in hops(permit)]
    assert path[0] == "user:alice"
    assert "document:spec-1#view" in path
    # the edit is what runs: without the permit, the same request is denied
    rules = client.get("/api/bundle").json()["files"]["policies/rules.pdp"]
    no_sharing = rules.replace("permit shared_read", "permit shared_read_gone").replace(
        "when subject has view on resource", "when subject has view on resource and false"
    )
    edited = client.post(
        "/api/check", json={"files": {"policies/rules.pdp": no_sharing}, "request": request}
    ).json()
    assert edited["decision"] == "DENY"


@pytest.mark.parametrize(
    ("files", "request_json", "why"),
    [
        ({"policies/rules.pdp": BROKEN}, None, "the bundle has errors"),
        ({}, {"subject": "user:alice", "action": "read"}, "the request is not valid"),
        ({}, {"subject": "alice", "action": "read", "resource": "document:d"}, "not valid"),
        ({}, [1, 2], "the request is not valid"),
        ({}, {"subject": "user:a", "action": "read", "resource": "document:d", "x": 1}, "valid"),
    ],
)
def test_a_check_that_cannot_run_denies(
    client: httpx.Client, files: dict[str, str], request_json: object, why: str
) -> None:
    request = request_json or client.get("/api/bundle").json()["request"]
    out = client.post("/api/check", json={"files": files, "request": request}).json()
    assert out["decision"] == "DENY"
    assert why in out["reason"]
    assert out["errors"]


def test_tests_run_against_the_drafts(client: httpx.Client) -> None:
    report = client.post("/api/tests", json={"files": {}}).json()
    assert report["failed"] == 0 and report["passed"] > 10
    broken = client.post("/api/tests", json={"files": {"policies/rules.pdp": BROKEN}}).json()
    assert broken["passed"] == 0 and broken["errors"]


def test_nothing_is_written_until_save_and_then_atomically(
    client: httpx.Client, bundle: Path
) -> None:
    before = snapshot(bundle)
    rules = (bundle / "policies" / "rules.pdp").read_text()
    edited = rules + "\n// reviewed\n"
    for path in ("/api/validate", "/api/tests"):
        client.post(path, json={"files": {"policies/rules.pdp": edited}})
    request = client.get("/api/bundle").json()["request"]
    client.post("/api/check", json={"files": {"policies/rules.pdp": edited}, "request": request})
    assert snapshot(bundle) == before

    saved = client.post("/api/save", json={"files": {"policies/rules.pdp": edited}}).json()
    assert saved == {"written": ["policies/rules.pdp"], "diagnostics": []}
    assert (bundle / "policies" / "rules.pdp").read_text() == edited
    after = snapshot(bundle)
    assert {k for k in after if after[k] != before.get(k)} == {"policies/rules.pdp"}
    assert set(after) == set(before)  # no temporary file left behind
    # the page's base is now the saved text: an empty draft set is the new file
    assert client.get("/api/bundle").json()["files"]["policies/rules.pdp"] == edited


@pytest.mark.parametrize(
    "name",
    ["../outside.pdp", "/etc/passwd.pdp", "policies/new.pdp", "bundle.toml", "policies/.x.pdp"],
)
def test_drafts_name_only_the_bundle_s_own_files(
    client: httpx.Client, bundle: Path, name: str
) -> None:
    before = snapshot(bundle.parent)
    for path in ("/api/validate", "/api/save"):
        answer = client.post(path, json={"files": {name: "type t {}\n"}})
        assert answer.status_code == 400
    assert snapshot(bundle.parent) == before


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "http://evil.example"}, 403),  # a page elsewhere posting to us (CSRF)
        ({"Origin": "null"}, 403),
        ({"Origin": ""}, 403),
        ({"Origin": "http://127.0.0.1:1"}, 403),  # another local port is another origin
        ({"Host": "evil.example"}, 403),  # DNS rebinding: their name, our address
        ({"Content-Type": "text/plain"}, 415),  # a form or a no-CORS fetch cannot send JSON
    ],
)
def test_other_origins_cannot_drive_it(
    client: httpx.Client, bundle: Path, headers: dict[str, str], status: int
) -> None:
    before = snapshot(bundle)
    answer = client.post(
        "/api/save",
        content=b'{"files": {"policies/rules.pdp": "type t {}\\n"}}',
        headers={"Content-Type": "application/json", **headers},
    )
    assert answer.status_code == status
    assert snapshot(bundle) == before


def test_a_rebound_name_cannot_even_read(client: httpx.Client) -> None:
    assert client.get("/api/bundle", headers={"Host": "evil.example"}).status_code == 403
    port = client.base_url.port
    assert client.get("/", headers={"Host": f"localhost:{port}"}).status_code == 200


def test_bodies_that_are_not_objects_are_refused(client: httpx.Client) -> None:
    assert (
        client.post(
            "/api/validate", content=b"[]", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )
    assert client.post("/api/validate", json={"files": {"a.pdp": 1}}).status_code == 400


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("localhost:8787", ("127.0.0.1", 8787)),
        ("[::1]:9000", ("::1", 9000)),
        ("127.0.0.2:80", ("127.0.0.2", 80)),
    ],
)
def test_listen_on_loopback(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:8787", "[::]:8787", "192.168.1.4:80", "example.com:80", "8787", "x:y"]
)
def test_listen_elsewhere_is_refused(listen: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ListenError):
        parse_listen(listen)
    assert main(["playground", str(SAAS), "--listen", listen]) == 2
    assert "--listen" in capsys.readouterr().err
