"""Pins the public surface of `pdp.tokens`: the sidecar codes against exactly these names."""

from __future__ import annotations

import pdp.tokens


def test_exported_members() -> None:
    assert sorted(pdp.tokens.__all__) == [
        "ADMIN_SCOPE",
        "AccessTokenIssuer",
        "ExternalIdentity",
        "IdPVerifier",
        "InvalidToken",
        "IssuedToken",
        "KeyConfigError",
        "KeyRing",
        "OAuthError",
        "TokenConfig",
        "TokenError",
        "TokenRuntime",
        "TokenService",
        "TokenStore",
        "TrustedIdP",
        "VerifiedSubject",
        "Verifier",
        "build_token_app",
        "build_tokens",
        "init_key_directory",
        "load_trusted_idps",
        "parse_bearer",
    ]
    for name in pdp.tokens.__all__:
        assert getattr(pdp.tokens, name) is not None


def test_invalid_token_is_a_value_error_and_a_token_error() -> None:
    assert issubclass(pdp.tokens.InvalidToken, ValueError)
    assert issubclass(pdp.tokens.InvalidToken, pdp.tokens.TokenError)
