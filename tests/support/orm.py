"""Rows changed behind the API's back, as a worker or an import would change them."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker


def edit_row(sessions: sessionmaker[Session], model: type[Any], key: str, **values: Any) -> None:
    """Set these columns of the `model` row whose primary key is `key`, and commit."""
    with sessions() as session:
        row = session.get(model, key)
        assert row is not None, f"no {model.__name__} {key}"
        for name, value in values.items():
            setattr(row, name, value)
        session.commit()
