"""Bearer JWT authentication (HS256) and the owner-or-admin rule."""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID

import jwt

from service.errors import Forbidden, Unauthenticated

__all__ = ["Principal", "authenticate", "issue_token"]

CREATE_ROLES = frozenset({"exporter", "admin"})


@dataclass(frozen=True)
class Principal:
    user_id: UUID
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def require_create(self) -> None:
        if not self.roles & CREATE_ROLES:
            raise Forbidden("creating exports needs the role 'exporter' or 'admin'", code="forbidden")

    def can_see(self, owner_id: UUID | None) -> bool:
        return self.is_admin or (owner_id is not None and owner_id == self.user_id)


def issue_token(secret: str, user_id: UUID, roles: list[str], ttl_seconds: int = 3600) -> str:
    now = int(time.time())
    claims = {"sub": str(user_id), "roles": roles, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm="HS256")


def authenticate(secret: str, authorization: str | None) -> Principal:
    """The caller behind an `Authorization: Bearer …` header, or Unauthenticated."""
    if not authorization:
        raise Unauthenticated("missing bearer token", code="missing_token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("expected 'Authorization: Bearer <token>'", code="invalid_token")
    try:
        claims = jwt.decode(token.strip(), secret, algorithms=["HS256"], options={"require": ["sub", "exp"]})
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired", code="token_expired") from None
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}", code="invalid_token") from None
    roles = claims.get("roles", [])
    try:
        user_id = UUID(str(claims["sub"]))
    except ValueError:
        raise Unauthenticated("token subject is not a user id", code="invalid_token") from None
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise Unauthenticated("token roles must be a list of strings", code="invalid_token")
    return Principal(user_id=user_id, roles=frozenset(roles))
