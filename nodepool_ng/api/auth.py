"""Bearer tokens: the `Authorization` header -> the configured `ApiTokenConfig`.

Every configured secret is compared (constant time each, no early exit), so the answer's
timing says nothing about which secret, or how much of one, matched. The secret itself is
never logged or stored; callers use the token's `name`."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from nodepool_ng.api.errors import ApiError
from nodepool_ng.config.models import ApiTokenConfig

SCHEME = "bearer"


def authenticate(header: str | None, tokens: Sequence[ApiTokenConfig]) -> ApiTokenConfig:
    """The token the header carries; ApiError 401 if none or an unknown one."""
    if not header:
        raise ApiError(401, "Authorization", "an API token is required "
                       "(Authorization: Bearer <token>)")
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != SCHEME or not given.strip():
        raise ApiError(401, "Authorization", "expected Authorization: Bearer <token>")
    presented = given.strip().encode()
    found: ApiTokenConfig | None = None
    for token in tokens:
        if hmac.compare_digest(presented, token.secret.encode()):
            found = token
    if found is None:
        raise ApiError(401, "Authorization", "unknown API token")
    return found
