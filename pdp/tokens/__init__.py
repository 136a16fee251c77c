"""Authentication for pdp: signing keys, access-token issue and verification, the OAuth endpoint.

The only package that imports `jwt`. The sidecar needs `Verifier.verify` -> `VerifiedSubject`
(or `InvalidToken`), and `build_tokens(TokenConfig(...))` to compose everything.
"""

from pdp.tokens.endpoint import build_token_app
from pdp.tokens.errors import InvalidToken, KeyConfigError, OAuthError, TokenError
from pdp.tokens.idp import ExternalIdentity, IdPVerifier, TrustedIdP, load_trusted_idps
from pdp.tokens.issuer import AccessTokenIssuer, IssuedToken
from pdp.tokens.keys import KeyRing, init_key_directory
from pdp.tokens.runtime import TokenConfig, TokenRuntime, build_tokens
from pdp.tokens.service import TokenService
from pdp.tokens.store import TokenStore
from pdp.tokens.subject import ADMIN_SCOPE, VerifiedSubject
from pdp.tokens.verifier import Verifier, parse_bearer

__all__ = [
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
