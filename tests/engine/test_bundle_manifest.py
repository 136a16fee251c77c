"""Loading a bundle as a consistent whole: stable reads, the file manifest, its signature, and every
malformed bundle.toml value as a diagnostic (pdp.bundle.files, pdp.bundle.manifest,
pdp.bundle_signing, pdp.bundle)."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pdp.bundle import BundleError, load_bundle
from pdp.bundle import manifest as bundle_manifest
from pdp.bundle.files import BundleUnstable, read_files, read_stable
from pdp.bundle_signing import SignatureError, Verifier, sign
from pdp.cli import main as pdp_main
from pdp.tokens import KeyConfigError
from tests.bundle_keys import key_pair

SAAS = Path(__file__).parents[2] / "bundles" / "saas"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    dest = tmp_path / "saas"
    shutil.copytree(SAAS, dest)
    return dest


def _codes(path: Path, **kw: object) -> set[str]:
    with pytest.raises(BundleError) as info:
        load_bundle(path, **kw)  # type: ignore[arg-type]
    return {d.code for d in info.value.diagnostics}


def _build(bundle: Path, key: Path | None = None) -> None:
    argv = ["bundle", "build", str(bundle)] + (["--sign-key", str(key)] if key else [])
    assert pdp_main(argv) == 0


# -- stable reads ------------------------------------------------------------------------------


def test_a_stable_read_returns_only_when_two_reads_agree(bundle: Path) -> None:
    rules = bundle / "policies" / "rules.pdp"
    full = rules.read_bytes()
    states = [full[:100], full]  # half written, then done

    def sleep(_: float) -> None:  # the writer moves on while the reader waits
        if states:
            rules.write_bytes(states.pop(0))

    rules.write_bytes(b"")
    files = read_stable(bundle, quiet_seconds=0.01, sleep=sleep)
    assert files.files["policies/rules.pdp"] == full
    assert not states


def test_a_file_that_changes_and_changes_back_is_still_a_change(bundle: Path) -> None:
    rules = bundle / "policies" / "rules.pdp"
    first = read_files(bundle)
    text = rules.read_bytes()
    rules.write_bytes(b"")
    rules.write_bytes(text)  # same bytes, a new write: the mtime (or inode) says so
    os.utime(rules, ns=(first.stamps["policies/rules.pdp"][3] + 1_000_000,) * 2)
    assert read_files(bundle).changed_since(first) == ("policies/rules.pdp",)


def test_a_bundle_that_never_settles_is_refused(bundle: Path) -> None:
    rules = bundle / "policies" / "rules.pdp"
    n = [0]
    now = [0.0]

    def sleep(seconds: float) -> None:
        n[0] += 1
        now[0] += seconds
        rules.write_text(rules.read_text() + f"\n// edit {n[0]}\n")

    with pytest.raises(BundleUnstable) as info:
        read_stable(
            bundle, quiet_seconds=0.25, timeout_seconds=2, sleep=sleep, clock=lambda: now[0]
        )
    assert info.value.changed == ("policies/rules.pdp",)
    assert 8 <= n[0] <= 9


def test_dot_files_and_dot_directories_are_not_part_of_a_bundle(bundle: Path) -> None:
    (bundle / ".git").mkdir()
    (bundle / ".git" / "evil.pdp").write_text("permit all: read on document\n")
    (bundle / "policies" / ".rules.pdp.swp").write_text("junk")
    files = read_files(bundle)
    assert sorted(files.files) == [
        "bundle.toml",
        "policies/roles.pdp",
        "policies/rules.pdp",
        "policies/schema.pdp",
        "tests/saas.test.toml",
        "tuples/sharing.jsonl",
    ]
    assert "all" not in {r.name for r in load_bundle(bundle).policy.rules}


def test_an_empty_policy_file_is_an_error(bundle: Path) -> None:
    (bundle / "policies" / "rules.pdp").write_text("")
    assert _codes(bundle) == {"empty_policy_file"}
    (bundle / "policies" / "rules.pdp").write_text("// rules moved elsewhere\n")
    load_bundle(bundle)  # a comment says the file is meant to hold nothing


# -- bundle.toml values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('settings = "x"\n', "`settings` must be a table"),
        ("settings = [1]\n", "`settings` must be a table"),
        ("name = 1\n", "`name` must be a non-empty string"),
        ("revision = [1]\n", "`revision` must be a string or an integer"),
        ("[settings]\ncache_ttl_seconds = true\n", "cache_ttl_seconds"),
        ("[settings]\ncache_ttl_seconds = nan\n", "cache_ttl_seconds"),
        ("[settings]\ncache_ttl_seconds = inf\n", "cache_ttl_seconds"),
        ("[settings]\nmax_depth = true\n", "max_depth"),
        ('[settings]\nfail_open = ":"\n', "fail_open"),
        ('[settings]\nfail_open = [":read", "document:", "a:b:c", 3]\n', "fail_open"),
    ],
)
def test_every_malformed_bundle_toml_value_is_a_diagnostic(
    bundle: Path, toml: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (bundle / "bundle.toml").write_text(toml)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)
    assert pdp_main(["validate", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "error[manifest_error]" in err
    assert "Traceback" not in err


def test_an_unknown_setting_is_a_warning(bundle: Path) -> None:
    (bundle / "bundle.toml").write_text('name = "saas"\n[settings]\ncache_tll_seconds = 2\n')
    [warning] = load_bundle(bundle).warnings
    assert "unknown setting `settings.cache_tll_seconds`" in warning.message


# -- the manifest ------------------------------------------------------------------------------


def test_a_built_manifest_lists_every_file_and_loads(bundle: Path) -> None:
    before = load_bundle(bundle).revision
    _build(bundle)
    listed = bundle_manifest.parse_bytes((bundle / ".manifest.json").read_bytes())
    assert sorted(listed) == sorted(read_files(bundle).files)
    assert load_bundle(bundle).revision == before  # the manifest is not content


def test_missing_extra_and_changed_files_are_refused_by_name(bundle: Path) -> None:
    _build(bundle)
    (bundle / "tuples" / "sharing.jsonl").unlink()
    (bundle / "policies" / "more.pdp").write_text("// more\n")
    rules = bundle / "policies" / "rules.pdp"
    rules.write_text(rules.read_text().replace("forbid", "permit", 1))
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    found = {(d.code, Path(d.loc.file).name) for d in info.value.diagnostics}
    assert found == {
        ("manifest_file_missing", "sharing.jsonl"),
        ("manifest_file_extra", "more.pdp"),
        ("manifest_file_changed", "rules.pdp"),
    }


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"files": [{"name": "../x", "hash": "' + b"0" * 64 + b'"}]}',
        b'{"files": [{"name": "bundle.toml", "hash": "abc"}]}',
        b'{"files": [{"name": "bundle.toml", "hash": "' + b"0" * 64 + b'", "algorithm": "MD5"}]}',
    ],
)
def test_a_malformed_manifest_is_refused(bundle: Path, content: bytes) -> None:
    (bundle / ".manifest.json").write_bytes(content)
    assert _codes(bundle) == {"manifest_invalid"}


# -- signatures --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ec", "ed25519"])
def test_a_signed_bundle_verifies_with_its_key_only(
    bundle: Path, tmp_path: Path, kind: str
) -> None:
    private, public = key_pair(tmp_path, "signer", kind)
    _, other = key_pair(tmp_path, "other", kind)
    _build(bundle, private)
    load_bundle(bundle, verify=Verifier.from_file(public))
    with pytest.raises(BundleError, match="not by the verify key"):
        load_bundle(bundle, verify=Verifier.from_file(other))


def test_an_unsigned_bundle_is_refused_when_a_key_is_set(bundle: Path, tmp_path: Path) -> None:
    _, public = key_pair(tmp_path, "signer")
    assert _codes(bundle, verify=Verifier.from_file(public)) == {"signature_missing"}
    _build(bundle)  # a manifest alone is not a signature
    assert _codes(bundle, verify=Verifier.from_file(public)) == {"signature_missing"}


def test_the_manifest_and_the_signed_list_must_agree(bundle: Path, tmp_path: Path) -> None:
    private, public = key_pair(tmp_path, "signer")
    _build(bundle, private)
    (bundle / "extra.txt").write_text("x")
    signed = (bundle / ".signatures.json").read_bytes()
    _build(bundle)  # a new unsigned manifest that lists extra.txt; the old signature put back
    (bundle / ".signatures.json").write_bytes(signed)
    assert _codes(bundle, verify=Verifier.from_file(public)) == {"manifest_invalid"}


def _token(bundle: Path) -> str:
    token: str = orjson.loads((bundle / ".signatures.json").read_bytes())["signatures"][0]
    return token


def _with_token(bundle: Path, token: str) -> None:
    (bundle / ".signatures.json").write_bytes(orjson.dumps({"signatures": [token]}))


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()


def test_a_tampered_payload_or_header_is_refused(bundle: Path, tmp_path: Path) -> None:
    private, public = key_pair(tmp_path, "signer")
    verify = Verifier.from_file(public)
    _build(bundle, private)
    header, payload, sig = _token(bundle).split(".")
    # The signed list with one hash changed: the signature no longer matches.
    listed = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    listed["files"][0]["hash"] = "0" * 64
    _with_token(bundle, f"{header}.{_b64(listed)}.{sig}")
    with pytest.raises(BundleError, match="bad signature"):
        load_bundle(bundle, verify=verify)
    # The header's alg is never trusted: `none`, or HS256 keyed with the public key.
    for alg in ("none", "HS256", "EdDSA"):
        _with_token(bundle, f"{_b64({'alg': alg})}.{payload}.{sig}")
        with pytest.raises(BundleError, match="this key verifies `ES256` only"):
            load_bundle(bundle, verify=verify)
    _with_token(bundle, f"{_b64({'alg': 'ES256', 'jku': 'https://evil'})}.{payload}.{sig}")
    with pytest.raises(BundleError, match="`jku` is not accepted"):
        load_bundle(bundle, verify=verify)
    for junk in (b"{}", b'{"signatures": []}', b'{"signatures": ["a.b"]}', b"\xff"):
        (bundle / ".signatures.json").write_bytes(junk)
        assert _codes(bundle, verify=verify) == {"signature_invalid"}


def test_keys_are_checked_for_what_they_are_used_for(tmp_path: Path) -> None:
    private, public = key_pair(tmp_path, "signer")
    with pytest.raises(KeyConfigError, match="private key"):
        Verifier.from_file(private)
    with pytest.raises(KeyConfigError, match="public key"):
        sign({}, public)
    with pytest.raises(KeyConfigError, match="cannot be read"):
        Verifier.from_file(tmp_path / "absent.pem")
    p256k = ec.generate_private_key(ec.SECP256K1())
    odd = tmp_path / "k1.pem"
    odd.write_bytes(
        p256k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyConfigError):
        Verifier.from_file(odd)
    with pytest.raises(SignatureError):
        Verifier.from_file(public)(b'{"signatures": ["x.y.z"]}')


def test_bundle_cli_keygen_build_verify(bundle: Path, tmp_path: Path) -> None:
    key = tmp_path / "bundle-key.pem"
    assert pdp_main(["bundle", "keygen", "--algorithm", "EdDSA", str(key)]) == 0
    assert pdp_main(["bundle", "keygen", str(key)]) == 1  # never overwrites a key
    assert pdp_main(["bundle", "build", str(bundle), "--sign-key", str(key)]) == 0
    pub = str(key) + ".pub"
    assert pdp_main(["bundle", "verify", str(bundle), "--verify-key", pub]) == 0
    (bundle / "policies" / "rules.pdp").write_text("// gone\n")
    assert pdp_main(["bundle", "verify", str(bundle), "--verify-key", pub]) == 1
    assert pdp_main(["bundle", "build", str(bundle)]) == 0  # re-listed: the stale signature goes
    assert not (bundle / ".signatures.json").exists()
    (bundle / "policies" / "rules.pdp").write_text("")
    assert pdp_main(["bundle", "build", str(bundle)]) == 1  # an invalid bundle is never listed
