"""add_adapter_search_index: word-prefix search over the catalog's text, and name order.

The text is `adapter.search_text`: name, description, tags, triggers and author. The catalog
lists adapters by `lower(name)` by default; `ix_adapter_lower_name` serves that order.

SQLite: an FTS5 table `adapter_fts` (adapter_id, body) that the catalog's repository keeps in
step with `search_text`. PostgreSQL: a GIN index on `to_tsvector('simple', search_text)`.
None of these is a model table or a plain column index, so `db check` leaves them out of its
comparison (SQLite does not reflect expression indexes).

Revision ID: e1b7c9d4a6f2
Revises: d8f3a2b6c1e4
Create Date: 2026-11-24 09:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e1b7c9d4a6f2"
down_revision: str | Sequence[str] | None = "d8f3a2b6c1e4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("CREATE INDEX ix_adapter_lower_name ON adapter (lower(name), id)")
        # adapter_id is a full-text column too, so rows are found by id without a scan.
        op.execute(
            "CREATE VIRTUAL TABLE adapter_fts USING fts5("
            "adapter_id, body, tokenize = 'unicode61 remove_diacritics 2')"
        )
        op.execute(
            "INSERT INTO adapter_fts (adapter_id, body) "
            "SELECT id, coalesce(search_text, lower(name)) FROM adapter"
        )
    else:
        # INCLUDE (name) lets PostgreSQL walk the name order from the index alone.
        op.execute("CREATE INDEX ix_adapter_lower_name ON adapter (lower(name), id) INCLUDE (name)")
        op.execute(
            "CREATE INDEX ix_adapter_search_tsv ON adapter "
            "USING gin (to_tsvector('simple', coalesce(search_text, '')))"
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        op.execute("DROP TABLE adapter_fts")
    else:
        op.execute("DROP INDEX ix_adapter_search_tsv")
    op.execute("DROP INDEX ix_adapter_lower_name")
