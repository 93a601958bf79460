"""The deployment files, checked without Docker or a cluster: the Compose file against the
Compose specification's JSON schema, the Kubernetes manifests against Kubernetes' own schemas
(kubernetes-validate, strict, offline), and the wiring between them, the Dockerfile, the
scripts and the example CI/CD workflow: the order postgres healthy → migrate → api → worker."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.support.processes import DOCKER_DIR, REPO_ROOT

K8S_DIR = REPO_ROOT / "infrastructure" / "k8s"
COMPOSE_FILE = DOCKER_DIR / "docker-compose.yml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
BACKEND_ENV = DOCKER_DIR / "backend.env"
CI_EXAMPLE = REPO_ROOT / "infrastructure" / "ci" / "deploy-example.yml"
# The Compose specification's schema, vendored (Apache-2.0: see compose-spec.NOTICE.txt).
COMPOSE_SCHEMA = REPO_ROOT / "tests" / "data" / "compose-spec.json"

# The oldest Kubernetes minor still widely offered by hosted clusters, and the newest whose
# schemas kubernetes-validate ships (they are package data: no network needed).
K8S_VERSIONS = ("1.32", "1.37")

IMAGE = "lora-manager:latest"
IN_IMAGE_DOCKER_DIR = "/app/infrastructure/docker/"
SCRIPTS = ("start-api.sh", "migrate.sh", "health-check.sh")
DATABASE_URL_LINE = "DATABASE_URL=postgresql+psycopg://postgres:postgres@postgres:5432/lora"
APP_SERVICES = ("api", "worker", "migrate")
MANIFESTS = {
    "secret.yaml": ("Secret", "lora-manager-db"),
    "api-deployment.yaml": ("Deployment", "lora-manager-api"),
    "worker-deployment.yaml": ("Deployment", "lora-manager-worker"),
    "migrate-job.yaml": ("Job", "lora-manager-migrate"),
    "service.yaml": ("Service", "lora-manager-api"),
    "results-pvc.yaml": ("PersistentVolumeClaim", "lora-manager-results"),
}
COMPOSE_CMD = "docker compose -f infrastructure/docker/docker-compose.yml"
MIGRATE_CMD = f"{COMPOSE_CMD} --profile migration run --rm migrate"
ROLLOUT_CMD = f"{COMPOSE_CMD} up -d api worker"


# -- helpers -------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


def services() -> dict[str, Any]:
    return compose()["services"]


def manifest(name: str) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all((K8S_DIR / name).read_text()) if d]
    assert len(documents) == 1, f"{name}: expected one document, found {len(documents)}"
    return documents[0]


def pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    return resource["spec"]["template"]["spec"]


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(resource)
    return spec.get("initContainers", []) + spec["containers"]


def container(resource: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    listed = pod_spec(resource).get("initContainers" if init else "containers", [])
    matches = [c for c in listed if c["name"] == name]
    assert len(matches) == 1, f"no single {'init ' if init else ''}container {name!r}"
    return matches[0]


def env_of(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in item.get("env", [])}


def parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            values[key.strip()] = value
    return values


def env_files(service: dict[str, Any]) -> list[str]:
    value = service.get("env_file", [])
    entries = [value] if isinstance(value, str | dict) else value
    return [e["path"] if isinstance(e, dict) else e for e in entries]


def depends_condition(service: dict[str, Any], dependency: str) -> str | None:
    depends = service.get("depends_on", {})
    if isinstance(depends, list):  # short syntax: started, not healthy
        return "service_started" if dependency in depends else None
    return (depends.get(dependency) or {}).get("condition", "service_started")


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def seconds(duration: str | int | float) -> float:
    """A Compose/Dockerfile duration such as 1m30s, 60s or 500ms, in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def dockerfile_stages(text: str) -> list[Stage]:
    """The Dockerfile's stages with their instructions (comments dropped, lines joined)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=words[0]))
        elif keyword != "ARG" or stages:
            assert stages, f"instruction before the first FROM: {line}"
            stages[-1].instructions.append((keyword, args))
    return stages


def stage_named(stages: list[Stage], name: str) -> Stage:
    matches = [s for s in stages if s.name == name]
    assert len(matches) == 1, f"no single Dockerfile stage {name!r}"
    return matches[0]


def stage_chain(stages: list[Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    chain = [stage_named(stages, name)]
    names = {s.name for s in stages}
    while chain[0].base in names:
        chain.insert(0, stage_named(stages, chain[0].base))
    return chain


def effective_user(stages: list[Stage], name: str) -> str:
    users = [u for stage in stage_chain(stages, name) for u in stage.all("USER")]
    return users[-1] if users else "root"


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec (JSON) form: {args}"
    return value


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore excludes `path` (relative to the context): last match wins."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern[3:])
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates) or (
            pattern.startswith("**/") and any(fnmatch.fnmatchcase(p, pattern[3:]) for p in parts)
        ):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def workflow_commands() -> list[str]:
    """The shell lines of every `run:` step, in order (continued lines joined)."""
    workflow = load_yaml(CI_EXAMPLE)
    commands: list[str] = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            script = step.get("run", "").replace("\\\n", " ")
            for line in script.splitlines():
                if line.strip() and not line.strip().startswith("#"):
                    commands.append(" ".join(line.split()))
    return commands


def script_references() -> dict[str, set[str]]:
    """Every /app/infrastructure/docker/X.sh named by a deployment file, by file."""
    sources = [
        COMPOSE_FILE,
        DOCKERFILE,
        CI_EXAMPLE,
        *sorted(K8S_DIR.glob("*.yaml")),
    ]
    pattern = re.compile(re.escape(IN_IMAGE_DOCKER_DIR) + r"([\w.-]+\.sh)")
    return {p.name: set(pattern.findall(p.read_text())) for p in sources}


# -- Docker Compose ------------------------------------------------------------------------


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # The spec declares draft-07 under an address jsonschema does not know; say it plainly.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    validator = compose_validator()
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert errors == []
    assert "version" not in compose(), "the `version:` key is obsolete in the Compose spec"
    assert set(services()) >= {"postgres", "redis", *APP_SERVICES}


def test_compose_schema_rejects_a_broken_file() -> None:
    """The schema check above has teeth: a misspelt key and a wrong type are caught."""
    broken = compose()
    broken["services"]["api"]["depends_onn"] = ["postgres"]
    broken["services"]["worker"]["restart"] = False  # what an unquoted `no` becomes
    assert len(list(compose_validator().iter_errors(broken))) >= 2


def test_postgres_health_check_asks_over_tcp() -> None:
    postgres = services()["postgres"]
    test = postgres["healthcheck"]["test"]
    assert isinstance(test, list) and test[0] == "CMD-SHELL"
    assert "pg_isready -h 127.0.0.1" in test[1]
    for key in ("interval", "timeout", "retries", "start_period"):
        assert key in postgres["healthcheck"], key
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


def test_redis_health_check_pings() -> None:
    test = services()["redis"]["healthcheck"]["test"]
    assert "redis-cli" in test and "ping" in test


def test_api_waits_for_healthy_postgres_and_has_a_start_period() -> None:
    api = services()["api"]
    assert depends_condition(api, "postgres") == "service_healthy"
    assert depends_condition(api, "redis") == "service_healthy"
    healthcheck = api["healthcheck"]
    assert seconds(healthcheck["start_period"]) >= 60
    assert healthcheck["test"] == ["CMD", IN_IMAGE_DOCKER_DIR + "health-check.sh"]
    assert argv(api["command"]) == [IN_IMAGE_DOCKER_DIR + "start-api.sh"]
    # Published on loopback only by default: no API key is set in backend.env.
    assert "127.0.0.1:8000:8000" in [str(p) for p in api["ports"]]
    assert api["build"]["target"] == "api"
    assert api["image"] == IMAGE


def test_worker_waits_for_a_healthy_api() -> None:
    worker = services()["worker"]
    assert depends_condition(worker, "api") == "service_healthy"
    assert argv(worker["command"]) == ["lora-manager", "worker"]
    assert worker["build"]["target"] == "runtime"
    assert "healthcheck" not in worker


def test_migrate_is_a_one_shot_service_in_the_migration_profile() -> None:
    migrate = services()["migrate"]
    assert migrate["profiles"] == ["migration"]
    assert argv(migrate["command"]) == [IN_IMAGE_DOCKER_DIR + "migrate.sh"]
    assert depends_condition(migrate, "postgres") == "service_healthy"
    assert migrate["restart"] == "no"
    assert migrate["build"]["target"] == "runtime"
    # Only the migrate service is optional: `docker compose up` starts the rest.
    assert [name for name, s in services().items() if s.get("profiles")] == ["migrate"]


def test_app_services_build_this_repository_and_read_backend_env() -> None:
    stage_names = {s.name for s in dockerfile_stages(DOCKERFILE.read_text())}
    for name in APP_SERVICES:
        service = services()[name]
        assert env_files(service) == ["backend.env"], name
        build = service["build"]
        assert (COMPOSE_FILE.parent / build["context"]).resolve() == REPO_ROOT, name
        assert (REPO_ROOT / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert build["target"] in stage_names, name
        assert service["image"].startswith("lora-manager:"), name
    assert BACKEND_ENV.is_file()


def test_backend_env_points_at_the_compose_services() -> None:
    assert DATABASE_URL_LINE in BACKEND_ENV.read_text().splitlines()
    assert "development" in BACKEND_ENV.read_text().lower()
    values = parse_env_file(BACKEND_ENV)
    assert set(values) == {
        "DATABASE_URL",
        "REDIS_URL",
        "MIGRATE_ON_STARTUP",
        "DB_WAIT_TIMEOUT",
        "RESULTS_DIR",
    }
    assert values["MIGRATE_ON_STARTUP"] == "true"
    assert values["DB_WAIT_TIMEOUT"] == "60"

    postgres_env = services()["postgres"]["environment"]
    url = make_url(values["DATABASE_URL"])
    assert url.drivername == "postgresql+psycopg"
    assert url.host == "postgres" and url.host in services()
    assert url.port == 5432
    assert url.database == postgres_env["POSTGRES_DB"]
    assert url.username == postgres_env.get("POSTGRES_USER", "postgres")
    assert url.password == postgres_env["POSTGRES_PASSWORD"]
    redis = re.fullmatch(r"redis://([\w.-]+):(\d+)/\d+", values["REDIS_URL"])
    assert redis and redis.group(1) in services() and redis.group(2) == "6379"


def test_backend_env_is_accepted_by_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from lora_manager.core.config import Settings

    for key in parse_env_file(BACKEND_ENV):
        monkeypatch.delenv(key, raising=False)
    settings = Settings(_env_file=BACKEND_ENV)  # type: ignore[call-arg]
    assert settings.database_url == DATABASE_URL_LINE.partition("=")[2]
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.migrate_on_startup is True
    assert settings.db_wait_timeout == 60


# -- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    assert len(stages) >= 2
    assert [s.name for s in stages] == ["builder", "runtime", "api"]
    assert stage_named(stages, "builder").base.startswith("python:3.11")
    assert stage_named(stages, "runtime").base.startswith("python:3.11")
    assert stage_named(stages, "api").base == "runtime"
    for name in ("runtime", "api"):
        user = effective_user(stages, name)
        assert user.split(":")[0] not in {"root", "0"}, (name, user)
    runtime = stage_named(stages, "runtime")
    assert runtime.all("USER"), "the runtime stage must set USER itself"
    assert any("--uid 10001" in run for run in runtime.all("RUN"))


def test_dockerfile_builds_wheels_and_installs_only_them() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    builder_runs = " ".join(stage_named(stages, "builder").all("RUN"))
    assert "pip wheel --no-deps --wheel-dir /wheels ." in builder_runs
    runtime_runs = " ".join(stage_named(stages, "runtime").all("RUN"))
    assert "--no-index" in runtime_runs and "/wheels" in runtime_runs
    assert "from=builder" in runtime_runs


def test_exactly_one_healthcheck_and_it_is_in_the_api_stage() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    found = [(s.name, h) for s in stages for h in s.all("HEALTHCHECK")]
    assert len(found) == 1
    name, healthcheck = found[0]
    assert name == "api"
    assert "--start-period=60s" in healthcheck
    assert exec_form(healthcheck.split("CMD", 1)[1].strip()) == [
        IN_IMAGE_DOCKER_DIR + "health-check.sh"
    ]


def test_dockerfile_runtime_and_api_defaults() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    runtime, api = stage_named(stages, "runtime"), stage_named(stages, "api")
    env = " ".join(runtime.all("ENV"))
    for setting in ("HOST=0.0.0.0", "PORT=8000", "PYTHONUNBUFFERED=1"):
        assert setting in env.split(), setting
    assert runtime.all("WORKDIR")[-1] == "/app"
    assert any(
        c.split()[-2:] == ["infrastructure/", "/app/infrastructure/"] for c in runtime.all("COPY")
    )
    assert exec_form(runtime.all("CMD")[-1]) == ["lora-manager", "worker"]
    assert exec_form(api.all("CMD")[-1]) == [IN_IMAGE_DOCKER_DIR + "start-api.sh"]
    assert "8000" in api.all("EXPOSE")


def test_build_context_keeps_what_the_dockerfile_copies() -> None:
    patterns = dockerignore_patterns()
    for excluded in (".venv", ".git", "data", ".pytest_cache", ".ruff_cache", "src/a/__pycache__"):
        assert dockerignored(excluded, patterns), excluded
    stages = dockerfile_stages(DOCKERFILE.read_text())
    sources = [
        word.rstrip("/")
        for stage in stages
        for copy in stage.all("COPY")
        if "--from=" not in copy
        for word in copy.split()[:-1]
        if not word.startswith("--")
    ]
    assert {"pyproject.toml", "README.md", "src", "infrastructure"} <= set(sources)
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert not dockerignored(source, patterns), source
    assert not dockerignored("infrastructure/docker/start-api.sh", patterns)


# -- scripts -------------------------------------------------------------------------------


def test_every_referenced_script_exists_and_is_executable() -> None:
    references = script_references()
    named = set().union(*references.values())
    assert named == set(SCRIPTS)
    assert references["docker-compose.yml"] == set(SCRIPTS)
    assert references["Dockerfile"] == {"start-api.sh", "health-check.sh"}
    assert references["api-deployment.yaml"] == {"migrate.sh", "start-api.sh"}
    for script in sorted(named):
        path = DOCKER_DIR / script
        assert path.is_file(), f"{script} is referenced but missing from infrastructure/docker"
        assert os.access(path, os.X_OK), f"{script} is not executable"
        assert path.read_text().startswith("#!"), f"{script} has no shebang"


# -- Kubernetes ----------------------------------------------------------------------------


def test_k8s_directory_holds_the_expected_manifests() -> None:
    assert sorted(p.name for p in K8S_DIR.glob("*.yaml")) == sorted(MANIFESTS)
    for filename, (kind, name) in MANIFESTS.items():
        resource = manifest(filename)
        assert (resource["kind"], resource["metadata"]["name"]) == (kind, name), filename


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("filename", sorted(MANIFESTS))
def test_k8s_manifest_is_valid(filename: str, version: str) -> None:
    validated = kubernetes_validate.validate(manifest(filename), version, strict=True)
    assert validated == version


def test_k8s_validation_is_strict() -> None:
    """The schema check above has teeth: a misplaced field fails offline validation."""
    broken = manifest("api-deployment.yaml")
    container(broken, "api")["readinesProbe"] = {"httpGet": {"path": "/", "port": 8000}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_api_deployment_migrates_in_an_init_container() -> None:
    api = manifest("api-deployment.yaml")
    assert api["spec"]["replicas"] >= 2
    migrate = container(api, "migrate", init=True)
    assert migrate["command"] == [IN_IMAGE_DOCKER_DIR + "migrate.sh"]
    assert env_of(migrate)["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "lora-manager-db",
        "key": "DATABASE_URL",
    }
    main = container(api, "api")
    assert main["command"] == [IN_IMAGE_DOCKER_DIR + "start-api.sh"]
    env = env_of(main)
    assert env["MIGRATE_ON_STARTUP"]["value"] == "false"
    assert "secretKeyRef" in env["DATABASE_URL"]["valueFrom"]


def test_api_probes_use_the_health_routes_on_the_container_port() -> None:
    api = container(manifest("api-deployment.yaml"), "api")
    ports = {p.get("name"): p["containerPort"] for p in api["ports"]}
    assert 8000 in ports.values()
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in api:
            port = api[probe]["httpGet"]["port"]
            assert ports.get(port, port) == 8000, probe


def test_workloads_run_the_image_as_uid_10001_with_resources() -> None:
    for filename in ("api-deployment.yaml", "worker-deployment.yaml", "migrate-job.yaml"):
        resource = manifest(filename)
        pod_security = pod_spec(resource).get("securityContext", {})
        for item in containers(resource):
            security = {**pod_security, **item.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, (filename, item["name"])
            assert security.get("runAsUser") == 10001, (filename, item["name"])
            assert item["image"] == IMAGE, (filename, item["name"])
            assert item["imagePullPolicy"] == "IfNotPresent", (filename, item["name"])
            resources = item.get("resources", {})
            assert resources.get("requests") and resources.get("limits"), (filename, item["name"])


def test_no_plain_text_database_url_in_workloads() -> None:
    secret = manifest("secret.yaml")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    assert "DATABASE_URL" in secret_keys
    for filename in ("api-deployment.yaml", "worker-deployment.yaml", "migrate-job.yaml"):
        resource = manifest(filename)
        for item in containers(resource):
            env = env_of(item)
            assert "DATABASE_URL" in env, (filename, item["name"])
            assert "value" not in env["DATABASE_URL"], (filename, item["name"])
            for entry in env.values():
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"], (filename, entry)
                    assert ref["key"] in secret_keys, (filename, entry)
                assert "://" not in str(entry.get("value", "")), (filename, entry)


def test_migrate_job_is_bounded() -> None:
    job = manifest("migrate-job.yaml")
    assert job["spec"]["backoffLimit"] <= 3
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert container(job, "migrate")["command"] == [IN_IMAGE_DOCKER_DIR + "migrate.sh"]


def test_api_and_worker_share_the_results_volume() -> None:
    # The worker saves SDNext images; the API serves them: both must see one folder.
    results = parse_env_file(BACKEND_ENV)["RESULTS_DIR"]
    for name in ("api", "worker"):
        assert f"results:{results}" in services()[name]["volumes"]
    for filename in ("api-deployment.yaml", "worker-deployment.yaml"):
        pod = pod_spec(manifest(filename))
        container = pod["containers"][0]
        env = {item["name"]: item.get("value") for item in container["env"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claims = {v["name"]: v.get("persistentVolumeClaim", {}) for v in pod["volumes"]}
        assert env["RESULTS_DIR"] == mounts["results"] == results
        assert claims["results"]["claimName"] == MANIFESTS["results-pvc.yaml"][1]


def test_worker_deployment_runs_the_worker() -> None:
    worker = manifest("worker-deployment.yaml")
    assert container(worker, "worker")["command"] == ["lora-manager", "worker"]
    assert "initContainers" not in pod_spec(worker)


def test_deployment_selectors_match_their_pods() -> None:
    for filename in ("api-deployment.yaml", "worker-deployment.yaml"):
        deployment = manifest(filename)
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), filename


def test_service_routes_to_the_api_pods_only() -> None:
    service = manifest("service.yaml")
    selector = service["spec"]["selector"]
    api = manifest("api-deployment.yaml")
    worker = manifest("worker-deployment.yaml")
    assert selector.items() <= api["spec"]["template"]["metadata"]["labels"].items()
    assert not selector.items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    api_ports = container(api, "api")["ports"]
    assert port["targetPort"] in [p["containerPort"] for p in api_ports] + [
        p.get("name") for p in api_ports
    ]


def test_k8s_readme_applies_files_that_exist() -> None:
    readme = (K8S_DIR / "README.md").read_text()
    applied = re.findall(r"kubectl apply((?:\s+-f\s+\S+)+)", readme)
    files = {f for group in applied for f in group.split() if f != "-f"}
    assert {f"infrastructure/k8s/{name}" for name in MANIFESTS} <= files
    for path in files:
        assert (REPO_ROOT / path).is_file(), path


# -- CI/CD example -------------------------------------------------------------------------


def test_ci_example_migrates_before_rolling_out() -> None:
    commands = workflow_commands()
    assert MIGRATE_CMD in commands
    assert ROLLOUT_CMD in commands
    assert commands.index(MIGRATE_CMD) < commands.index(ROLLOUT_CMD)
    for command in commands:
        words = shlex.split(command)
        if words[:2] == ["docker", "compose"]:
            assert (REPO_ROOT / words[words.index("-f") + 1]).resolve() == COMPOSE_FILE
    assert "migration" in services()["migrate"]["profiles"]
    assert {"api", "worker"} <= set(services())
