"""Log lines: JSON objects with the fields a collector needs, and never a token, whatever logged it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.sidecar import logs

TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
CLAIMS = st.dictionaries(
    st.sampled_from(["sub", "tenant", "scope", "jti", "x"]), TEXT, min_size=1, max_size=4
)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    try:
        yield out
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_a_json_line_has_time_level_logger_message_and_the_fields(captured: io.StringIO) -> None:
    logs.configure("info", "json", captured)
    logging.getLogger("pdp.sidecar.service").info(
        "bundle %s loaded", "saas", extra={"bundle_revision": "7", "peer": "ipv4:127.0.0.1:5"}
    )
    (line,) = captured.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "INFO"
    assert record["logger"] == "pdp.sidecar.service"
    assert record["message"] == "bundle saas loaded"
    assert (record["bundle_revision"], record["peer"]) == ("7", "ipv4:127.0.0.1:5")
    assert record["time"][:4].isdigit()


def test_an_unknown_format_or_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        logs.formatter("xml")
    with pytest.raises(ValueError, match="level"):
        logs.configure("loud", "text", io.StringIO())


@settings(max_examples=150, deadline=None)
@given(
    claims=CLAIMS,
    key=st.binary(min_size=32, max_size=64),
    before=TEXT,
    after=TEXT,
    fmt=st.sampled_from(logs.FORMATS),
    where=st.sampled_from(["message", "arg", "field", "exception", "bearer"]),
)
def test_no_token_survives_into_a_log_line(
    claims: dict[str, str], key: bytes, before: str, after: str, fmt: str, where: str
) -> None:
    token = jwt.encode(claims, key, algorithm="HS256")
    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.configure("info", fmt, out)
        log = logging.getLogger("pdp.test")
        text = f"{before} {token} {after}"
        if where == "message":
            log.warning(text)
        elif where == "arg":
            log.warning("refused %s", text)
        elif where == "field":
            log.warning("refused", extra={"detail": text})
        elif where == "bearer":
            log.warning("header was %s", f"Bearer {token}")
        else:
            try:
                raise PermissionError(text)
            except PermissionError:
                log.exception("refused")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    rendered = out.getvalue()
    assert rendered
    payload, signature = token.split(".")[1:]
    # neither the claims nor the signature, in any escaping the formats use
    for part in (payload, signature):
        assert part not in rendered
        assert part not in json.dumps(rendered)
