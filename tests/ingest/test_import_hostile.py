"""The importer confined to LORA_ROOTS and surviving hostile files, on both databases:
the `import` command's confinement, symlinks out of the roots, NUL characters, truncated
downloads, the command's summary, interrupted runs and writes during an import."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from lora_manager.api import create_app
from lora_manager.core.config import load_settings
from lora_manager.core.models import ImportRun
from lora_manager.ingest import runs
from lora_manager.ingest.service import Importer
from tests.support.imports import Catalog, import_cli, open_catalog, row_dict
from tests.support.library import (
    a1111_metadata,
    build_bulk_library,
    civitai_version,
    edit_json,
    kohya_metadata,
    png_bytes,
    sidecar_path,
    write_json,
    write_safetensors,
)
from tests.support.migrate import migrate
from tests.support.postgres import free_port
from tests.support.processes import serving
from tests.support.writers import Writers, call, finish_import


def run_import(
    args: list[str], env: dict[str, str], url: str, cwd: Path, roots: list[Path] | None
) -> subprocess.CompletedProcess[str]:
    """`lora-manager import ARGS` with LORA_ROOTS set to `roots` (unset when None)."""
    env = {key: value for key, value in env.items() if key != "LORA_ROOTS"}
    if roots is not None:
        env["LORA_ROOTS"] = ":".join(str(root) for root in roots)
    return import_cli(args, env, url, cwd)


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """A non-zero exit with one `error:` line naming `words`, no traceback, no summary."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout.strip() == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])


# --- 1. the import command stays inside LORA_ROOTS --------------------------------------


