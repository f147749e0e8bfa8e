"""The SQL schema as SQLAlchemy Core tables, used for queries.

The database itself is created by the Alembic migrations in ``storage/migrations``; a test checks
that the migrated database and these tables agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "SCHEMA_HEAD",
    "conversations",
    "delivered",
    "members",
    "messages",
    "metadata",
    "user_conversations",
    "users",
]

#: The Alembic revision this code reads and writes.
SCHEMA_HEAD = "0001"

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("last_seen_ts", BigInteger, nullable=False),
)

conversations = Table(
    "conversations",
    metadata,
    Column("conv", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("title", Text, nullable=True),
    Column("created_ts", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("direct_key", Text, nullable=True),
    UniqueConstraint("direct_key", name="uq_conversations_direct_key"),
)

members = Table(
    "members",
    metadata,
    Column("conv", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("joined_ts", BigInteger, nullable=False),
    PrimaryKeyConstraint("conv", "user_id", name="pk_members"),
)

messages = Table(
    "messages",
    metadata,
    Column("conv", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("id", Text, nullable=False),
    Column("sender", Text, nullable=False),
    Column("cmid", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("body_is_text", Boolean, nullable=False),
    Column("ts", BigInteger, nullable=False),
    PrimaryKeyConstraint("conv", "seq", name="pk_messages"),
    UniqueConstraint("conv", "sender", "cmid", name="uq_messages_cmid"),
    UniqueConstraint("id", name="uq_messages_id"),
)

user_conversations = Table(
    "user_conversations",
    metadata,
    Column("user_id", Text, nullable=False),
    Column("conv", Text, nullable=False),
    Column("read_seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "conv", name="pk_user_conversations"),
)

delivered = Table(
    "delivered",
    metadata,
    Column("user_id", Text, nullable=False),
    Column("conv", Text, nullable=False),
    Column("device", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "conv", "device", name="pk_delivered"),
)

Index("ix_members_user", members.c.user_id)
