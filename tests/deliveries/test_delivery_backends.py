"""Delivery back ends against real loopback servers and real subprocesses."""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lora_manager.core.config import Settings, load_settings
from lora_manager.deliveries.backends.base import DeliveryError, DeliveryRequest
from lora_manager.deliveries.backends.cli import deliver_cli
from lora_manager.deliveries.backends.http import deliver_http, url_allowed
from lora_manager.deliveries.backends.sdnext import deliver_sdnext
from tests.support.fake_servers import (
    SDNextServer,
    WebhookServer,
    tiny_png,
)

PASSWORD = "s3cret-pa55word"


@pytest.fixture(autouse=True)
def _no_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LORA_MANAGER_ENV_FILE", str(tmp_path / "no-such.env"))
    for name in list(os.environ):
        if name.upper().startswith(("SDNEXT_", "DELIVERY_")):
            monkeypatch.delenv(name)


def make_request(**changes: Any) -> DeliveryRequest:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "prompt": "a cat, <lora:catstyle:0.8>",
        "negative_prompt": "blurry",
        "adapters": [{"id": "a1", "name": "catstyle", "weight": 0.8}],
        "params": {},
    }
    fields.update(changes)
    return DeliveryRequest(**fields)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- allow-list -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:9/hook", True),
        ("http://127.0.0.1:9/hook/sub?x=1", True),
        ("HTTP://127.0.0.1:9/hook", True),
        ("http://127.0.0.1:9/hookevil", False),
        ("http://127.0.0.1:9@evil/", False),
        ("http://127.0.0.1:9@evil/hook", False),
        ("http://user:pw@127.0.0.1:9/hook", False),
        ("http://127.0.0.1:9/hook/../admin", False),
        ("http://127.0.0.1:9/hook/%2e%2e/admin", False),
        ("http://127.0.0.1:9/hook%2F..%2Fadmin", False),
        ("http://127.0.0.1:10/hook", False),
        ("https://127.0.0.1:9/hook", False),
        ("http://127.0.0.2:9/hook", False),
        ("ftp://127.0.0.1:9/hook", False),
        ("/hook", False),
        ("not a url", False),
    ],
)
def test_url_allowed_prefix_on_path_boundary(url: str, allowed: bool) -> None:
    assert url_allowed(url, ["http://127.0.0.1:9/hook"]) is allowed


def test_url_allowed_normalises_entry_and_default_port() -> None:
    assert url_allowed("http://example.com/x/y", ["HTTP://Example.COM:80/x/"])
    assert url_allowed("http://example.com:80/anything", ["http://example.com"])
    assert not url_allowed("http://example.com.evil/x", ["http://example.com"])
    assert not url_allowed("http://example.com/x", ["http://u@example.com/"])
    assert not url_allowed("http://example.com/x", [])


# --- webhook --------------------------------------------------------------------------------


def http_settings(server: WebhookServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "delivery_http_allowlist": [server.url + "/hook"],
        "delivery_http_timeout": 5.0,
    }
    values.update(overrides)
    return load_settings(**values)


def test_http_success_posts_request_and_keeps_bounded_excerpt(webhook: WebhookServer) -> None:
    webhook.status = 201
    webhook.body = b"x" * 5000
    result = deliver_http(http_settings(webhook), make_request(), url=webhook.url + "/hook/in")

    assert result.summary["status_code"] == 201
    assert result.summary["body"] == "x" * 2000
    assert result.summary["body_truncated"] is True
    json.dumps(result.summary)
    [seen] = webhook.requests
    assert seen.path == "/hook/in"
    assert seen.json() == {
        "job_id": "job-1",
        "prompt": "a cat, <lora:catstyle:0.8>",
        "negative_prompt": "blurry",
        "adapters": [{"id": "a1", "name": "catstyle", "weight": 0.8}],
        "params": {},
    }


def test_http_url_outside_allowlist_is_never_called(webhook: WebhookServer) -> None:
    settings = http_settings(webhook)
    for url in (
        webhook.url + "/hookevil",
        webhook.url + "/other",
        webhook.url.replace("//", "//x@"),
    ):
        with pytest.raises(DeliveryError, match="URL not in DELIVERY_HTTP_ALLOWLIST") as info:
            deliver_http(settings, make_request(), url=url)
        assert info.value.transient is False
    assert webhook.requests == []


def test_http_4xx_is_permanent(webhook: WebhookServer) -> None:
    webhook.status = 404
    webhook.body = b'{"detail": "no such hook"}'
    with pytest.raises(DeliveryError, match=r"HTTP 404.*no such hook") as info:
        deliver_http(http_settings(webhook), make_request(), url=webhook.url + "/hook")
    assert info.value.transient is False
    assert info.value.status_code == 404