def test_cli_refuses_folders_outside_the_roots_and_imports_nothing(
    db_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    root, outside = tmp_path / "loras", tmp_path / "elsewhere"
    write_safetensors(root / "inside.safetensors", kohya_metadata(seed=1), seed=1)
    write_safetensors(outside / "secret.safetensors", kohya_metadata(seed=2), seed=2)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    migrate(db_url)

    for target in (outside, root / "escape", root / ".." / "elsewhere"):
        result = run_import([str(target), "--json"], cli_env, db_url, tmp_path, [root])
        assert_refused(result, str(target), "outside the library roots")

    with open_catalog(db_url, root, migrated=True) as catalog:
        assert catalog.count() == 0
    # Inside the roots it imports, through the same check.
    (root / "escape").unlink()  # links out of the roots: test_symlinks_out_of_the_roots...
    done = run_import([str(root), "--json"], cli_env, db_url, tmp_path, [root])
    assert done.returncode == 0, done.stderr
    with open_catalog(db_url, root, migrated=True) as catalog:
        assert [a.real_path for a in catalog.adapters()] == [
            str((root / "inside.safetensors").resolve())
        ]


def test_cli_without_roots_refuses_as_the_api_does(
    db_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "loras"
    write_safetensors(folder / "a.safetensors", kohya_metadata(seed=3), seed=3)
    migrate(db_url)

    for args in ([str(folder)], []):
        assert_refused(run_import(args, cli_env, db_url, tmp_path, None), "LORA_ROOTS")
    with open_catalog(db_url, folder, migrated=True) as catalog:
        assert catalog.count() == 0


# --- 4. a partial download is broken, not ok ----------------------------------------------


def test_truncated_safetensors_is_recorded_broken_with_its_reason(
    db_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "loras"
    whole = root / "whole.safetensors"
    write_safetensors(whole, kohya_metadata(seed=4), seed=4)
    partial = root / "partial.safetensors"
    data = write_safetensors(partial, kohya_metadata(seed=5), tensors=4, tensor_bytes=256, seed=5)
    partial.write_bytes(data[:-1000])
    reason = "truncated: header declares 1024 bytes of tensor data, file has 24"
    with open_catalog(db_url, root) as catalog:
        summary = catalog.run()

        assert (summary.new, summary.failed) == (1, 1)
        assert summary.failures == [{"path": str(partial), "reason": reason}]
        broken = catalog.adapter(partial)
        assert (broken.ingest_status, broken.ingest_error) == ("error", reason)
        assert catalog.adapter(whole).ingest_status == "ok"

        # A sidecar appears: the header is read again, and the file is still broken.
        write_json(sidecar_path(partial, ".json"), a1111_metadata(description="half of it"))
        catalog.run()
        again = catalog.adapter(partial)
        assert (again.ingest_status, again.ingest_error) == ("error", reason)
        assert again.description == "half of it"

        # The download completes: the same adapter, now whole.
        partial.write_bytes(data)
        catalog.run()
        fixed = catalog.adapter(partial)
        assert (fixed.id, fixed.ingest_status, fixed.ingest_error) == (broken.id, "ok", None)
        assert fixed.description == "half of it"


# --- 3. NUL characters from files are dropped, never fatal ----------------------------------


def test_nul_in_a_header_or_a_sidecar_is_stripped_and_everything_imports(
    db_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "loras"
    header_nul = root / "header-nul.safetensors"
    write_safetensors(
        header_nul,
        kohya_metadata({"modelspec.description": "before\x00after", "ss_\x00key": "v\x00"}, seed=6),
        seed=6,
    )
    sidecar_nul = root / "sidecar-nul.safetensors"
    data = write_safetensors(sidecar_nul, kohya_metadata(seed=7), seed=7)
    info = civitai_version(
        sha256=hashlib.sha256(data).hexdigest(),
        file_name=sidecar_nul.name,
        description="<p>Ink\x00 wash</p>",
        trained_words=["ink\x00wash"],
        model_name="Nul\x00 Model",
    )
    info["images"][0]["meta"]["prompt\x00"] = ["deep \x00", {"in\x00": "side\x00"}]
    write_json(sidecar_path(sidecar_nul, ".civitai.info"), info)
    assert "\\u0000" in sidecar_path(sidecar_nul, ".civitai.info").read_text()
    plain = root / "plain.safetensors"
    write_safetensors(plain, kohya_metadata(seed=8), seed=8)

    with open_catalog(db_url, root) as catalog:
        summary = catalog.run()

        assert (summary.new, summary.failed) == (3, 0), summary.failures
        for adapter in catalog.adapters():
            assert adapter.ingest_status == "ok", adapter.ingest_error
            assert "\\x00" not in repr(row_dict(adapter)), adapter.file_path
        from_header = catalog.adapter(header_nul)
        assert from_header.description == "beforeafter"
        assert from_header.extra is not None
        assert from_header.extra["safetensors"]["ss_key"] == "v"
        from_sidecar = catalog.adapter(sidecar_nul)
        assert (from_sidecar.name, from_sidecar.description) == ("Nul Model", "Ink wash")
        assert from_sidecar.trained_words == ["inkwash"]
        assert from_sidecar.extra is not None
        meta = from_sidecar.extra["civitai_info"]["images"][0]["meta"]
        assert meta["prompt"] == ["deep ", {"in": "side"}]

        # Rescans work: a changed sidecar still holding NUL, then nothing changed.
        edit_json(sidecar_path(sidecar_nul, ".civitai.info"), description="<p>Two\x00</p>")
        rescan = catalog.run()
        assert (rescan.updated, rescan.failed) == (1, 0), rescan.failures
        assert catalog.adapter(sidecar_nul).description == "Two"
        again = catalog.run()
        assert again.unchanged == again.files == 3


# --- 2. symlinks are followed into the roots only --------------------------------------------


def test_symlinks_out_of_the_roots_are_skipped_with_the_reason(db_url: str, tmp_path: Path) -> None:
    library, drive, outside = tmp_path / "loras", tmp_path / "drive2", tmp_path / "outside"
    write_safetensors(outside / "secret.safetensors", kohya_metadata(seed=11), seed=11)
    write_safetensors(outside / "dir" / "hidden.safetensors", kohya_metadata(seed=12), seed=12)
    write_json(outside / "secret.json", a1111_metadata(description="TOP SECRET"))
    (outside / "secret.png").write_bytes(png_bytes())
    model = library / "y.safetensors"
    write_safetensors(model, kohya_metadata({"modelspec.description": "mine"}, seed=13), seed=13)
    on_drive = drive / "z.safetensors"
    write_safetensors(on_drive, kohya_metadata(seed=14), seed=14)
    links = {
        library / "link.safetensors": outside / "secret.safetensors",
        library / "linkdir": outside / "dir",
        library / "y.json": outside / "secret.json",
        library / "y.preview.png": outside / "secret.png",
    }
    for link, target in links.items():
        link.symlink_to(target)
    # Followed: a link to another root, and loops (to an ancestor, to itself, and one that
    # leaves the roots and comes back) end without hanging.
    (library / "other-drive").symlink_to(drive, target_is_directory=True)
    (library / "up").symlink_to(library, target_is_directory=True)
    (library / "self.safetensors").symlink_to(library / "self.safetensors")
    (outside / "back").symlink_to(library, target_is_directory=True)
    (library / "round-trip").symlink_to(outside / "back", target_is_directory=True)

    with open_catalog(db_url, library) as catalog:
        # What a catalog holds from before this rule: everything the links reach imported.
        catalog.settings = load_settings(database_url=db_url, lora_roots=[library, drive, outside])
        assert catalog.run().new == 4
        catalog.settings = load_settings(database_url=db_url, lora_roots=[library, drive])
        summary = catalog.run()

        skips = {skip["path"]: skip["reason"] for skip in summary.skips}
        assert summary.skipped == len(skips) == len(links)
        for link, target in links.items():
            assert skips[str(link)] == (
                f"symlink to {target}, outside the library roots (LORA_ROOTS): not followed"
            )
        assert [f["reason"] for f in summary.failures] == ["symlink loop"]
        # The adapters that came through the links out of the roots are missing now.
        assert summary.missing == 2
        present = {a.real_path for a in catalog.adapters() if a.ingest_status != "missing"}
        assert present == {str(model), str(on_drive)}
        own = catalog.adapter(model)
        assert own.sidecar_state == {}
        assert own.preview_path is None
        # What the link out of the roots gave before is gone, not kept as "never blanked".
        assert (own.description, own.json_file_path) == ("mine", None)
        assert "a1111" not in (own.extra or {})
        assert "TOP SECRET" not in repr(row_dict(own))
        # Rescans report the same, and a fresh catalog never reads what the links reach.
        again = catalog.run()
        assert again.skips == summary.skips
        assert again.unchanged == again.files == 2
    fresh = tmp_path / "fresh.db"
    with open_catalog(f"sqlite:///{fresh}", library) as catalog:
        catalog.settings = load_settings(database_url=catalog.url, lora_roots=[library, drive])
        first = catalog.run()
        assert (first.new, first.skipped) == (2, len(links))
        for adapter in catalog.adapters():
            assert "TOP SECRET" not in repr(row_dict(adapter))
            assert str(outside) not in repr(row_dict(adapter))


# --- 5. the command's summary: full paths, sidecar warnings, files still broken ---------------


def test_cli_summary_lists_full_paths_warnings_skips_and_files_still_broken(
    db_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "loras"
    deep = root / ("a-folder-name-long-enough-to-overflow-any-terminal-" * 3) / "sub"
    partial = deep / "partial-download-of-a-model.safetensors"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(write_safetensors(partial, kohya_metadata(seed=21), seed=21)[:-40])
    warned = deep / "model-with-a-bad-sidecar.safetensors"
    write_safetensors(warned, kohya_metadata(seed=22), seed=22)
    sidecar_path(warned, ".civitai.info").write_text('{"id": 1,')
    link = deep / "borrowed.safetensors"
    link.symlink_to(write_outside(tmp_path / "outside" / "x.safetensors"))
    migrate(db_url)
    expected = {
        "Failed": f"  {partial}: truncated: header declares 128 bytes of tensor data, file has 88",
        "Warnings": f"  {warned}: model-with-a-bad-sidecar.civitai.info: truncated JSON",
        "Skipped": f"  {link}: symlink to {tmp_path / 'outside' / 'x.safetensors'}, outside",
    }

    for attempt in ("import", "rescan"):
        result = run_import([], cli_env, db_url, tmp_path, [root])
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout
        lines = result.stdout.splitlines()
        for title, line in expected.items():
            assert f"{title} (1):" in lines, (attempt, title, result.stdout)
            following = lines[lines.index(f"{title} (1):") + 1]
            assert following.startswith(line), (attempt, following)
    with open_catalog(db_url, root, migrated=True) as catalog:
        assert catalog.adapter(warned).ingest_status == "ok"
        assert catalog.adapter(partial).ingest_status == "error"


def write_outside(path: Path) -> Path:
    write_safetensors(path, kohya_metadata(seed=23), seed=23)
    return path


# --- 6. a run whose process died is interrupted, not running forever ---------------------------

START_AN_IMPORT = """
import time
from lora_manager.core.config import load_settings
from lora_manager.core.db import make_engine, make_session_factory
from lora_manager.ingest import runs

settings = load_settings()
factory = make_session_factory(make_engine(settings))
with factory() as session:
    run = runs.start_import(session, factory, settings, runs.choose_roots(settings, []), False)
    print(run.id, flush=True)
time.sleep(600)
"""


@contextmanager
def import_killed_while_running(
    db_url: str, cli_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Catalog, Any, str]]:
    """A run started by a process (through runs.start_import, as POST /v1/imports does) that
    was killed (SIGKILL) while running: waiting for the import lock, which this test holds.
    Yields the catalog, the held lock and the run's id."""
    root = tmp_path / "loras"
    write_safetensors(root / "a.safetensors", kohya_metadata(seed=31), seed=31)
    env = {**cli_env, "DATABASE_URL": db_url, "LORA_ROOTS": str(root)}
    with open_catalog(db_url, root) as catalog:
        lock = Importer(catalog.settings, catalog.factory, echo=lambda _: None).lock(timeout=5)
        with lock:
            process = subprocess.Popen(
                [sys.executable, "-c", START_AN_IMPORT],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert process.stdout is not None
                run_id = process.stdout.readline().strip()
                deadline = time.monotonic() + 60
                while (run := import_run(catalog, run_id)).status != "running" or not (
                    run.progress or {}
                ).get("heartbeat_at"):
                    assert time.monotonic() < deadline, run.status
                    time.sleep(0.05)
            finally:
                process.kill()
                process.wait(30)
            assert import_run(catalog, run_id).status == "running"
            yield catalog, lock, run_id


def import_run(catalog: Catalog, run_id: str) -> ImportRun:
    with catalog.factory() as session:
        run = session.get(ImportRun, run_id)
        assert run is not None
        return run


def test_a_run_left_running_by_a_killed_process_is_interrupted_at_api_start_up(
    db_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    with import_killed_while_running(db_url, cli_env, tmp_path) as (catalog, lock, run_id):
        lock.__exit__(None, None, None)  # the lock is free: no import is under way anywhere
        app = create_app(catalog.settings, migrate_on_startup=False)
        with TestClient(app) as client:
            run = client.get(f"/v1/imports/{run_id}").json()
            spec = client.get("/openapi.json").json()
    assert run["status"] == "interrupted"
    assert run["error"] == "interrupted: the process running it stopped before the end"
    assert run["finished_at"] is not None
    status = spec["components"]["schemas"]["ImportOut"]["properties"]["status"]
    assert status["enum"] == ["pending", "running", "succeeded", "failed", "interrupted"]


def test_a_silent_run_is_interrupted_while_another_import_holds_the_lock(
    db_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    with import_killed_while_running(db_url, cli_env, tmp_path) as (catalog, _lock, run_id):
        # The lock is held (an import under way): a run with a fresh heartbeat is left alone.
        assert runs.interrupt_dead_runs(catalog.factory, catalog.settings) == []
        with catalog.factory() as session:
            assert runs.recent_runs(session, 5)[0].status == "running"
            beat = runs.last_sign_of_life(import_run(catalog, run_id))
            later = beat + timedelta(seconds=runs.STALE_AFTER + 1)
            assert runs.interrupt_stale_runs(session, now=later) == [run_id]
        run = import_run(catalog, run_id)
    assert run.status == "interrupted"
    assert run.error == (
        "interrupted: no sign of life from the process running it since "
        f"{beat.isoformat(sep=' ', timespec='seconds')} UTC"
    )


# --- 7. writes while an API import runs wait their turn ---------------------------------------


def test_writes_during_an_api_import_never_fail(
    db_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Four writers PATCH and POST adapters on a running `lora-manager serve` while its
    POST /v1/imports imports 1,000 files (a dry run, then for real): each write waits its
    turn (SQLite: the busy timeout, and an importer that commits often and leaves the lock
    free), none gets a 5xx."""
    root = tmp_path / "loras"
    for seed in range(8):
        write_safetensors(root / "own" / f"m{seed}.safetensors", kohya_metadata(seed=seed))
    migrate(db_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **cli_env,
        "DATABASE_URL": db_url,
        "LORA_ROOTS": str(root),
        "QUEUE_PATH": str(tmp_path / "queue.db"),
        "LOG_LEVEL": "WARNING",
    }
    argv = ["lora-manager", "serve", "--port", str(port), "--no-worker", "--no-migrate"]
    with serving(argv, env, f"{base}/health/ready"):
        assert finish_import(base)["summary"]["new"] == 8
        ids = [adapter["id"] for adapter in call(base, "GET", "/v1/adapters")[1]["items"]]
        build_bulk_library(root, 1000)
        with Writers(base, ids, 4) as writers:
            dry = finish_import(base, dry_run=True)  # undoes each batch: no lock held longer
            run = finish_import(base)
        after = call(base, "GET", f"/v1/adapters/{ids[0]}")

    assert (dry["status"], dry["summary"]["new"]) == ("succeeded", 1000)
    assert run["status"] == "succeeded", run
    assert run["summary"]["new"] == 1000
    assert len(writers.samples) >= 20, f"only {len(writers.samples)} writes during the import"
    failed = [(status, detail) for status, _, detail in writers.samples if status != 200]
    assert failed == []
    assert after[0] == 200 and after[1]["notes"].startswith("writer ")
