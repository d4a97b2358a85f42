"""Sellers' OAuth2 tokens, encrypted, shared by every gateway process, with a refresh lease.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_provider_tokens",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("token_ciphertext", sa.Text(), nullable=True),
        sa.Column("issued_at", sa.DateTime(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("lease_holder", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("ledger_provider_tokens")
