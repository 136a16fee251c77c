"""The policy authors' commands, run as a user would run them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pdp.cli import main

SAAS = Path(__file__).parent.parent / "bundles" / "saas"
ERIN = ["--subject", "user:erin", "--subject-attrs", '{"tenant": "acme", "roles": []}']
SPEC = [
    "--resource",
    "document:spec-1",
    "--resource-attrs",
    '{"tenant": "acme", "owner": "alice", "classification": 0}',
]


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(SAAS)]) == 0
    assert "ok: bundle `saas`" in capsys.readouterr().out


def test_validate_lists_every_error_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(SAAS, bundle)
    (bundle / "policies" / "bad.pdp").write_text(
        "permit a: read on nowhere\npermit b: fly on document\n"
    )
    assert main(["validate", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "bad.pdp:1:1: error[unknown_type]: unknown type `nowhere`" in err
    assert "bad.pdp:2:1: error[unknown_action]" in err
    assert "^" in err


def test_validate_reports_syntax_type_and_reference_errors_of_every_file_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A syntax error in one file hides neither a type error after it in the same file nor an
    unknown relation in another; the bundle is refused all the same."""
    bundle = tmp_path / "b"
    shutil.copytree(SAAS, bundle)
    rules = bundle / "policies" / "rules.pdp"
    rules.write_text(
        rules.read_text()
        + "permit broken: read on document when subject.tenant ==\n"
        + 'permit typed: read on document when subject.clearance == "high"\n'
    )
    schema = bundle / "policies" / "schema.pdp"
    schema.write_text(
        schema.read_text().replace("permission view = ", "permission view = viewr + ")
    )
    assert main(["validate", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "rules.pdp:" in err and "error[syntax_error]: unexpected `permit`" in err
    assert "error[type_error]: cannot compare int with string" in err
    assert "error[unknown_relation]: type `document` has no relation `viewr`" in err
    assert "hint: did you mean `viewer`?" in err
    assert main(["validate", "--json", str(bundle)]) == 1
    found = json.loads(capsys.readouterr().out)
    assert {d["code"] for d in found} == {"syntax_error", "type_error", "unknown_relation"}
    for d in found:
        assert set(d) >= {"file", "line", "col", "code", "message", "hint"}
        assert d["file"].endswith(".pdp") and d["line"] > 0 and d["col"] > 0
    unknown = next(d for d in found if d["code"] == "unknown_relation")
    assert unknown["file"].endswith("schema.pdp") and unknown["hint"] == "did you mean `viewer`?"


@pytest.mark.parametrize(
    ("rule", "code", "hint"),
    [
        ("permit p: read on documnt", "unknown_type", "did you mean `document`?"),
        ("permit p: reed on document", "unknown_action", "did you mean `read`?"),
        (
            "permit p: read on document when subject.tennt == resource.tenant",
            "unknown_attribute",
            "did you mean `subject.tenant`?",
        ),
        (
            "permit p: read on document when subject has viewr on resource",
            "unknown_relation",
            "did you mean `viewer`?",
        ),
        (
            "permit p: read on document when subject has role editr",
            "unknown_role",
            "did you mean `editor`?",
        ),
        ("bind admn when true", "unknown_role", "did you mean `admin`?"),
    ],
)
def test_validate_json_suggests_the_nearest_known_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str, code: str, hint: str
) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(SAAS, bundle)
    (bundle / "policies" / "typo.pdp").write_text(rule + "\n")
    assert main(["validate", "--json", str(bundle)]) == 1
    found = json.loads(capsys.readouterr().out)
    assert [(d["code"], d["hint"], d["line"]) for d in found] == [(code, hint, 1)]


def test_validate_refuses_operators_spicedb_reads_otherwise_and_shows_both_readings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(SAAS, bundle)
    schema = bundle / "policies" / "schema.pdp"
    text = schema.read_text()
    assert "permission edit = owner + editor + parent->edit" in text
    schema.write_text(
        text.replace("owner + editor + parent->edit", "owner - editor + parent->edit", 1)
    )
    assert main(["validate", "--json", str(bundle)]) == 1
    [found] = json.loads(capsys.readouterr().out)
    assert found["code"] == "ambiguous_precedence"
    assert found["hint"] == (
        "write `(owner - editor) + parent->edit` for pdp's reading, "
        "or `owner - (editor + parent->edit)`"
    )
    assert main(["validate", str(SAAS), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_check_prints_the_decision_and_trace(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", str(SAAS), *ERIN, "--action", "read", *SPEC, "--explain", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["decision"] == "ALLOW"
    assert out["rules"] == ["shared_read"]
    assert any(step["id"] == "folder:acme-root#viewer" for step in out["trace"])


def test_check_deny_exits_3_and_bad_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(SAAS), *ERIN, "--action", "delete", *SPEC]) == 3
    assert json.loads(capsys.readouterr().out)["reason"] == "forbidden"
    assert main(["check", str(SAAS), "--subject", "erin", "--action", "read", *SPEC]) == 2
    assert "--subject: `erin` is not `type:id`" in capsys.readouterr().err


def test_test_runner_json_and_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(SAAS), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == 0
    assert report["passed"] >= 20
    assert main(["test", str(SAAS), "--json", "--filter", "approver"]) == 0
    filtered = json.loads(capsys.readouterr().out)
    assert 0 < filtered["passed"] < report["passed"]


def test_test_runner_reports_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(SAAS, bundle)
    (bundle / "tests" / "wrong.test.toml").write_text(
        '[entities]\n"user:x" = { tenant = "acme", roles = [] }\n'
        '"document:spec-1" = { tenant = "acme", owner = "alice", classification = 0 }\n'
        '[[test]]\nname = "wrongly expects allow"\nsubject = "user:x"\naction = "delete"\n'
        'resource = "document:spec-1"\nexpect = "allow"\n'
    )
    assert main(["test", str(bundle)]) == 1
    out = capsys.readouterr().out
    assert "FAIL wrongly expects allow" in out
    assert "expected allow, got deny (forbidden, only_owner_deletes)" in out


def test_fmt_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.pdp"
    f.write_text("type doc{actions read}\npermit p:read on doc when (true)\n")
    assert main(["fmt", "--check", str(f)]) == 1
    assert main(["fmt", "--write", str(f)]) == 0
    assert main(["fmt", "--check", str(f)]) == 0
    assert f.read_text() == "type doc {\n  actions read\n}\n\npermit p: read on doc\n  when true\n"
    assert main(["fmt", "--check", str(SAAS)]) == 0  # the example bundle is canonical


def test_plan_prints_the_filter_and_with_sql_its_where_clause(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["plan", str(SAAS), *ERIN, "--action", "read", "--type", "document"]
    assert main([*args, "--context", '{"hour": 10}']) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["kind"] == "conditional"
    assert {"op": "eq", "field": "resource.tenant", "value": "acme"} in plan["filter"]["operands"]
    assert "where" not in plan
    sql = "id=resource.id,tenant=tenant,classification=resource.classification"
    assert main([*args, "--sql", sql]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["filter"] == plan["filter"]
    assert out["where"] == "classification <= ? AND tenant = ? AND id = ?"
    assert out["params"] == [0, "acme", "spec-1"]


def test_plan_refuses_what_no_filter_can_say_and_bad_input_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["plan", str(SAAS), *ERIN, "--action", "read"]
    assert main([*args, "--type", "nowhere"]) == 2
    assert "--type: unknown type `nowhere`" in capsys.readouterr().err
    assert main([*args, "--type", "document", "--sql", "id=resource.id"]) == 2
    assert "no column for `resource.classification`" in capsys.readouterr().err
    assert main([*args, "--type", "document", "--sql", "id"]) == 2
    assert "--sql: `id` is not COLUMN=FIELD" in capsys.readouterr().err
    bundle = tmp_path / "b"
    (bundle / "policies").mkdir(parents=True)
    (bundle / "bundle.toml").write_text('name = "b"\nrevision = "1"\n')
    (bundle / "policies" / "p.pdp").write_text(
        "type user {}\n"
        "type doc {\n  attributes { tags: set<string> }\n  actions read\n}\n"
        'permit tagged: read on doc when "x" in resource.tags\n'
    )
    tagged = ["plan", str(bundle), "--subject", "user:u", "--action", "read", "--type", "doc"]
    assert main(tagged) == 2
    assert '`"x" in resource.tags`' in capsys.readouterr().err  # the construct, named