@pytest.mark.parametrize("status", [500, 503, 429])
def test_http_5xx_and_429_are_transient(webhook: WebhookServer, status: int) -> None:
    webhook.status = status
    with pytest.raises(DeliveryError, match=f"HTTP {status}") as info:
        deliver_http(http_settings(webhook), make_request(), url=webhook.url + "/hook")
    assert info.value.transient is True


def test_http_redirect_is_not_followed(webhook: WebhookServer) -> None:
    webhook.status = 307
    webhook.location = webhook.url + "/hook/elsewhere"
    with pytest.raises(DeliveryError, match="HTTP 307") as info:
        deliver_http(http_settings(webhook), make_request(), url=webhook.url + "/hook")
    assert info.value.transient is False
    assert [r.path for r in webhook.requests] == ["/hook"]


def test_http_connection_refused_is_transient() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    settings = load_settings(delivery_http_allowlist=[url], delivery_http_timeout=5.0)
    with pytest.raises(DeliveryError, match="unreachable") as info:
        deliver_http(settings, make_request(), url=url + "?token=abc123")
    assert info.value.transient is True
    assert "abc123" not in str(info.value)


def test_http_timeout_is_transient(webhook: WebhookServer) -> None:
    webhook.delay = 30.0  # released when the fixture ends
    settings = http_settings(webhook, delivery_http_timeout=0.3)
    with pytest.raises(DeliveryError, match="timed out") as info:
        deliver_http(settings, make_request(), url=webhook.url + "/hook?token=abc123")
    assert info.value.transient is True
    assert "abc123" not in str(info.value)


# --- local command --------------------------------------------------------------------------

ECHO_SCRIPT = (
    "import os, sys; data = sys.argv[-1] if len(sys.argv) > 1 else sys.stdin.read(); "
    "print('prompt=' + data); print('job=' + os.environ['LORA_JOB_ID']); "
    "print('neg=' + os.environ['LORA_NEGATIVE_PROMPT']); "
    "print('pw=' + os.environ.get('SDNEXT_PASSWORD', '-')); print('warn', file=sys.stderr)"
)


def cli_settings(script: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "delivery_cli_command": [sys.executable, "-c", script],
        "delivery_cli_timeout": 20.0,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.mark.parametrize("via", ["argument", "stdin"])
def test_cli_success_passes_prompt_and_environment(
    via: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDNEXT_PASSWORD", PASSWORD)
    settings = cli_settings(ECHO_SCRIPT, delivery_cli_prompt_via=via)
    result = deliver_cli(settings, make_request(prompt="a dog; rm -rf / $(x)"))

    lines = result.summary["stdout"].splitlines()
    assert lines == ["prompt=a dog; rm -rf / $(x)", "job=job-1", "neg=blurry", "pw=-"]
    assert result.summary["exit_code"] == 0
    assert result.summary["stderr"].strip() == "warn"
    assert PASSWORD not in json.dumps(result.summary)


# A command with options of its own: argparse reads "-rf x" as options and "--help" as a
# request for help (exit 0, prompt lost), unless "--" ends the options first.
ARGV_SCRIPT = """\
import argparse, json, sys
parser = argparse.ArgumentParser()
parser.add_argument("-r", action="store_true")
parser.add_argument("-f")
parser.add_argument("prompt", nargs="?")
args = parser.parse_args()
print(json.dumps({"argv": sys.argv[1:], "prompt": args.prompt, "r": args.r, "f": args.f}))
"""


@pytest.mark.parametrize("prompt", ["-rf x", "--help", "-f", "-- x"])
def test_cli_prompt_starting_with_a_dash_is_never_an_option(prompt: str, tmp_path: Path) -> None:
    script = tmp_path / "tool.py"
    script.write_text(ARGV_SCRIPT)
    settings = load_settings(delivery_cli_command=[sys.executable, str(script)])
    assert settings.delivery_cli_end_of_options == "--"
    result = deliver_cli(settings, make_request(prompt=prompt))
    seen = json.loads(result.summary["stdout"])
    assert seen == {"argv": ["--", prompt], "prompt": prompt, "r": False, "f": None}


def test_cli_end_of_options_marker_can_be_changed_or_disabled(tmp_path: Path) -> None:
    script = tmp_path / "argv.py"
    script.write_text("import json, sys; print(json.dumps(sys.argv[1:]))")
    command = [sys.executable, str(script), "--steps", "20"]

    def argv(**overrides: Any) -> list[str]:
        settings = load_settings(delivery_cli_command=command, **overrides)
        return json.loads(deliver_cli(settings, make_request(prompt="-x")).summary["stdout"])

    assert argv() == ["--steps", "20", "--", "-x"]
    assert argv(delivery_cli_end_of_options="--prompt") == ["--steps", "20", "--prompt", "-x"]
    assert argv(delivery_cli_end_of_options="") == ["--steps", "20", "-x"]
    # On stdin the prompt is no argument at all: no marker either.
    assert argv(delivery_cli_prompt_via="stdin") == ["--steps", "20"]


def test_cli_keeps_only_the_tail_of_long_output() -> None:
    script = "import sys; sys.stdout.write('a' * 100000 + 'END')"
    result = deliver_cli(cli_settings(script), make_request())
    assert len(result.summary["stdout"]) == 4000
    assert result.summary["stdout"].endswith("aEND")


def test_cli_nonzero_exit_is_permanent_with_excerpt() -> None:
    script = "import sys; print('bad prompt: missing model', file=sys.stderr); sys.exit(3)"
    with pytest.raises(DeliveryError, match="exited with code 3: bad prompt") as info:
        deliver_cli(cli_settings(script), make_request())
    assert info.value.transient is False
    assert info.value.detail["exit_code"] == 3


def test_cli_not_configured_or_missing_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError, match="DELIVERY_CLI_COMMAND is not set") as info:
        deliver_cli(load_settings(), make_request())
    assert info.value.transient is False
    settings = load_settings(delivery_cli_command=[str(tmp_path / "no-such-program")])
    with pytest.raises(DeliveryError, match="could not start") as info:
        deliver_cli(settings, make_request())
    assert info.value.transient is False


def _process_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_cli_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); "
        "print('started', flush=True); time.sleep(60)"
    )
    with pytest.raises(DeliveryError, match="timed out") as info:
        deliver_cli(cli_settings(script, delivery_cli_timeout=1.5), make_request())
    assert info.value.transient is True
    assert "started" in info.value.detail["stdout"]
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while not _process_gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_gone(child)


