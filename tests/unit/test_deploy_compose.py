"""docker-compose.yml, checked statically (no Docker engine here): it parses, every service has
an image or a build, every `depends_on` names a service whose condition it can meet, long-running
services have health checks, host ports don't clash, two workers without fixed ports, and the
export service's settings are ones service/config.py reads and accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.cli import build_parser
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
EXPORTER_SERVICES = ("migrate", "api", "worker")
AWS_VARIABLES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION"})
CONDITIONS = frozenset({"service_started", "service_healthy", "service_completed_successfully"})


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = load()["services"]
    return found


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with VAR unset: the default."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def is_one_shot(service: dict[str, Any]) -> bool:
    return bool(service.get("restart", "no") == "no")


def dependencies(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on", {})
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def host_ports(service: dict[str, Any]) -> list[int]:
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            if "published" in port:
                ports.append(int(port["published"]))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) >= 2:  # HOST:CONTAINER or IP:HOST:CONTAINER; a bare CONTAINER gets a random port
            ports.append(int(parts[-2]))
    return ports


def settings_of(env: dict[str, str]) -> Settings:
    values = {
        key.removeprefix("EXPORTER_").lower(): value
        for key, value in env.items()
        if key.startswith("EXPORTER_")
    }
    return Settings.model_validate(values)  # the values given only, no environment or .env


def test_compose_parses_and_every_service_has_an_image_or_a_build() -> None:
    found = services()
    assert {
        "postgres",
        "rabbitmq",
        "minio",
        "minio-init",
        "prometheus",
        "grafana",
        *EXPORTER_SERVICES,
    } <= set(found)
    for name, service in found.items():
        assert "image" in service or "build" in service, name
    assert found["postgres"]["image"].startswith("postgres:16")
    assert found["rabbitmq"]["image"].startswith("rabbitmq:3.13-management")
    images = {found[name]["image"] for name in EXPORTER_SERVICES}
    assert len(images) == 1, "api, worker and migrate run one image"


def test_every_dependency_exists_with_a_condition_it_can_meet() -> None:
    found = services()
    for name, service in found.items():
        for target, condition in dependencies(service).items():
            assert target in found, f"{name} depends on unknown service {target}"
            assert condition in CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                check = found[target].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), f"{name} waits for {target}'s health"
            if condition == "service_completed_successfully":
                assert is_one_shot(found[target]), f"{name} waits for {target} to finish, but it restarts"

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        for target in dependencies(found[name]):
            visit(target, (*path, name))

    for name in found:
        visit(name, ())


def test_exporter_services_start_after_migrations_broker_and_bucket() -> None:
    found = services()
    assert dependencies(found["migrate"]) == {"postgres": "service_healthy"}
    for name in ("api", "worker"):
        assert dependencies(found[name]) == {
            "postgres": "service_healthy",
            "migrate": "service_completed_successfully",
            "rabbitmq": "service_healthy",
            "minio-init": "service_completed_successfully",
        }


def test_long_running_services_have_health_checks() -> None:
    long_running = {name: s for name, s in services().items() if not is_one_shot(s)}
    assert set(long_running) >= {"postgres", "rabbitmq", "minio", "api", "worker", "prometheus", "grafana"}
    for name, service in long_running.items():
        check = service.get("healthcheck", {})
        assert not check.get("disable"), name
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert len(check["test"]) > 1, name


def test_host_ports_do_not_clash_and_workers_have_none() -> None:
    seen: dict[int, str] = {}
    for name, service in services().items():
        for port in host_ports(service):
            assert port not in seen, f"host port {port}: {seen.get(port)} and {name}"
            seen[port] = name
    assert seen[8000] == "api"
    assert "ports" not in services()["worker"], "replicas cannot share a fixed host port"


def test_host_port_parsing_sees_every_form() -> None:
    service = {"ports": ["8000:8000", "127.0.0.1:9000:9000/tcp", "1234", {"target": 1, "published": "80"}]}
    assert host_ports(service) == [8000, 9000, 80]


def test_two_workers() -> None:
    assert services()["worker"]["deploy"]["replicas"] == 2


def unknown_variables(env: dict[str, str]) -> list[str]:
    """Variables the service would ignore (Settings ignores unknown EXPORTER_* names)."""
    fields = set(Settings.model_fields)
    return [
        key
        for key in env
        if not (key.startswith("EXPORTER_") and key.removeprefix("EXPORTER_").lower() in fields)
        and key not in AWS_VARIABLES
    ]


def test_exporter_settings_are_known_and_valid() -> None:
    for name in EXPORTER_SERVICES:
        env = environment(services()[name])
        assert unknown_variables(env) == [], name
        settings = settings_of(env)
        assert settings.http_host == "0.0.0.0"  # noqa: S104 (containers must listen on every interface)
        assert settings.storage_url == "s3://exports/packages"
        assert settings.storage_endpoint_url == "http://minio:9000"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(env)
        assert "change-me" in settings.jwt_secret, "the local JWT secret must say it is a placeholder"
        assert settings.require_secret()


def test_misspelt_or_invalid_settings_would_be_caught() -> None:
    env = {"EXPORTER_STORAGE_URLS": "s3://x", "AWS_REGIN": "x", "EXPORTER_HTTP_PORT": "1", "AWS_REGION": "x"}
    assert unknown_variables(env) == ["EXPORTER_STORAGE_URLS", "AWS_REGIN"]
    with pytest.raises(ValueError):
        settings_of({"EXPORTER_DATABASE_URL": "mysql://x"})


def test_credentials_agree_between_services() -> None:
    found = services()
    env = environment(found["api"])
    postgres = environment(found["postgres"])
    database = urlsplit(env["EXPORTER_DATABASE_URL"])
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert (database.username, database.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert database.path == "/" + postgres["POSTGRES_DB"]
    rabbit = environment(found["rabbitmq"])
    amqp = urlsplit(env["EXPORTER_AMQP_URL"])
    assert (amqp.hostname, amqp.port) == ("rabbitmq", 5672)
    assert (amqp.username, amqp.password) == (
        rabbit["RABBITMQ_DEFAULT_USER"],
        rabbit["RABBITMQ_DEFAULT_PASS"],
    )
    minio = environment(found["minio"])
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )
    for name in EXPORTER_SERVICES:
        assert environment(found[name]) == env, f"{name} has other settings than api"


def test_minio_init_creates_the_bucket_the_service_uses() -> None:
    found = services()
    env = environment(found["api"])
    bucket = urlsplit(env["EXPORTER_STORAGE_URL"]).netloc
    init = found["minio-init"]
    command = init["entrypoint"] + init.get("command", [])
    assert command[:3] == ["mc", "mb", "--ignore-existing"]
    alias, created = command[3].split("/", 1)
    assert created == bucket
    host = urlsplit(environment(init)[f"MC_HOST_{alias}"])
    assert f"{host.scheme}://{host.hostname}:{host.port}" == env["EXPORTER_STORAGE_ENDPOINT_URL"]
    assert (host.username, host.password) == (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


def test_commands_are_exporter_commands() -> None:
    found = services()
    assert found["migrate"]["command"] == ["migrate", "up"]
    assert found["api"]["command"] == ["api"]
    assert found["worker"]["command"] == ["worker"]
    for name in EXPORTER_SERVICES:
        build_parser().parse_args(found[name]["command"])


def test_health_checks_call_the_port_each_service_listens_on() -> None:
    found = services()
    for name, setting, path in (
        ("api", "EXPORTER_HTTP_PORT", "/readyz"),
        ("worker", "EXPORTER_METRICS_PORT", "/readyz"),
    ):
        port = environment(found[name])[setting]
        assert f"http://127.0.0.1:{port}{path}" in " ".join(found[name]["healthcheck"]["test"]), name


def test_bind_mounts_exist_in_the_repository() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
