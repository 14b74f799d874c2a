"""`exporter seed` and `exporter token`: demo users and tools for local use and the README."""

from __future__ import annotations

from uuid import UUID

from service.api.auth import issue_token
from service.config import Settings
from service.db import connect

__all__ = ["seed", "token_for"]

USERS: tuple[tuple[str, list[str]], ...] = (
    ("exporter@example.com", ["exporter"]),
    ("admin@example.com", ["admin"]),
    ("viewer@example.com", []),
)

UPSERT_USER = """
INSERT INTO users (email, roles) VALUES ($1, $2)
ON CONFLICT (email) DO UPDATE SET roles = EXCLUDED.roles
RETURNING user_id
"""
FIND_TOOL = "SELECT tool_id FROM tool_registry WHERE owner_id = $1 AND tool_name = $2"
USER_BY_EMAIL = "SELECT user_id, roles FROM users WHERE email = $1"


async def seed(settings: Settings, records: int = 500) -> None:
    """Create the demo users and one tool of each type with records and assets, once."""
    from service import seed_data

    conn = await connect(settings)
    try:
        async with conn.transaction():
            ids: dict[str, UUID] = {}
            for email, roles in USERS:
                ids[email] = await conn.fetchval(UPSERT_USER, email, roles)
                print(f"seed: user {email} roles={','.join(roles) or '-'}")
            owner = ids["exporter@example.com"]
            for tool in seed_data.demo_tools(records):
                existing = await conn.fetchval(FIND_TOOL, owner, tool.name)
                if existing is None:
                    existing = await seed_data.insert_tool(conn, owner_id=owner, tool=tool)
                    print(f"seed: created {tool.tool_type} tool {existing} {tool.name!r}")
                else:
                    print(f"seed: {tool.tool_type} tool {existing} {tool.name!r} exists")
    finally:
        await conn.close()


async def token_for(settings: Settings, email: str, ttl_seconds: int) -> str | None:
    """A JWT for the user with this email, or None if there is none."""
    secret = settings.require_secret()
    conn = await connect(settings)
    try:
        row = await conn.fetchrow(USER_BY_EMAIL, email)
    finally:
        await conn.close()
    if row is None:
        return None
    return issue_token(secret, row["user_id"], list(row["roles"]), ttl_seconds)