# --- SDNext ---------------------------------------------------------------------------------


def sdnext_settings(server: SDNextServer, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "sdnext_url": server.url + "/",
        "sdnext_timeout": 20.0,
        "results_dir": tmp_path / "results",
        "sdnext_defaults": {"steps": 25, "sampler_name": "Euler a", "width": 640},
    }
    values.update(overrides)
    return load_settings(**values)


def test_sdnext_success_saves_images_and_reports_progress(
    sdnext: SDNextServer, tmp_path: Path
) -> None:
    second = base64.b64encode(b"\xff\xd8\xff\xe0" + b"jpegdata").decode()
    sdnext.images = [base64.b64encode(tiny_png()).decode(), "data:image/jpeg;base64," + second]
    progress: list[float] = []
    settings = sdnext_settings(sdnext, tmp_path)
    request = make_request(params={"steps": 30, "seed": 42, "batch_size": 2, "hires": True})

    result = deliver_sdnext(settings, request, on_progress=progress.append)

    assert result.images == ["job-1/00.png", "job-1/01.jpg"]
    assert (tmp_path / "results" / "job-1" / "00.png").read_bytes() == tiny_png()
    assert (tmp_path / "results" / "job-1" / "01.jpg").read_bytes().startswith(b"\xff\xd8\xff")
    assert sorted(p.name for p in (tmp_path / "results" / "job-1").iterdir()) == [
        "00.png",
        "01.jpg",
    ]
    assert len(progress) >= 2
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    assert any(0 < value < 1 for value in progress)
    sent = next(r for r in sdnext.requests if r.path == "/sdapi/v1/txt2img").json()
    assert sent == {
        "prompt": "a cat, <lora:catstyle:0.8>",
        "negative_prompt": "blurry",
        "steps": 30,
        "sampler_name": "Euler a",
        "cfg_scale": 7.0,
        "width": 640,
        "height": 512,
        "seed": 42,
        "batch_size": 2,
        "n_iter": 1,
    }
    assert result.summary["ignored_params"] == ["hires"]
    assert json.loads(result.summary["info"])["seed"] == 1234
    assert result.summary["parameters"]["steps"] == 30
    json.dumps(result.summary)


def test_sdnext_auth_ok(sdnext: SDNextServer, tmp_path: Path) -> None:
    sdnext.auth = f"artist:{PASSWORD}"
    settings = sdnext_settings(sdnext, tmp_path, sdnext_username="artist", sdnext_password=PASSWORD)
    result = deliver_sdnext(settings, make_request())
    assert result.images == ["job-1/00.png"]


