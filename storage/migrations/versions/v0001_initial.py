"""Initial schema: users, conversations, members, messages, user conversations, delivered.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("last_seen_ts", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "conversations",
        sa.Column("conv", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=True),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("direct_key", sa.Text, nullable=True),
        sa.UniqueConstraint("direct_key", name="uq_conversations_direct_key"),
    )
    op.create_table(
        "members",
        sa.Column("conv", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("joined_ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("conv", "user_id", name="pk_members"),
    )
    op.create_index("ix_members_user", "members", ["user_id"])
    op.create_table(
        "messages",
        sa.Column("conv", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("cmid", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("body_is_text", sa.Boolean, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("conv", "seq", name="pk_messages"),
        sa.UniqueConstraint("conv", "sender", "cmid", name="uq_messages_cmid"),
        sa.UniqueConstraint("id", name="uq_messages_id"),
    )
    op.create_table(
        "user_conversations",
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("conv", sa.Text, nullable=False),
        sa.Column("read_seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "conv", name="pk_user_conversations"),
    )
    op.create_table(
        "delivered",
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("conv", sa.Text, nullable=False),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "conv", "device", name="pk_delivered"),
    )


def downgrade() -> None:
    for table in (
        "delivered",
        "user_conversations",
        "messages",
        "members",
        "conversations",
        "users",
    ):
        op.drop_table(table)
