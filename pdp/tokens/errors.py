"""The token package's exceptions; messages never carry a token, a secret or key material.

TokenError(Exception)
 ├── InvalidToken               a credential that must be answered with UNAUTHENTICATED
 │                              (also pdp.errors.Unauthenticated, and a ValueError)
 ├── KeyConfigError             the key directory or a trusted-IdP file is unusable
 │                              (also pdp.errors.Refused)
 ├── TokenStoreUnavailable      the token store cannot be reached now (also
 │                              pdp.errors.Unavailable); verification goes on from memory
 └── OAuthError                 a token-endpoint failure carrying its RFC 6749 error code
"""

from __future__ import annotations

from pdp.errors import Refused, Unauthenticated, Unavailable


class TokenError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidToken(TokenError, Unauthenticated, ValueError):
    """The token is not acceptable: malformed, forged, expired, revoked or foreign.

    The message is a short fixed reason (`expired`, `unknown kid`, ...) and never the token.
    """


class KeyConfigError(TokenError, Refused):
    """A key file, the key directory or a trusted-IdP configuration cannot be used."""


class TokenStoreUnavailable(TokenError, Unavailable):
    """The token store cannot be reached or did not commit; the message names it without its
    password."""


class OAuthError(TokenError):
    """An error the token endpoint answers with: an RFC 6749 code, a description, an HTTP status."""

    def __init__(self, code: str, description: str = "", status: int = 400) -> None:
        super().__init__(f"{code}: {description}" if description else code)
        self.code = code
        self.description = description
        self.status = status
