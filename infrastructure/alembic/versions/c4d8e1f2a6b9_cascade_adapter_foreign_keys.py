"""cascade_adapter_foreign_keys: deleting an adapter or session never fails or leaves orphans.

The recommendation tables' foreign keys get ON DELETE CASCADE and their referencing columns
get indexes (PostgreSQL does not index them by itself, and a cascade scans them). Existing
foreign keys are found by reflection, since the original history named them differently.

Revision ID: c4d8e1f2a6b9
Revises: b7e2c4a91d30
Create Date: 2026-11-24 08:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4d8e1f2a6b9"
down_revision: str | Sequence[str] | None = "b7e2c4a91d30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, referred table)
FOREIGN_KEYS = (
    ("loraembedding", "adapter_id", "adapter"),
    ("recommendationfeedback", "session_id", "recommendationsession"),
    ("recommendationfeedback", "recommended_lora_id", "adapter"),
)
INDEXED_COLUMNS = (
    ("recommendationfeedback", "session_id"),
    ("recommendationfeedback", "recommended_lora_id"),
)
# Gives SQLite's unnamed, reflected foreign keys a name that batch mode can drop.
BATCH_CONVENTION = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


# Drops every foreign key on one column whatever its name; works in --sql mode too.
DROP_POSTGRES_FOREIGN_KEYS = """
DO $$
DECLARE fk record;
BEGIN
    FOR fk IN SELECT c.conname FROM pg_constraint c
              JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
              WHERE c.conrelid = '"{table}"'::regclass AND c.contype = 'f'
                AND a.attname = '{column}' AND array_length(c.conkey, 1) = 1
    LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', '{table}', fk.conname);
    END LOOP;
END $$
"""


def _rebuild_foreign_keys(ondelete: str | None) -> None:
    context = op.get_context()
    if context.dialect.name == "postgresql":
        for table, column, referred in FOREIGN_KEYS:
            op.execute(DROP_POSTGRES_FOREIGN_KEYS.format(table=table, column=column))
            op.create_foreign_key(
                f"fk_{table}_{column}_{referred}",
                table,
                referred,
                [column],
                ["id"],
                ondelete=ondelete,
            )
        return
    if context.as_sql:
        raise RuntimeError("SQLite foreign keys are rebuilt by reflection: run this online")
    inspector = sa.inspect(op.get_bind())
    for table in dict.fromkeys(table for table, _, _ in FOREIGN_KEYS):
        wanted = [(column, referred) for t, column, referred in FOREIGN_KEYS if t == table]
        reflected = inspector.get_foreign_keys(table)
        # SQLite rebuilds the table; reflected foreign keys have no name until given one here.
        with op.batch_alter_table(table, naming_convention=BATCH_CONVENTION) as batch:
            for column, referred in wanted:
                conventional = f"fk_{table}_{column}_{referred}"
                for fk in reflected:
                    if fk["constrained_columns"] == [column]:
                        batch.drop_constraint(fk["name"] or conventional, type_="foreignkey")
                batch.create_foreign_key(
                    conventional, referred, [column], ["id"], ondelete=ondelete
                )


def upgrade() -> None:
    _rebuild_foreign_keys("CASCADE")
    for table, column in INDEXED_COLUMNS:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column])


def downgrade() -> None:
    for table, column in reversed(INDEXED_COLUMNS):
        op.drop_index(op.f(f"ix_{table}_{column}"), table_name=table)
    _rebuild_foreign_keys(None)
