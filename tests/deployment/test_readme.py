"""The README matches the code: every setting is documented, every route it lists exists."""

from __future__ import annotations

import re

from lora_manager.api import create_app
from lora_manager.core.config import Settings, load_settings
from tests.support.processes import DOCKER_DIR, REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
MIGRATIONS_DOC = (DOCKER_DIR / "MIGRATIONS.md").read_text()


def _shape(path: str) -> str:
    """/v1/adapters/{adapter_id} and /v1/adapters/{id} are the same route."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", README + MIGRATIONS_DOC))
    prefixes = {name.rstrip("*_") for name in re.findall(r"`([A-Z][A-Z0-9_]*_\*)`", README)}
    missing = [
        name.upper()
        for name in Settings.model_fields
        if name.upper() not in documented
        and not any(name.upper().startswith(prefix) for prefix in prefixes)
    ]
    assert missing == []


def test_every_listed_route_exists(sqlite_url: str) -> None:
    app = create_app(load_settings(database_url=sqlite_url), migrate_on_startup=False)
    served = {
        (method.upper(), _shape(path))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    first_cells = re.findall(r"^\| (`(?:GET|POST|PUT|PATCH|DELETE)[^|]*)\|", README, flags=re.M)
    listed: list[tuple[str, str]] = []
    for cell in first_cells:
        methods, base = "", ""
        for chunk in re.findall(r"`([^`]+)`", cell):
            if " " in chunk:  # "GET/PATCH /v1/x": new methods and path
                methods, base = chunk.split(" ", 1)
                path = base
            elif chunk.startswith("/"):  # "/deactivate": same methods, last segment replaced
                path = base.rsplit("/", 1)[0] + chunk
            else:  # a word about the route ("with `deliver`")
                continue
            listed += [(method, path) for method in methods.split("/")]
    assert len(listed) > 25
    unknown = [
        f"{method} {path}" for method, path in listed if (method, _shape(path)) not in served
    ]
    assert unknown == []