@pytest.mark.parametrize("password", [None, "wrong-password"])
def test_sdnext_auth_missing_or_wrong_is_permanent(
    sdnext: SDNextServer, tmp_path: Path, password: str | None
) -> None:
    sdnext.auth = f"artist:{PASSWORD}"
    extra = {"sdnext_username": "artist", "sdnext_password": password} if password else {}
    settings = sdnext_settings(sdnext, tmp_path, **extra)
    with pytest.raises(DeliveryError, match="HTTP 401") as info:
        deliver_sdnext(settings, make_request())
    assert info.value.transient is False
    assert PASSWORD not in str(info.value)
    assert "wrong-password" not in str(info.value)
    assert "Authorization" not in str(info.value)
    assert not (tmp_path / "results" / "job-1").exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 151}, "steps"),
        ({"steps": "20"}, "steps"),
        ({"steps": True}, "steps"),
        ({"width": 500}, "width"),
        ({"height": 8192}, "height"),
        ({"cfg_scale": 0.5}, "cfg_scale"),
        ({"cfg_scale": "7"}, "cfg_scale"),
        ({"batch_size": 9}, "batch_size"),
        ({"seed": "random"}, "seed"),
        ({"sampler_name": ""}, "sampler_name"),
    ],
)
def test_sdnext_bad_params_are_permanent_and_send_nothing(
    sdnext: SDNextServer, tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(DeliveryError, match=message) as info:
        deliver_sdnext(sdnext_settings(sdnext, tmp_path), make_request(params=params))
    assert info.value.transient is False
    assert sdnext.requests == []


def test_sdnext_server_error_is_transient(sdnext: SDNextServer, tmp_path: Path) -> None:
    sdnext.mode = "error500"
    with pytest.raises(DeliveryError, match=r"HTTP 500.*out of memory") as info:
        deliver_sdnext(sdnext_settings(sdnext, tmp_path), make_request())
    assert info.value.transient is True


def test_sdnext_rejects_images_that_are_not_png_jpeg_webp(
    sdnext: SDNextServer, tmp_path: Path
) -> None:
    sdnext.mode = "garbage"
    with pytest.raises(DeliveryError, match="not PNG, JPEG or WebP") as info:
        deliver_sdnext(sdnext_settings(sdnext, tmp_path), make_request())
    assert info.value.transient is False
    assert not (tmp_path / "results" / "job-1").exists()


def test_sdnext_unsafe_job_id_writes_nothing(sdnext: SDNextServer, tmp_path: Path) -> None:
    with pytest.raises(DeliveryError, match="safe folder name"):
        deliver_sdnext(sdnext_settings(sdnext, tmp_path), make_request(job_id="../escape"))
    assert sdnext.requests == []
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "results").exists()


def test_sdnext_cancel_mid_run_interrupts_server(sdnext: SDNextServer, tmp_path: Path) -> None:
    sdnext.mode = "hang"
    progress: list[float] = []

    def cancel() -> bool:
        return bool(progress)  # cancel once the run has visibly started

    with pytest.raises(DeliveryError, match=r"^cancelled$") as info:
        deliver_sdnext(
            sdnext_settings(sdnext, tmp_path),
            make_request(),
            cancel=cancel,
            on_progress=progress.append,
        )
    assert info.value.transient is False
    assert sdnext.interrupted.wait(5)
    assert "/sdapi/v1/interrupt" in [r.path for r in sdnext.requests]
    assert sdnext.txt2img_started.is_set()


def test_sdnext_connection_refused_is_transient_and_unconfigured_is_permanent(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        sdnext_url=f"http://127.0.0.1:{free_port()}",
        sdnext_username="artist",
        sdnext_password=PASSWORD,
        results_dir=tmp_path,
    )
    with pytest.raises(DeliveryError, match="unreachable") as info:
        deliver_sdnext(settings, make_request())
    assert info.value.transient is True
    assert PASSWORD not in str(info.value)

    with pytest.raises(DeliveryError, match="SDNEXT_URL is not set") as info:
        deliver_sdnext(load_settings(results_dir=tmp_path), make_request())
    assert info.value.transient is False

    with_creds = load_settings(sdnext_url=f"http://artist:{PASSWORD}@127.0.0.1:9")
    with pytest.raises(DeliveryError, match="must not contain credentials") as info:
        deliver_sdnext(with_creds, make_request())
    assert PASSWORD not in str(info.value)
