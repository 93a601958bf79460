"""converge_original_history: one head schema for both histories of the chain.

Databases built by the original LoRA Manager went through a revision 7ef61e651ef8 that
dropped the eight indexes of 952b85546fed; its a1f4d5d0b6c7 brought back only two. This
revision creates whichever of the seed's indexes are missing, and on PostgreSQL renames the
original's default primary-key names (`adapter_pkey`) to the naming convention
(`pk_adapter`), so later revisions can address every constraint by one name. It is
idempotent: on a database built by this project's chain it changes nothing.

Downgrade changes nothing: the indexes belong to 952b85546fed and a1f4d5d0b6c7, and the
conventional names are what this project's chain gives every database.

Revision ID: b7e2c4a91d30
Revises: f0a1b2c3d4e5
Create Date: 2026-11-24 08:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b7e2c4a91d30"
down_revision: str | Sequence[str] | None = "f0a1b2c3d4e5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEED_INDEXES = (
    ("ux_adapter_name_version", "adapter", ["name", "version"], True),
    ("idx_adapter_active", "adapter", ["active"], False),
    ("idx_adapter_ordinal", "adapter", ["ordinal"], False),
    ("idx_adapter_name", "adapter", ["name"], False),
    ("idx_adapter_created_at", "adapter", ["created_at"], False),
    ("idx_adapter_active_ordinal", "adapter", ["active", "ordinal"], False),
    ("idx_adapter_json_file_path", "adapter", ["json_file_path"], False),
    ("idx_adapter_updated_at", "adapter", ["updated_at"], False),
    ("idx_adapter_last_ingested_at", "adapter", ["last_ingested_at"], False),
    ("idx_deliveryjob_status", "deliveryjob", ["status"], False),
    ("idx_deliveryjob_created_at", "deliveryjob", ["created_at"], False),
    ("idx_deliveryjob_mode", "deliveryjob", ["mode"], False),
    (
        "ix_userpreference_type_value",
        "userpreference",
        ["preference_type", "preference_value"],
        False,
    ),
)

TABLES = (
    "adapter",
    "deliveryjob",
    "recommendationsession",
    "userpreference",
    "loraembedding",
    "recommendationfeedback",
)


# Renames a primary key only where it still has PostgreSQL's default name; works in --sql mode.
RENAME_PRIMARY_KEY = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = '"{table}"'::regclass AND conname = '{table}_pkey') THEN
        ALTER TABLE "{table}" RENAME CONSTRAINT "{table}_pkey" TO "pk_{table}";
    END IF;
END $$
"""


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql":
        for name, table, columns, unique in SEED_INDEXES:
            op.create_index(name, table, columns, unique=unique, if_not_exists=True)
        return
    for table in TABLES:
        op.execute(RENAME_PRIMARY_KEY.format(table=table))
    # An original catalog may be large and in use: build missing indexes without blocking writes.
    with context.autocommit_block():
        for name, table, columns, unique in SEED_INDEXES:
            op.create_index(
                name,
                table,
                columns,
                unique=unique,
                if_not_exists=True,
                postgresql_concurrently=True,
            )


def downgrade() -> None:
    """Nothing to undo: see the module docstring."""
