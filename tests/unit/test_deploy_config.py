"""docker-compose.yml, helm/prism and the Dockerfile, checked against the code.

No Docker engine, Kubernetes cluster or helm binary runs on the project's machines, so none of these
files can be started here, and Helm's Go templates cannot be rendered by anything the project
installs (`kubectl kustomize` inflates charts only by calling a helm binary). What can be checked
without them is checked here: the files parse; every service of ``prism serve`` is deployed by both; every
environment variable they set is a real field of that service's pydantic Settings (or of
CommonSettings); their ports are the Settings defaults; health checks test readiness for real (the
compose one-liners are run against real loopback servers); the gateway's upstream addresses point at
deployed services; ``values.yaml`` satisfies ``values.schema.json``; the templates use only values
that exist; the image runs as a non-root user; grace periods outlast the services' own; the OpenTelemetry
variables are the ones the code reads (and, set as the files set them, make it export to a loopback
collector); trained models are mounted where PRISM_MODELS_DIR points, into the services whose code
loads them; the Qdrant collection layout reaches the services' settings. Where the optional
``helm-python-sdk`` (Helm's Go SDK as a C library) is importable, the chart is also linted and
rendered by Helm itself and the rendered objects are checked; otherwise those tests skip.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import importlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
import yaml

from prism.cli import SERVICES
from prism.index import IndexedServiceSettings
from prism.settings import CommonSettings, ServiceSettings
from prism.storage import StoreSettings
from prism.training.heads import HEAD_WEIGHTS_FILE, MANIFEST_FILE

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "prism"
TEMPLATES = CHART / "templates"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"


# ------------------------------------------------------------------------------------ the code side


def settings_class(service: str) -> type[ServiceSettings]:
    """The Settings class of a ``prism serve`` service (``services.<pkg>.settings.Settings``)."""
    package = SERVICES[service].rsplit(".", 1)[0]
    cls = importlib.import_module(f"{package}.settings").Settings
    assert issubclass(cls, ServiceSettings)
    return cls  # type: ignore[no-any-return]


def env_prefix(cls: type[Any]) -> str:
    prefix = cls.model_config.get("env_prefix", "")
    assert prefix.startswith("PRISM_") and prefix.endswith("_"), cls
    return str(prefix)


def env_name(cls: type[Any], field: str) -> str:
    return f"{env_prefix(cls)}{field}".upper()


STORE_USERS = {"ingest", "gateway"}  # services that open the object store (StoreSettings, PRISM_STORE_*)
ENCODERS = {"text-encoder", "image-encoder", "video-encoder"}
# Upstreams a service runs without: the gateway serves text and photo search while the video encoder
# is down (only video queries fail), so compose starts it first but does not wait for it to be healthy.
OPTIONAL_UPSTREAMS = {"PRISM_GATEWAY_VIDEO_ENCODER_ADDRESS"}
# Encoders scale on CPU (GPU in production); ingest workers on load. The gateway runs a fixed replica
# count and fusion is the single writer of the collection.
AUTOSCALED = ENCODERS | {"ingest"}


def otel_env() -> set[str]:
    """OTEL_* names the code reads: prism/tracing.py itself, and the OpenTelemetry SDK objects it builds
    (TracerProvider without a sampler reads OTEL_TRACES_SAMPLER(_ARG); Resource.create reads
    OTEL_RESOURCE_ATTRIBUTES). test_*_tracing_* run the code with them to show they take effect."""
    from opentelemetry.sdk import environment_variables as sdk

    source = (REPO / "shared" / "prism" / "tracing.py").read_text(encoding="utf-8")
    names = set(re.findall(r'os\.environ\.get\("(OTEL_[A-Z_]+)"', source))
    assert {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"} <= names, names
    assert "TracerProvider(resource=Resource.create(" in source and "sampler=" not in source
    return names | {sdk.OTEL_TRACES_SAMPLER, sdk.OTEL_TRACES_SAMPLER_ARG, sdk.OTEL_RESOURCE_ATTRIBUTES}


def model_users() -> set[str]:
    """Services whose code loads the trained models of PRISM_MODELS_DIR (directly or via the image head)."""
    users = set()
    for service, module in SERVICES.items():
        folder = REPO / Path(*module.split(".")[:-1])
        if any(re.search(r"\bmodels_dir\b|\bload_heads\(", f.read_text(encoding="utf-8")) for f in folder.glob("*.py")):
            users.add(service)
    assert users == {"image-encoder", "video-encoder", "fusion", "gateway"}, users  # the text space needs none
    return users


MODELS_ENV = "PRISM_MODELS_DIR"


def valid_env(service: str) -> set[str]:
    """Environment variable names the service reads: its Settings, CommonSettings, StoreSettings, OTEL_*."""
    names = set(otel_env())
    classes: list[type[Any]] = [settings_class(service), CommonSettings]
    if service in STORE_USERS:
        classes.append(StoreSettings)
    for cls in classes:
        assert not cls.model_config.get("case_sensitive"), cls
        names |= {env_name(cls, field) for field in cls.model_fields}
    return names


def defaults(service: str) -> ServiceSettings:
    return settings_class(service).model_construct()


def expected_ports(service: str) -> dict[str, int]:
    """Named ports a service listens on by default: gRPC always, metrics when on, gateway HTTP."""
    d = defaults(service)
    ports = {"grpc": d.port}
    if d.metrics_port > 0:
        ports["metrics"] = d.metrics_port
    if "http_port" in type(d).model_fields:
        ports["http"] = d.http_port
    assert all(p > 0 for p in ports.values()), (service, ports)
    return ports


def port_fields(service: str) -> dict[str, int]:
    d = defaults(service)
    return {
        env_name(type(d), f): getattr(d, f) for f in ("port", "metrics_port", "http_port") if f in type(d).model_fields
    }


def address_fields(service: str) -> dict[str, str]:
    """Env name -> target service of every ``<service>_address`` field (e.g. text_encoder_address)."""
    cls = settings_class(service)
    out = {}
    for field in cls.model_fields:
        if field.endswith("_address"):
            target = field.removesuffix("_address").replace("_", "-")
            assert target in SERVICES, f"{service}.{field} names no service of `prism serve`"
            out[env_name(cls, field)] = target
    return out


def bind_fields(service: str) -> list[str]:
    """Host fields that must be 0.0.0.0 in a container (127.0.0.1 is unreachable from other pods)."""
    cls = settings_class(service)
    return [env_name(cls, f) for f in ("host", "http_host") if f in cls.model_fields]


def grace_seconds() -> float:
    return float(ServiceSettings.model_construct().grace_seconds)


def http_drain_seconds() -> float:
    """The gateway's HTTP graceful-shutdown timeout (uvicorn), read from the code."""
    src = (REPO / "services" / "gateway" / "server.py").read_text(encoding="utf-8")
    m = re.search(r"timeout_graceful_shutdown=(\d+(?:\.\d+)?)", src)
    assert m, "services/gateway/server.py no longer sets timeout_graceful_shutdown"
    return float(m.group(1))


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def pinned(package: str) -> str:
    for dep in pyproject()["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(package)}==([\w.+-]+)", dep)
        if m:
            return m.group(1)
    raise AssertionError(f"{package} is not pinned in pyproject.toml")


def test_services_read_env_with_distinct_prefixes() -> None:
    assert env_name(CommonSettings, "models_dir") == MODELS_ENV
    prefixes = [env_prefix(settings_class(s)) for s in SERVICES]
    assert len(set(prefixes)) == len(prefixes)
    assert env_prefix(CommonSettings) == "PRISM_"
    # A service field must not shadow a CommonSettings name (PRISM_<SVC>_X never equals PRISM_Y).
    common = {env_name(CommonSettings, f) for f in CommonSettings.model_fields}
    for s in SERVICES:
        assert not (valid_env(s) - common) & common


# ------------------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def dockerfile_args() -> dict[str, str]:
    args = {}
    for word, rest in dockerfile_instructions():
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value.strip('"')
    return args


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in final_stage():
        if word == "ENV":
            for key, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", rest):
                env[key] = value.strip('"')
    return env


def dockerfile_uid() -> int:
    users = [rest for word, rest in final_stage() if word == "RUN" and "useradd" in rest]
    assert len(users) == 1
    m = re.search(r"--uid\s+(\S+)", users[0])
    assert m
    uid = m.group(1)
    ref = re.fullmatch(r"\$\{?(\w+)\}?", uid)
    return int(dockerfile_args()[ref.group(1)] if ref else uid)


def test_dockerfile_entrypoint_is_prism_and_user_is_not_root() -> None:
    stage = final_stage()
    entrypoints = [rest for word, rest in stage if word == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["prism"]
    users = [rest for word, rest in stage if word == "USER"]
    assert users, "the final stage must set USER"
    assert users[-1] not in {"root", "0"} and not users[-1].startswith(("root:", "0:"))
    assert users[-1] in {"prism", str(dockerfile_uid())}
    assert dockerfile_uid() == 10001


def test_dockerfile_installs_like_the_makefile() -> None:
    args = dockerfile_args()
    assert args["BASE"] == "python:3.11-slim"
    assert "python3.11" in DOCKERFILE.read_text(encoding="utf-8")  # the CUDA base installs it
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN"]
    torch_line = next(r for r in runs if "torch==" in r)
    assert f"torch=={pinned('torch')}" in torch_line
    assert f"torchvision=={pinned('torchvision')}" in torch_line
    torch_at = runs.index(torch_line)
    project_at = next(i for i, r in enumerate(runs) if re.search(r"pip install (-e )?\.(\s|$|\[)", r))
    nodeps_at = next(i for i, r in enumerate(runs) if "--no-deps -r requirements-nodeps.txt" in r)
    assert torch_at < project_at < nodeps_at


def test_dockerfile_is_offline_and_converts_e5_as_the_service_user() -> None:
    env = dockerfile_env()
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["PRISM_CACHE_DIR"] == "/opt/prism/cache"
    common = {env_name(CommonSettings, f) for f in CommonSettings.model_fields}
    assert {k for k in env if k.startswith("PRISM_")} <= common
    stage = final_stage()
    user_at = max(i for i, (word, _) in enumerate(stage) if word == "USER")
    convert_at = next(i for i, (word, rest) in enumerate(stage) if word == "RUN" and "ensure_e5_checkpoint" in rest)
    assert user_at < convert_at, "convert as the service user, so it owns (and may rewrite) the cache"
    assert "from prism.models.e5_convert import ensure_e5_checkpoint" in stage[convert_at][1]


def test_dockerfile_exposes_every_service_port_and_owns_the_models_folder() -> None:
    exposed = {int(p) for word, rest in final_stage() if word == "EXPOSE" for p in rest.split()}
    assert exposed == {port for s in SERVICES for port in expected_ports(s).values()}
    # A new volume mounted on the models folder takes this folder's owner: the service user.
    users = next(rest for word, rest in final_stage() if word == "RUN" and "useradd" in rest)
    models = compose_models_path()
    assert re.search(rf"mkdir -p [^&]*{re.escape(models)}", users), users
    assert re.search(rf"chown prism:prism [^&]*{re.escape(models)}", users), users


def test_dockerignore_keeps_what_the_build_needs() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "var", ".git"} <= ignored
    assert not ignored & {"shared", "services", "pyproject.toml", "requirements-nodeps.txt", "README.md", "*"}


# ------------------------------------------------------------------------------------- docker-compose


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def prism_compose_services() -> dict[str, tuple[str, dict[str, Any]]]:
    """Compose service name -> (prism service it serves, definition)."""
    out = {}
    for name, svc in compose()["services"].items():
        command = svc.get("command")
        if isinstance(command, list) and command[:1] == ["serve"]:
            assert len(command) == 2, (name, command)
            out[name] = (command[1], svc)
    return out


def container_ports(svc: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in [*(svc.get("ports") or []), *(svc.get("expose") or [])]:
        text = str(entry["target"] if isinstance(entry, dict) else entry).split("/")[0]
        ports.add(int(text.rsplit(":", 1)[-1]))
    return ports


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), text
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_has_the_infrastructure_with_health_checks() -> None:
    services = compose()["services"]
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.13-management")
    assert "rabbitmq-diagnostics" in services["rabbitmq"]["healthcheck"]["test"]
    assert services["minio"]["image"].startswith("minio/minio")
    assert services["qdrant"]["image"].startswith("qdrant/qdrant")
    # The qdrant server's minor version matches qdrant-client's.
    client_minor = ".".join(pinned("qdrant-client").split(".")[:2])
    assert services["qdrant"]["image"].split(":v", 1)[1].startswith(client_minor + ".")
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_every_prism_service_is_in_compose() -> None:
    served = prism_compose_services()
    unprofiled = {svc for svc, definition in served.values() if not definition.get("profiles")}
    assert unprofiled == set(SERVICES), "a plain `docker compose up` must run every service"
    assert {svc for svc, _ in served.values()} <= set(SERVICES)


def test_compose_env_names_are_settings_fields() -> None:
    for name, (service, svc) in prism_compose_services().items():
        env = compose_env(svc)
        unknown = set(env) - valid_env(service)
        assert not unknown, f"compose service {name} sets variables {service} does not read: {sorted(unknown)}"
        for var in bind_fields(service):
            assert env.get(var) == "0.0.0.0", f"{name}: {var} must be 0.0.0.0 to be reachable"
        for var, default in port_fields(service).items():
            assert env.get(var, str(default)) == str(default), f"{name}: {var} differs from the Settings default"


def test_compose_ports_are_the_settings_defaults() -> None:
    for name, (service, svc) in prism_compose_services().items():
        assert container_ports(svc) == set(expected_ports(service).values()), name


def test_compose_depends_on_targets_exist_and_are_healthy() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: use the long form of depends_on with conditions"
        for target, spec in deps.items():
            assert target in services, f"{name} depends on missing {target}"
            one_shot = services[target].get("restart") == "no"
            allowed = {"service_completed_successfully"} if one_shot else {"service_healthy", "service_started"}
            assert spec.get("condition") in allowed, (name, target)
            if spec["condition"] == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target}, which has no health check"
            mine, theirs = set(svc.get("profiles") or []), set(services[target].get("profiles") or [])
            assert not theirs or mine & theirs, f"{name} depends on {target}, which its profiles do not start"


def test_compose_minio_publishes_to_the_exchange_the_workers_consume() -> None:
    """MinIO's AMQP notification target is the exchange the workers declare, under the ARN they subscribe."""
    from types import SimpleNamespace

    from services.ingest.app import IngestApp
    from services.ingest.settings import Settings as IngestSettings

    settings = IngestSettings()
    exchange = IngestApp.events_queue(SimpleNamespace(settings=settings, queue_arguments=dict)).exchange
    services = compose()["services"]
    minio, ingest = compose_env(services["minio"]), compose_env(services["ingest"])
    arn = re.fullmatch(r"arn:minio:sqs::(\w+):amqp", ingest[env_name(StoreSettings, "notify_arn")])
    assert arn, ingest[env_name(StoreSettings, "notify_arn")]
    target = arn.group(1)
    assert minio[f"MINIO_NOTIFY_AMQP_ENABLE_{target}"] == "on"
    assert minio[f"MINIO_NOTIFY_AMQP_EXCHANGE_{target}"] == exchange.name == settings.events_exchange
    assert minio[f"MINIO_NOTIFY_AMQP_EXCHANGE_TYPE_{target}"] == exchange.type
    assert minio[f"MINIO_NOTIFY_AMQP_DURABLE_{target}"] == "on" and exchange.durable
    # The same broker as the workers, and persistent messages (delivery mode 2).
    broker = re.sub(r"/+$", "", ingest["PRISM_INGEST_BROKER_URL"])
    assert minio[f"MINIO_NOTIFY_AMQP_URL_{target}"] == broker
    assert minio[f"MINIO_NOTIFY_AMQP_DELIVERY_MODE_{target}"] == "2"


def test_compose_upstream_addresses_point_at_deployed_services() -> None:
    services = compose()["services"]
    served = prism_compose_services()
    for name, (service, svc) in served.items():
        env = compose_env(svc)
        for var, target in address_fields(service).items():
            assert var in env, f"{name}: {var} unset (its default 127.0.0.1 is wrong in a container)"
            host, _, port = env[var].rpartition(":")
            assert host in served and served[host][0] == target, f"{name}: {var}={env[var]} is not a {target}"
            assert int(port) == defaults(target).port, f"{name}: {var} port differs from {target}'s"
            wait = "service_started" if var in OPTIONAL_UPSTREAMS else "service_healthy"
            assert svc["depends_on"][host]["condition"] == wait, f"{name}: depends_on {host} should be {wait}"
            assert set(services[host].get("profiles") or []) == set(svc.get("profiles") or [])
        if "qdrant_url" in settings_class(service).model_fields:
            url = env[env_name(settings_class(service), "qdrant_url")]
            m = re.fullmatch(r"http://([\w-]+):(\d+)", url)
            assert m and services[m.group(1)]["image"].startswith("qdrant/qdrant") and m.group(2) == "6333", url
            assert svc["depends_on"][m.group(1)]["condition"] == "service_healthy"


def test_compose_health_checks_test_readiness_on_the_right_port() -> None:
    for name, (service, svc) in prism_compose_services().items():
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name
        ports = expected_ports(service)
        if "http" in ports:
            assert f"http://127.0.0.1:{ports['http']}/readyz" in test[3], name
        else:
            assert f"127.0.0.1:{ports['grpc']}" in test[3] and "HealthStub" in test[3], name
        assert duration_seconds(svc["healthcheck"].get("start_period", "0s")) >= 30, name


def test_compose_gpu_profile_reserves_nvidia_gpus() -> None:
    gpu = {name: svc for name, (_, svc) in prism_compose_services().items() if "gpu" in (svc.get("profiles") or [])}
    encoders = {n for n, s in gpu.items() if s["command"][1] != "gateway"}
    assert {s["command"][1] for s in gpu.values()} >= ENCODERS
    for name in encoders:
        devices = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), name
        assert gpu[name]["build"]["args"]["BASE"].startswith("nvidia/cuda:"), name


def test_compose_volumes_stop_grace_and_image_tag() -> None:
    data = compose()
    declared = set(data.get("volumes") or {})
    cache_dir = dockerfile_env()["PRISM_CACHE_DIR"]
    version = pyproject()["project"]["version"]
    for name, svc in data["services"].items():
        for mount in svc.get("volumes") or []:
            # ${VAR:-default} as compose substitutes it when VAR is unset
            source = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", mount).split(":", 1)[0]
            assert source.startswith((".", "/")) or source in declared, f"{name}: undeclared volume {source}"
    for name, (service, svc) in prism_compose_services().items():
        if service in ENCODERS:  # the encoders keep the converted checkpoint and vector cache there
            volume = "model-cache-gpu" if "gpu" in (svc.get("profiles") or []) else "model-cache"
            assert f"{volume}:{cache_dir}" in svc.get("volumes", []), name
        assert compose_env(svc).get("PRISM_CACHE_DIR", cache_dir) == cache_dir
        needed = grace_seconds() + (http_drain_seconds() if "http" in expected_ports(service) else 0)
        assert duration_seconds(svc["stop_grace_period"]) > needed, name
        assert re.fullmatch(rf"prism:\$\{{PRISM_TAG:-{re.escape(version)}\}}(-cuda)?", svc["image"]), svc["image"]


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:+replacement} as `docker compose` substitutes them."""

    def one(m: re.Match[str]) -> str:
        value = variables.get(m.group(1), "")
        if m.group(2) == ":-":
            return value or m.group(3)
        if m.group(2) == ":+":
            return m.group(3) if value else ""
        return value

    return re.sub(r"\$\{(\w+)(?:(:-|:\+)([^}]*))?\}", one, text)


def compose_models_path() -> str:
    """Where the `models` volume is mounted (read-only) in the services that load trained models."""
    targets = {
        str(mount).split(":")[1]
        for svc in compose()["services"].values()
        for mount in svc.get("volumes") or []
        if str(mount).startswith("models:")
    }
    assert len(targets) == 1, targets
    return targets.pop()


def test_compose_mounts_trained_models_where_the_services_read_them() -> None:
    services = compose()["services"]
    path = compose_models_path()
    assert "models" in compose()["volumes"]
    for name, (service, svc) in prism_compose_services().items():
        env, mounts = compose_env(svc), [str(m) for m in svc.get("volumes") or []]
        if service in model_users():
            assert env.get(MODELS_ENV) == path, f"{name}: {MODELS_ENV} must be the mounted models folder"
            assert f"models:{path}:ro" in mounts, f"{name}: mount the models read-only"
            # Held until `prism train` has written a version, rather than started without one.
            assert svc["depends_on"]["models-ready"] == {"condition": "service_completed_successfully"}, name
        else:
            assert MODELS_ENV not in env and not any(m.startswith("models:") for m in mounts), name
    # models-ready waits for the file prism train writes last (and resolve_version reads).
    ready = services["models-ready"]
    assert f"test -f {path}/{MANIFEST_FILE}" in ready["command"][0]
    assert ready["healthcheck"]["test"] == ["CMD", "test", "-f", f"{path}/{MANIFEST_FILE}"]
    assert f"models:{path}:ro" in ready["volumes"] and ready["restart"] == "no" and not ready.get("profiles")


def test_make_up_trains_before_starting_when_no_version_exists() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^up:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "Makefile has no `up` target"
    lines = recipe.group(1).replace("\\\n", " ").splitlines()
    check = next(i for i, line in enumerate(lines) if "models-ready" in line)
    assert f"test models-ready -f {compose_models_path()}/{MANIFEST_FILE}" in lines[check]
    assert "|| docker compose --profile train run --rm train" in lines[check]
    assert check < next(i for i, line in enumerate(lines) if "docker compose up" in line)


def test_compose_lexical_statistics_are_on_the_shared_volume() -> None:
    """Fusion writes the BM25 statistics that every gateway (CPU and GPU profile) reads: one volume."""
    for name, (service, svc) in prism_compose_services().items():
        cls = settings_class(service)
        if "lexical_stats" not in cls.model_fields:
            continue
        folder = str(Path(compose_env(svc)[env_name(cls, "lexical_stats")]).parent)
        assert f"index-stats:{folder}" in svc["volumes"], name


def test_compose_train_profile_writes_the_models_volume() -> None:
    from prism.training.train import build_parser

    train = compose()["services"]["train"]
    assert train["profiles"] == ["train"] and train["restart"] == "no"
    command = train["command"]
    assert command[0] == "train"
    args = build_parser().parse_args(command[1:])  # the options `prism train` really has
    assert str(args.out) == compose_models_path()
    assert f"models:{compose_models_path()}" in train["volumes"], "the one writer mounts it read-write"
    cache_dir = dockerfile_env()["PRISM_CACHE_DIR"]
    assert f"model-cache:{cache_dir}" in train["volumes"]  # the converted e5 checkpoint, the feature cache
    (data,) = [m for m in train["volumes"] if str(m).endswith(":/data:ro")]
    host = Path(interpolate(data.rsplit(":", 2)[0], {}))
    for catalog in args.catalog:
        assert catalog.parts[:2] == ("/", "data"), catalog
        if (REPO / host).is_dir():  # the project's data sits beside the repository
            assert (REPO / host / catalog.relative_to("/data") / "products.jsonl").is_file(), catalog


# OpenTelemetry, end to end: the variables as the deployment files set them, given to the code
# (prism.tracing.setup_tracing in a fresh process), and the spans it exports caught by a loopback
# OTLP/HTTP collector.


@pytest.fixture
def otlp_collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    received: list[tuple[str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


TRACE_PROGRAM = """
import json, sys
from opentelemetry import trace
from prism import tracing
exported = tracing.setup_tracing(sys.argv[1])
with tracing.span("search", k=3):
    pass
provider = trace.get_tracer_provider()
sampler = provider.sampler.get_description() if exported else None
if exported:
    provider.shutdown()  # flushes the batch
print(json.dumps({"exported": exported, "sampler": sampler}))
"""


def run_traced(default_name: str, env: dict[str, str]) -> dict[str, Any]:
    """Run setup_tracing + one span with exactly these OTEL_* variables (others removed)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", TRACE_PROGRAM, default_name],
        env={**base, **env},
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def exported_resources(received: list[tuple[str, bytes]]) -> list[dict[str, str]]:
    """Resource attributes of every exported batch (and the spans are Prism's)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for path, body in received:
        assert path == "/v1/traces", path
        request = ExportTraceServiceRequest.FromString(body)
        for spans in request.resource_spans:
            names = [s.name for scope in spans.scope_spans for s in scope.spans]
            assert names == ["prism.search"], names
            out.append({a.key: a.value.string_value for a in spans.resource.attributes})
    return out


def test_compose_tracing_env_reaches_every_service_and_the_code(
    otlp_collector: tuple[str, list[tuple[str, bytes]]],
) -> None:
    services = compose()["services"]
    traced = {name: svc for name, svc in services.items() if svc.get("command", [""])[0] in {"serve", "seed"}}
    assert set(traced) >= set(prism_compose_services())
    endpoints = set()
    for name, svc in traced.items():
        env = compose_env(svc)
        assert env.get("OTEL_SERVICE_NAME") == name, f"{name}: OTEL_SERVICE_NAME must be the service's name"
        endpoints.add(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    (endpoint,) = endpoints  # one switch for all
    # PRISM_TRACING set: the `jaeger` service of the "tracing" profile, on its OTLP/HTTP port.
    on = interpolate(endpoint, {"PRISM_TRACING": "1"})
    m = re.fullmatch(r"http://([\w-]+):(\d+)", on)
    assert m, on
    collector = services[m.group(1)]
    assert collector["profiles"] == ["tracing"] and m.group(2) in [str(p) for p in collector["expose"]]
    assert m.group(2) == "4318", "prism/tracing.py exports OTLP over HTTP (4317 is OTLP/gRPC)"
    assert "otlp.proto.http" in (REPO / "shared" / "prism" / "tracing.py").read_text(encoding="utf-8")
    # Unset: an empty endpoint, which the code takes as "no export".
    url, received = otlp_collector
    gateway = {k: interpolate(v, {}) for k, v in compose_env(services["gateway"]).items() if k.startswith("OTEL_")}
    assert gateway["OTEL_EXPORTER_OTLP_ENDPOINT"] == ""
    assert run_traced("gateway", gateway)["exported"] is False and not received
    # Set (the collector's address swapped for the loopback one): spans arrive, named after the service.
    env = {k: interpolate(v, {"PRISM_TRACING": "1"}) for k, v in compose_env(services["gateway"]).items()}
    otel = {k: v.replace(on, url) for k, v in env.items() if k.startswith("OTEL_")}
    result = run_traced("not-this-name", otel)
    assert result["exported"] is True and result["sampler"].startswith("ParentBased{root:TraceIdRatioBased{1.0}")
    (resource,) = exported_resources(received)
    assert resource["service.name"] == "gateway"


# The compose health checks are real programs: run them against real loopback servers.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_check(code: str, old_port: int, new_port: int) -> int:
    assert code.count(f"127.0.0.1:{old_port}") == 1
    code = code.replace(f"127.0.0.1:{old_port}", f"127.0.0.1:{new_port}")
    return subprocess.run([sys.executable, "-W", "ignore", "-c", code], timeout=30, capture_output=True).returncode


@pytest.fixture
def health_server() -> Iterator[tuple[int, Any]]:
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(0).wait()


def test_compose_grpc_health_check_passes_only_when_serving(health_server: tuple[int, Any]) -> None:
    from grpc_health.v1 import health_pb2

    port, servicer = health_server
    for name, (service, svc) in prism_compose_services().items():
        if "http" in expected_ports(service):
            continue
        code, grpc_port = svc["healthcheck"]["test"][3], defaults(service).port
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert run_check(code, grpc_port, port) != 0, name
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert run_check(code, grpc_port, port) == 0, name
        assert run_check(code, grpc_port, free_port()) != 0, name  # nothing listening


def test_compose_http_readiness_check_passes_only_when_ready() -> None:
    state = {"status": 503}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(state["status"] if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for name, (service, svc) in prism_compose_services().items():
            if "http" not in expected_ports(service):
                continue
            code, http_port = svc["healthcheck"]["test"][3], defaults(service).http_port
            state["status"] = 503
            assert run_check(code, http_port, server.server_port) != 0, name
            state["status"] = 200
            assert run_check(code, http_port, server.server_port) == 0, name
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ------------------------------------------------------------------------------------------------ helm


def values() -> dict[str, Any]:
    data = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


# A small JSON Schema (draft-07) validator for the keywords values.schema.json uses; `jsonschema` is
# not one of the project's pinned dependencies. test_schema_uses_only_supported_keywords keeps the
# schema inside what this validator understands, so no rule is silently ignored.
ANNOTATIONS = {"$schema", "title", "description", "default", "examples"}
KEYWORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "propertyNames",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "pattern",
    "anyOf",
    "$ref",
    "definitions",
}
JSON_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(value: Any, node: dict[str, Any], root: dict[str, Any], path: str = "$") -> list[str]:
    if "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return validate(value, target, root, path)
    errors: list[str] = []
    if "anyOf" in node and all(validate(value, sub, root, path) for sub in node["anyOf"]):
        errors.append(f"{path}: {value!r} matches none of anyOf {node['anyOf']}")
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if not any(JSON_TYPES[t](value) for t in types):
            return [f"{path}: {value!r} is not of type {node['type']}"]
    if "enum" in node and value not in node["enum"]:
        errors.append(f"{path}: {value!r} not in {node['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            errors.append(f"{path}: {value} < {node['minimum']}")
        if "maximum" in node and value > node["maximum"]:
            errors.append(f"{path}: {value} > {node['maximum']}")
    if isinstance(value, str):
        if "minLength" in node and len(value) < node["minLength"]:
            errors.append(f"{path}: shorter than {node['minLength']}")
        if "pattern" in node and not re.search(node["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {node['pattern']}")
    if isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            errors += validate(item, node["items"], root, f"{path}[{i}]")
    if isinstance(value, dict):
        errors += [f"{path}: {key} is required" for key in node.get("required", []) if key not in value]
        props = node.get("properties", {})
        for key, item in value.items():
            if "propertyNames" in node:
                errors += validate(key, node["propertyNames"], root, f"{path}.{key} (name)")
            if key in props:
                errors += validate(item, props[key], root, f"{path}.{key}")
            elif node.get("additionalProperties") is False:
                errors.append(f"{path}: unknown key {key}")
            elif isinstance(node.get("additionalProperties"), dict):
                errors += validate(item, node["additionalProperties"], root, f"{path}.{key}")
    return errors


def schema_keywords(node: Any) -> set[str]:
    if not isinstance(node, dict):
        return set()
    found = set(node)
    for key in ("properties", "definitions"):
        for sub in node.get(key, {}).values():
            found |= schema_keywords(sub)
    for key in ("items", "additionalProperties", "propertyNames"):
        found |= schema_keywords(node.get(key))
    for sub in node.get("anyOf", []):
        found |= schema_keywords(sub)
    return found


def test_schema_uses_only_supported_keywords() -> None:
    assert schema()["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema_keywords(schema()) <= KEYWORDS | ANNOTATIONS


def test_values_satisfy_the_schema() -> None:
    assert validate(values(), schema(), schema()) == []


@pytest.mark.parametrize(
    ("where", "bad", "complaint"),
    [
        (("services", "gateway", "replicas"), "two", "is not of type"),
        (("services", "gateway", "probes", "type"), "tcp", "not in"),
        (("services", "gateway", "ports", "grpc"), 70000, "> 65535"),
        (("services", "text-encoder", "env", "log_level"), "DEBUG", "does not match"),
        (("services", "text-encoder", "replica"), 2, "unknown key replica"),
        (("podSecurityContext", "runAsNonRoot"), False, "not in"),
        (("tracing", "sampler"), "sometimes", "not in"),
        (("tracing", "samplerArg"), "1.5", "does not match"),
        (("qdrant", "inCluster", "replicas"), 0, "< 1"),
        (("qdrant", "collection", "shardNumber"), -1, "< 0"),
        (("qdrant", "inCluster", "podSecurityContext", "runAsNonRoot"), False, "not in"),
        (("models", "mountPath"), "models", "does not match"),
        (("services", "gateway", "models"), "yes", "is not of type"),
        (("minio", "inCluster", "replicas"), 2, "matches none of anyOf"),
        (("minio", "inCluster", "replicas"), 3, "matches none of anyOf"),
        (("rabbitmq", "inCluster", "replicas"), 2, "matches none of anyOf"),
        (("rabbitmq", "inCluster", "resources", "limits", "memory"), "2G", "does not match"),
        (("rabbitmq", "inCluster", "podSecurityContext", "runAsNonRoot"), False, "not in"),
        (("rabbitmq", "external", "secretName"), "", "shorter than"),
        (("minio", "bucket"), "Prism_Media", "does not match"),
        (("minio", "inCluster", "notify", "exchangeType"), "fan-out", "not in"),
        (("minio", "external", "endpoint"), "https://s3.example.net", "does not match"),
        (("services", "ingest", "brokerEnv", "host"), "PRISM_INGEST_BROKER_HOST", "unknown key host"),
        (("services", "gateway", "storeEnv", "endpoint"), "store_endpoint", "does not match"),
    ],
)
def test_schema_rejects_bad_values(where: tuple[str, ...], bad: Any, complaint: str) -> None:
    data = values()
    node = data
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = bad
    errors = validate(data, schema(), schema())
    assert errors and any(complaint in e for e in errors), errors


@pytest.mark.parametrize(
    ("where", "replicas"), [("minio", 1), ("minio", 4), ("minio", 6), ("rabbitmq", 1), ("rabbitmq", 5)]
)
def test_schema_accepts_standalone_and_clustered_servers(where: str, replicas: int) -> None:
    data = values()
    data[where]["inCluster"]["replicas"] = replicas
    assert validate(data, schema(), schema()) == []


def chart_services() -> dict[str, dict[str, Any]]:
    return values()["services"]  # type: ignore[no-any-return]


# qdrantEnv key -> the IndexedServiceSettings field (qdrant_<field>) it sets.
QDRANT_FIELDS = {
    "url": "url",
    "apiKey": "api_key",
    "shardNumber": "shard_number",
    "replicationFactor": "replication_factor",
    "writeConsistencyFactor": "write_consistency_factor",
}


def helm_env(name: str, block: dict[str, Any]) -> dict[str, str]:
    """Every variable the chart sets for a service, with its value where the values file has it."""
    env = {"PRISM_CACHE_DIR": values()["cacheDir"]}
    env |= {k: str(v) for k, v in values()["commonEnv"].items()}
    env |= {k: str(v) for k, v in block["env"].items()}
    env |= {k: f"<{target}>" for k, target in block["upstreams"].items()}
    env |= {k: f"<secret {ref['name']}/{ref['key']}>" for k, ref in block["secretEnv"].items()}
    env |= {v: f"<qdrant {k}>" for k, v in block["qdrantEnv"].items()}
    env |= {v: f"<broker {k}>" for k, v in block["brokerEnv"].items()}
    env |= {v: f"<store {k}>" for k, v in block["storeEnv"].items()}
    if block["models"]:
        env[MODELS_ENV] = values()["models"]["mountPath"]
    return env


def test_chart_metadata_matches_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2" and chart["name"] == "prism" and chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"] == pyproject()["project"]["version"]


def test_every_prism_service_has_a_helm_block() -> None:
    assert set(chart_services()) == set(SERVICES)
    assert all(block["enabled"] for block in chart_services().values())


def test_helm_env_names_are_settings_fields() -> None:
    for name, block in chart_services().items():
        env = helm_env(name, block)
        unknown = set(env) - valid_env(name)
        assert not unknown, f"helm sets variables {name} does not read: {sorted(unknown)}"
        for var in bind_fields(name):
            assert env.get(var) == "0.0.0.0", f"{name}: {var} must be 0.0.0.0 to be reachable"
        for var, default in port_fields(name).items():
            assert env.get(var, str(default)) == str(default), f"{name}: {var} differs from the Settings default"
    # Names the templates write themselves must be real settings too.
    every = set().union(*(valid_env(s) for s in SERVICES))
    for template in TEMPLATES.iterdir():
        for var in re.findall(r"\bPRISM_[A-Z0-9_]+", template.read_text(encoding="utf-8")):
            assert var in every, f"{template.name} names {var}, which no Settings reads"


def test_helm_ports_and_probes_match_the_code() -> None:
    for name, block in chart_services().items():
        assert block["ports"] == expected_ports(name), name
        assert block["probes"]["type"] == ("http" if "http" in block["ports"] else "grpc"), name
    deployment = (TEMPLATES / "deployment.yaml").read_text(encoding="utf-8")
    assert re.search(r"grpc:\s*\n\s*port: \{\{ \$svc\.ports\.grpc \}\}", deployment)
    assert re.search(r"httpGet:\s*\n\s*path: /readyz\s*\n\s*port: http", deployment)
    assert re.search(r"httpGet:\s*\n\s*path: /healthz\s*\n\s*port: http", deployment)
    assert 'args: ["serve", {{ $name | quote }}]' in deployment


def test_helm_upstreams_and_qdrant_point_at_real_things() -> None:
    services = chart_services()
    for name, block in services.items():
        assert block["upstreams"] == address_fields(name), f"{name}: every *_address setting needs an upstream"
        for target in block["upstreams"].values():
            assert services[target]["enabled"] and services[target]["probes"]["type"] == "grpc"
        cls = settings_class(name)
        expected = {
            key: env_name(cls, f"qdrant_{field}")
            for key, field in QDRANT_FIELDS.items()
            if f"qdrant_{field}" in cls.model_fields
        }
        assert block["qdrantEnv"] == expected, name
    qdrant = values()["qdrant"]
    assert qdrant["inCluster"]["port"] == 6333 and qdrant["apiKey"]["secretKey"]
    assert set(qdrant["collection"]) == set(QDRANT_FIELDS) - {"url", "apiKey"}
    # The in-cluster server speaks the client's minor version.
    client_minor = ".".join(pinned("qdrant-client").split(".")[:2])
    assert qdrant["inCluster"]["image"]["tag"].startswith(f"v{client_minor}.")


# storeEnv key -> the StoreSettings field (PRISM_STORE_<field>) it sets.
STORE_FIELDS = {
    "endpoint": "endpoint",
    "secure": "secure",
    "bucket": "bucket",
    "accessKey": "access_key",
    "secretKey": "secret_key",
    "notifyArn": "notify_arn",
}
# mc's event names (`mc event add --event`) -> the S3 event types MinIO subscribes them as.
MC_EVENTS = {"put": "s3:ObjectCreated:*", "delete": "s3:ObjectRemoved:*", "get": "s3:ObjectAccessed:*"}


def bucket_subscribers() -> set[str]:
    """Services whose code subscribes the bucket to the broker on start (S3Store.ensure_bucket)."""
    users = set()
    for service, module in SERVICES.items():
        folder = REPO / Path(*module.split(".")[:-1])
        if any("ensure_bucket()" in f.read_text(encoding="utf-8") for f in folder.glob("*.py")):
            users.add(service)
    assert users == {"ingest"}, users
    return users


def bucket_events() -> set[str]:
    """The S3 events S3Store.ensure_bucket subscribes the bucket to (prism/storage.py)."""
    source = (REPO / "shared" / "prism" / "storage.py").read_text(encoding="utf-8")
    m = re.search(r"QueueConfig\(\s*\[([^\]]*)\]", source)
    assert m, "prism/storage.py no longer subscribes the bucket with a QueueConfig"
    events = set(re.findall(r'"([^"]+)"', m.group(1)))
    assert events and events <= set(MC_EVENTS.values()), events
    return events


def ingest_exchange() -> Any:
    """The exchange bucket events must reach: the one the workers' events queue is bound to."""
    from types import SimpleNamespace

    from services.ingest.app import IngestApp
    from services.ingest.settings import Settings as IngestSettings

    app = SimpleNamespace(settings=IngestSettings(), queue_arguments=dict)
    return IngestApp.events_queue(app).exchange  # type: ignore[arg-type]


def broker_users() -> set[str]:
    """Services whose Settings read an AMQP URL (broker_url)."""
    users = {s for s in SERVICES if "broker_url" in settings_class(s).model_fields}
    assert users == {"ingest"}, users
    return users


def test_helm_broker_and_store_env_match_the_settings() -> None:
    """brokerEnv / storeEnv name exactly the settings that read the broker URL and the object store."""
    assert set(STORE_FIELDS.values()) <= set(StoreSettings.model_fields)
    credentials = {env_name(StoreSettings, "access_key"), env_name(StoreSettings, "secret_key")}
    for name, block in chart_services().items():
        cls = settings_class(name)
        assert block["brokerEnv"] == ({"url": env_name(cls, "broker_url")} if name in broker_users() else {}), name
        expected = {}
        if name in STORE_USERS:
            expected = {
                key: env_name(StoreSettings, field)
                for key, field in STORE_FIELDS.items()
                if key != "notifyArn" or name in bucket_subscribers()
            }
            assert block["env"][env_name(StoreSettings, "backend")] == "s3", name
        assert block["storeEnv"] == expected, name
        # Addresses and credentials come from `rabbitmq` / `minio` only, never from a service's own env.
        chart_set = set(expected.values()) | set(block["brokerEnv"].values())
        assert not chart_set & (set(block["env"]) | set(block["secretEnv"])), name
        assert not credentials & set(block["env"]), name


def test_helm_in_cluster_broker_and_store_match_compose_and_the_code() -> None:
    from urllib.parse import urlsplit

    from services.ingest.settings import Settings as IngestSettings

    v, services = values(), compose()["services"]
    rabbit, minio = v["rabbitmq"]["inCluster"], v["minio"]["inCluster"]
    # The servers docker-compose.yml runs: the same RabbitMQ series (at a patch release that knows the
    # global default_queue_type, 3.13.3+), the same MinIO release.
    series, _, flavour = services["rabbitmq"]["image"].split(":", 1)[1].partition("-")
    m = re.fullmatch(rf"{re.escape(series)}\.(\d+)-{re.escape(flavour)}", rabbit["image"]["tag"])
    assert rabbit["image"]["repository"] == "rabbitmq" and m and int(m.group(1)) >= 3, rabbit["image"]
    assert f"{minio['image']['repository']}:{minio['image']['tag']}" == services["minio"]["image"]
    # A quorum by default: an odd number of nodes, at least three.
    assert rabbit["replicas"] >= 3 and rabbit["replicas"] % 2 == 1
    # Ports: the ones compose publishes and the code's defaults point at.
    assert {rabbit["port"], rabbit["managementPort"]} <= container_ports(services["rabbitmq"])
    assert {minio["port"], minio["consolePort"]} <= container_ports(services["minio"])
    assert urlsplit(IngestSettings.model_fields["broker_url"].default).port == rabbit["port"]
    assert str(StoreSettings.model_fields["endpoint"].default).endswith(f":{minio['port']}")
    # The images' users: rabbitmq's own (999); MinIO's image runs as root, so a non-root one.
    assert rabbit["podSecurityContext"]["runAsUser"] == 999
    assert minio["podSecurityContext"]["runAsNonRoot"] is True and minio["podSecurityContext"]["runAsUser"] > 0
    # MinIO's AMQP target: compose's, publishing to the exchange the workers consume, into compose's bucket.
    compose_minio, compose_ingest = compose_env(services["minio"]), compose_env(services["ingest"])
    arn = re.fullmatch(r"arn:minio:sqs::(\w+):amqp", compose_ingest[env_name(StoreSettings, "notify_arn")])
    assert arn and minio["notify"]["target"] == arn.group(1)
    exchange = ingest_exchange()
    assert minio["notify"]["exchange"] == exchange.name == compose_minio[f"MINIO_NOTIFY_AMQP_EXCHANGE_{arn.group(1)}"]
    assert minio["notify"]["exchangeType"] == exchange.type and exchange.durable
    assert v["minio"]["bucket"] == compose_ingest[env_name(StoreSettings, "bucket")] == StoreSettings().bucket


def test_helm_rabbitmq_config_template_declares_quorum_queues_and_k8s_discovery() -> None:
    """The rabbitmq.conf template, read as text (the rendered file is checked where Helm runs)."""
    helpers, rabbitmq = templates()["_helpers.tpl"], templates()["rabbitmq.yaml"]
    m = re.search(r'define "prism\.rabbitmqConf" -\}\}(.*?)\{\{- end -\}\}', helpers, re.S)
    assert m
    lines = {line.strip() for line in m.group(1).splitlines()}
    assert "default_queue_type = quorum" in lines
    assert "cluster_formation.peer_discovery_backend = rabbit_peer_discovery_k8s" in lines
    assert "cluster_formation.k8s.service_name = {{ $headless }}" in lines
    assert re.search(r'\$plugins := "\[[\w,]*rabbitmq_peer_discovery_k8s[\w,]*\]\."', rabbitmq)
    assert re.search(r"resources: \[endpoints\]\s*\n\s*verbs: \[get\]", rabbitmq)


def test_helm_models_flag_marks_the_services_that_load_models() -> None:
    for name, block in chart_services().items():
        assert block["models"] == (name in model_users()), name
    assert values()["models"]["mountPath"] == compose_models_path()


def test_helm_pods_are_locked_down() -> None:
    v = values()
    pod, container = v["podSecurityContext"], v["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == dockerfile_uid()
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["allowPrivilegeEscalation"] is False and container["readOnlyRootFilesystem"] is True
    assert container["capabilities"]["drop"] == ["ALL"]
    assert v["cacheDir"] == dockerfile_env()["PRISM_CACHE_DIR"]
    # Encoders write the cache (converted checkpoint check, vector cache): it must be a volume.
    for name, block in chart_services().items():
        assert block["modelCache"]["enabled"] == (name in ENCODERS), name


def test_helm_grace_period_outlasts_the_services() -> None:
    pre_stop = values()["preStopSleepSeconds"]
    for name, block in chart_services().items():
        needed = pre_stop + grace_seconds() + (http_drain_seconds() if "http" in block["ports"] else 0)
        assert block["terminationGracePeriodSeconds"] > needed, name


def test_helm_encoders_autoscale_and_can_use_gpus() -> None:
    for name, block in chart_services().items():
        if name not in AUTOSCALED:
            continue
        assert block["autoscaling"]["enabled"], name
        assert block["autoscaling"]["minReplicas"] <= block["autoscaling"]["maxReplicas"]
        assert "cpu" in block["resources"]["requests"], f"{name}: CPU autoscaling needs a CPU request"
        if name in ENCODERS:
            assert block["gpu"]["count"] >= 1 and block["gpu"]["tolerations"], name
    deployment = (TEMPLATES / "deployment.yaml").read_text(encoding="utf-8")
    assert '"nvidia.com/gpu" $svc.gpu.count' in deployment


# Templates: static checks (they are Go templates and cannot be rendered here; see the module doc).


def templates() -> dict[str, str]:
    found = {p.name: p.read_text(encoding="utf-8") for p in sorted(TEMPLATES.iterdir())}
    assert {
        "_helpers.tpl",
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "networkpolicy.yaml",
        "qdrant.yaml",
        "rabbitmq.yaml",
        "minio.yaml",
        "models.yaml",
    } <= set(found)
    return found


def lookup(data: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return False, None
        data = data[part]
    return True, data


def test_templates_are_balanced() -> None:
    for name, text in templates().items():
        assert text.count("{{") == text.count("}}"), name
        actions = re.findall(r"\{\{-?\s*(if|range|with|define|block|end)\b", text)
        depth = 0
        for action in actions:
            depth += -1 if action == "end" else 1
            assert depth >= 0, f"{name}: an `end` closes nothing"
        assert depth == 0, f"{name}: {depth} block(s) left open"


def test_templates_reference_only_existing_values() -> None:
    v = values()
    defined = set(re.findall(r'\{\{-?\s*define "([\w.]+)"', templates()["_helpers.tpl"]))
    for name, text in templates().items():
        for dotted in re.findall(r"\.Values((?:\.[A-Za-z_]\w*)+)", text):
            assert lookup(v, dotted[1:])[0], f"{name}: .Values{dotted} is not in values.yaml"
        for used in re.findall(r'include "([\w.]+)"', text):
            assert used in defined, f"{name}: include of undefined template {used}"


def test_templates_reference_only_existing_service_keys() -> None:
    """``$svc.x.y`` (a `range` over .Values.services, or `.svc` in the helpers) exists in the blocks."""
    blocks = list(chart_services().values())
    for name, text in templates().items():
        variables = re.findall(r"range \$\w+, (\$\w+) := \$?\.Values\.services", text)
        patterns = [re.escape(var) for var in variables] + (["\\.svc"] if name == "_helpers.tpl" else [])
        for pattern in patterns:
            for dotted in re.findall(rf"{pattern}((?:\.[A-Za-z_]\w*)+)", text):
                path = dotted[1:]
                parent = path.rpartition(".")[0]
                assert any(lookup(b, path)[0] for b in blocks), f"{name}: {pattern}{dotted} is in no service block"
                if parent:
                    assert all(lookup(b, parent)[0] for b in blocks), f"{name}: {parent} missing in a service block"


# Rendered by Helm's own engine, where it is installed: helm-python-sdk (PyPI) embeds the Helm v4 Go
# SDK as a C library, so no helm binary is needed. Without it these tests skip; the static checks
# above still hold the chart to the code.


@pytest.fixture(scope="module")
def helm() -> Any:
    return pytest.importorskip("helm_python")


def render(helm: Any, overrides: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """kind -> rendered objects."""
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(overrides, name="demo", namespace="shop")
    objects: dict[str, list[dict[str, Any]]] = {}
    for text in manifests.values():
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.setdefault(doc["kind"], []).append(doc)
    return objects


def component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def of(objects: dict[str, list[dict[str, Any]]], kind: str, name: str) -> list[dict[str, Any]]:
    """The rendered objects of one kind that belong to one component (qdrant, rabbitmq, minio ...)."""
    return [o for o in objects.get(kind, []) if component(o) == name]


def test_helm_lints_clean(helm: Any) -> None:
    assert helm.lint(str(CHART))["errors"] == []


def test_helm_renders_what_the_code_expects(helm: Any) -> None:
    objects = render(helm, {})
    deployments = {component(d): d for d in objects["Deployment"]}
    services = {s["metadata"]["name"]: s for s in objects["Service"]}
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["serve", name]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert set(env) <= valid_env(name), name
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == expected_ports(name)
        if "http" in expected_ports(name):
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        else:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert container[probe]["grpc"] == {"port": expected_ports(name)["grpc"]}, (name, probe)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["terminationGracePeriodSeconds"] > grace_seconds()
        for var, target in address_fields(name).items():
            host, _, port = env[var].rpartition(":")
            assert component(services[host]) == target
            assert int(port) == defaults(target).port
            assert {"name": "grpc", "port": int(port)} in [
                {"name": p["name"], "port": p["port"]} for p in services[host]["spec"]["ports"]
            ]
    autoscaled = {h["spec"]["scaleTargetRef"]["name"] for h in objects["HorizontalPodAutoscaler"]}
    scaled = {o["spec"]["scaleTargetRef"]["name"] for o in objects.get("ScaledObject", [])}
    assert not autoscaled & scaled, "one autoscaler per deployment"
    assert autoscaled | scaled == {d["metadata"]["name"] for n, d in deployments.items() if n in AUTOSCALED}
    # The workers scale on their RabbitMQ backlog: the queues the code consumes.
    from services.ingest.settings import Settings as IngestSettings

    worker_env = {e["name"]: e for e in deployments["ingest"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    for var in ("PRISM_INGEST_BROKER_URL", "PRISM_STORE_ACCESS_KEY", "PRISM_STORE_SECRET_KEY"):
        assert "secretKeyRef" in worker_env[var]["valueFrom"], var  # credentials only from Secrets
    (workers,) = objects["ScaledObject"]
    assert workers["spec"]["scaleTargetRef"]["name"] == deployments["ingest"]["metadata"]["name"]
    queues = {t["metadata"]["queueName"] for t in workers["spec"]["triggers"]}
    assert queues == {IngestSettings().media_queue, IngestSettings().text_queue}
    assert all(t["type"] == "rabbitmq" and t["authenticationRef"]["name"] for t in workers["spec"]["triggers"])
    workloads = deployments | {component(s): s for s in objects["StatefulSet"]}
    for policy in objects["NetworkPolicy"]:
        pod_labels = workloads[component(policy)]["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    # Off by default: no OTEL_* (nothing exported) and no models (pretrained spaces, nothing to wait for).
    for deployment in deployments.values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert not {e["name"] for e in container["env"]} & (otel_env() | {MODELS_ENV})
    assert "PersistentVolumeClaim" not in objects
    assert [component(j) for j in objects["Job"]] == ["minio-setup"]  # the in-cluster bucket's, no training


def test_helm_gpu_and_external_qdrant(helm: Any) -> None:
    objects = render(
        helm,
        {
            "qdrant": {"url": "https://qdrant.example:6333", "apiKey": {"secretName": "qdrant"}},
            "services": {"text-encoder": {"gpu": {"enabled": True}}},
        },
    )
    deployments = {component(d): d for d in objects["Deployment"]}
    encoder = deployments["text-encoder"]["spec"]["template"]["spec"]
    assert encoder["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert encoder["containers"][0]["image"].endswith("-cuda")
    assert any(t["key"] == "nvidia.com/gpu" for t in encoder["tolerations"])
    env = {e["name"]: e for e in deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PRISM_GATEWAY_QDRANT_URL"]["value"] == "https://qdrant.example:6333"
    assert env["PRISM_GATEWAY_QDRANT_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "qdrant", "key": "api-key"}


def test_helm_enforces_the_schema(helm: Any) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError):
        chart.validate_schema({"services": {"gateway": {"replicas": "two"}}})


def container_env(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_helm_tracing_reaches_every_deployment_and_the_code(
    helm: Any, otlp_collector: tuple[str, list[tuple[str, bytes]]]
) -> None:
    tracing = {"enabled": True, "endpoint": "http://collector.observability.svc:4318", "samplerArg": "1"}
    objects = render(helm, {"tracing": tracing})
    deployments = {component(d): d for d in objects["Deployment"]}
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        env = container_env(deployment)
        assert env["OTEL_SERVICE_NAME"]["value"] == name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == tracing["endpoint"]
        assert env["OTEL_TRACES_SAMPLER"]["value"] == values()["tracing"]["sampler"]
        assert {n for n in env if n.startswith("OTEL_")} <= otel_env()
    # The rendered variables, endpoint swapped for the loopback collector, configure the code.
    url, received = otlp_collector
    otel = {
        n: e["value"].replace(tracing["endpoint"], url)
        for n, e in container_env(deployments["fusion"]).items()
        if n.startswith("OTEL_")
    }
    result = run_traced("not-this-name", otel)
    assert result["exported"] is True
    assert result["sampler"].startswith("ParentBased{root:TraceIdRatioBased{1.0}")
    (resource,) = exported_resources(received)
    assert resource["service.name"] == "fusion" and resource["k8s.namespace.name"] == "shop"


def test_helm_sampler_choices_are_the_sdks() -> None:
    from opentelemetry.sdk.trace import sampling

    enum = schema()["properties"]["tracing"]["properties"]["sampler"]["enum"]
    assert set(enum) == set(sampling._KNOWN_SAMPLERS)  # what OTEL_TRACES_SAMPLER accepts
    assert values()["tracing"]["sampler"] in enum


QDRANT_CLUSTER = {
    "apiKey": {"secretName": "qdrant-api"},
    "collection": {"shardNumber": 6, "replicationFactor": 2, "writeConsistencyFactor": 2},
    "inCluster": {"replicas": 3, "cluster": {"enabled": True}},
}


def test_helm_qdrant_cluster_mode(helm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(helm, {"qdrant": QDRANT_CLUSTER})
    in_cluster = values()["qdrant"]["inCluster"]
    (sts,) = of(objects, "StatefulSet", "qdrant")
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    pod = sts["spec"]["template"]["spec"]
    (qdrant,) = pod["containers"]
    env = container_env(sts)
    assert env["QDRANT__CLUSTER__ENABLED"]["value"] == "true"
    assert env["QDRANT__CLUSTER__P2P__PORT"]["value"] == str(in_cluster["p2pPort"])
    assert env["QDRANT__SERVICE__API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "qdrant-api", "key": "api-key"}
    ports = {p["name"]: p["containerPort"] for p in qdrant["ports"]}
    assert ports == {"http": in_cluster["port"], "grpc": in_cluster["grpcPort"], "p2p": in_cluster["p2pPort"]}
    # Peers find each other through the headless Service: pod 0 starts the cluster, the others join it.
    services = {s["metadata"]["name"]: s for s in objects["Service"]}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert "p2p" in {p["name"] for p in headless["spec"]["ports"]}
    script = qdrant["args"][0]
    peer0 = f"http://{sts['metadata']['name']}-0.{headless['metadata']['name']}:{in_cluster['p2pPort']}"
    assert qdrant["command"] == ["/bin/bash", "-c"] and f'peer0="{peer0}"' in script
    assert '--bootstrap "$peer0"' in script and "--uri" in script
    # Non-root, read-only root filesystem, a volume per pod for the data.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert qdrant["securityContext"]["readOnlyRootFilesystem"] is True
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["storage"]
    assert qdrant["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    (pdb,) = of(objects, "PodDisruptionBudget", "qdrant")
    assert pdb["spec"]["maxUnavailable"] == 1
    # Every service that talks to Qdrant gets its URL, API key and the collection layout, and its
    # Settings turn them into the create_collection arguments.
    client_service = next(s for s in objects["Service"] if s["metadata"]["name"] == sts["metadata"]["name"])
    deployments = {component(d): d for d in objects["Deployment"]}
    for name, deployment in deployments.items():
        cls = settings_class(name)
        if "qdrant_url" not in cls.model_fields:
            assert not {n for n in container_env(deployment) if "QDRANT" in n}, name
            continue
        env = container_env(deployment)
        var = env_name(cls, "qdrant_api_key")
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "qdrant-api", "key": "api-key"}
        plain = {n: e["value"] for n, e in env.items() if "value" in e}
        assert plain[env_name(cls, "qdrant_url")] == (
            f"http://{client_service['metadata']['name']}.shop.svc:{client_service['spec']['ports'][0]['port']}"
        )
        for var in list(os.environ):
            if var.startswith("PRISM_"):
                monkeypatch.delenv(var)
        for var, value in plain.items():
            if var.startswith(env_prefix(cls)):
                monkeypatch.setenv(var, value)
        monkeypatch.setenv(env_name(cls, "qdrant_api_key"), "secret")
        assert issubclass(cls, IndexedServiceSettings)
        index = cls().index_settings()
        assert index.url == plain[env_name(cls, "qdrant_url")] and index.api_key == "secret"
        assert index.distribution() == {"shard_number": 6, "replication_factor": 2, "write_consistency_factor": 2}
    # The network: REST/gRPC from those services only, p2p only between the peers.
    (policy,) = [p for p in objects["NetworkPolicy"] if component(p) == "qdrant"]
    rules = {tuple(sorted(p["port"] for p in r["ports"])): r["from"] for r in policy["spec"]["ingress"]}
    clients = {f["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for f in rules[("grpc", "http")]}
    assert clients == {n for n in SERVICES if "qdrant_url" in settings_class(n).model_fields}
    assert [f["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for f in rules[("p2p",)]] == ["qdrant"]


def test_helm_qdrant_single_node_and_existing_service(helm: Any) -> None:
    objects = render(helm, {})
    (sts,) = of(objects, "StatefulSet", "qdrant")
    (qdrant,) = sts["spec"]["template"]["spec"]["containers"]
    assert (
        sts["spec"]["replicas"] == 1
        and "command" not in qdrant
        and "QDRANT__CLUSTER__ENABLED" not in container_env(sts)
    )
    assert not of(objects, "PodDisruptionBudget", "qdrant")
    gateway = next(d for d in objects["Deployment"] if component(d) == "gateway")
    assert not {n for n in container_env(gateway) if n.endswith(("_SHARD_NUMBER", "_REPLICATION_FACTOR", "_API_KEY"))}
    # A Qdrant already in the namespace: no StatefulSet, the services use its Service.
    objects = render(helm, {"qdrant": {"inCluster": {"deploy": False, "serviceName": "vectors"}}})
    assert not of(objects, "StatefulSet", "qdrant")
    gateway = next(d for d in objects["Deployment"] if component(d) == "gateway")
    assert container_env(gateway)["PRISM_GATEWAY_QDRANT_URL"]["value"] == "http://vectors.shop.svc:6333"
    assert not [p for p in objects["NetworkPolicy"] if component(p) == "qdrant"]


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"collection": {"replicationFactor": 2, "writeConsistencyFactor": 3}}, "no write could succeed"),
        ({"collection": {"writeConsistencyFactor": 2}}, "no write could succeed"),
        ({"inCluster": {"replicas": 3}}, "needs qdrant.inCluster.cluster.enabled"),
        ({"collection": {"replicationFactor": 2}}, "exceeds qdrant.inCluster.replicas"),
    ],
)
def test_helm_refuses_impossible_qdrant_layouts(helm: Any, overrides: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(complaint)):
        render(helm, {"qdrant": overrides})


def test_helm_trained_models_volume_and_training_job(helm: Any) -> None:
    from prism.training.train import build_parser

    mount = values()["models"]["mountPath"]
    objects = render(helm, {"models": {"enabled": True, "training": {"enabled": True, "dataClaim": "catalogs"}}})
    (claim,) = objects["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for deployment in objects["Deployment"]:
        name, pod = component(deployment), deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = container_env(deployment)
        volumes = {v["name"]: v for v in pod["volumes"]}
        if name not in model_users():
            assert MODELS_ENV not in env and "models" not in volumes, name
            continue
        assert env[MODELS_ENV]["value"] == mount, name
        assert {"name": "models", "mountPath": mount, "readOnly": True} in container["volumeMounts"], name
        assert volumes["models"]["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
        # Held until a trained version is there: the files resolve_version accepts.
        wait = next(c for c in pod["initContainers"] if c["name"] == "wait-for-models")
        assert f"test -f {mount}/{MANIFEST_FILE}" in wait["command"][2]
        assert f"test -f {mount}/{HEAD_WEIGHTS_FILE}" in wait["command"][2]
        assert wait["image"] == container["image"]
    (job,) = of(objects, "Job", "train")
    pod = job["spec"]["template"]["spec"]
    (train,) = pod["containers"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    assert train["args"][0] == "train"
    args = build_parser().parse_args(train["args"][1:])  # the options `prism train` really has
    assert str(args.out) == mount and [str(c) for c in args.catalog] == ["/data/catalogs/hm", "/data/catalogs/myntra"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}  # the writer
    assert {"name": "models", "mountPath": mount} in train["volumeMounts"]
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "catalogs", "readOnly": True}
    # An existing claim: mounted as it is, nothing created; no data claim: training refused.
    objects = render(helm, {"models": {"enabled": True, "existingClaim": "trained", "waitForModels": False}})
    assert "PersistentVolumeClaim" not in objects and not of(objects, "Job", "train")
    gateway = next(d for d in objects["Deployment"] if component(d) == "gateway")["spec"]["template"]["spec"]
    assert {v["name"]: v for v in gateway["volumes"]}["models"]["persistentVolumeClaim"]["claimName"] == "trained"
    assert "initContainers" not in gateway
    with pytest.raises(helm.HelmError, match="dataClaim"):
        render(helm, {"models": {"enabled": True, "training": {"enabled": True}}})


# In-cluster RabbitMQ and MinIO, or external ones: what the chart renders for each, against the code.


def rabbitmq_conf(text: str) -> dict[str, str]:
    """rabbitmq.conf (sysctl format) as key -> value; comments dropped, a key set twice refused."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and key.strip() not in out, line
        out[key.strip()] = value.strip()
    return out


def quantity_bytes(text: str) -> int:
    m = re.fullmatch(r"(\d+)(Mi|Gi)", text)
    assert m, text
    return int(m.group(1)) * {"Mi": 2**20, "Gi": 2**30}[m.group(2)]


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def client_service(objects: dict[str, list[dict[str, Any]]], name: str) -> dict[str, Any]:
    (service,) = [s for s in of(objects, "Service", name) if s["spec"].get("clusterIP") != "None"]
    return service


def peer_components(peers: list[dict[str, Any]]) -> set[str]:
    return {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in peers if "podSelector" in p}


def broker_refs(objects: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, str]]:
    """Where each user of the broker takes its AMQP URL from: the workers' env, the in-cluster MinIO's
    AMQP target, the workers' KEDA scaler."""
    refs = {}
    for deployment in objects["Deployment"]:
        name = component(deployment)
        if name in broker_users():
            var = env_name(settings_class(name), "broker_url")
            refs[name] = container_env(deployment)[var]["valueFrom"]["secretKeyRef"]
    for sts in of(objects, "StatefulSet", "minio"):
        (url,) = [e for n, e in container_env(sts).items() if n.startswith("MINIO_NOTIFY_AMQP_URL_")]
        refs["minio"] = url["valueFrom"]["secretKeyRef"]
    for auth in objects.get("TriggerAuthentication", []):
        (host,) = [t for t in auth["spec"]["secretTargetRef"] if t["parameter"] == "host"]
        refs["keda"] = {"name": host["name"], "key": host["key"]}
    return refs


def test_helm_rabbitmq_forms_one_quorum_cluster_by_kubernetes_discovery(helm: Any) -> None:
    from types import SimpleNamespace

    from services.ingest.app import IngestApp
    from services.ingest.settings import Settings as IngestSettings

    in_cluster = values()["rabbitmq"]["inCluster"]
    objects = render(helm, {})
    (sts,) = of(objects, "StatefulSet", "rabbitmq")
    pod = sts["spec"]["template"]["spec"]
    (rabbit,) = pod["containers"]
    env = container_env(sts)
    ports = {p["name"]: p["containerPort"] for p in rabbit["ports"]}
    assert sts["spec"]["replicas"] == in_cluster["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    services = {s["metadata"]["name"]: s for s in of(objects, "Service", "rabbitmq")}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    # rabbitmq.conf: quorum queues by default (the workers declare theirs quorum themselves) ...
    (config,) = of(objects, "ConfigMap", "rabbitmq")
    conf = rabbitmq_conf(config["data"]["rabbitmq.conf"])
    assert conf["default_queue_type"] == "quorum"
    worker = SimpleNamespace(in_memory=False, settings=IngestSettings())
    assert IngestApp.queue_arguments(worker)["x-queue-type"] == "quorum"  # type: ignore[arg-type]
    assert "services/ingest/app.py" in config["data"]["rabbitmq.conf"]
    # ... and the cluster formed from the pods behind the headless Service, named as the nodes name
    # themselves (the plugin joins rabbit@<pod><suffix> for each endpoint).
    plugins = re.fullmatch(r"\[([\w,]+)\]\.", config["data"]["enabled_plugins"])
    assert plugins and "rabbitmq_peer_discovery_k8s" in plugins.group(1).split(",")
    assert conf["cluster_formation.peer_discovery_backend"] == "rabbit_peer_discovery_k8s"
    assert conf["cluster_formation.k8s.service_name"] == headless["metadata"]["name"]
    assert conf["cluster_formation.k8s.address_type"] == "hostname"
    suffix = conf["cluster_formation.k8s.hostname_suffix"]
    assert suffix == f".{headless['metadata']['name']}.shop.svc.{in_cluster['clusterDomain']}"
    assert env["RABBITMQ_USE_LONGNAME"]["value"] == "true"
    assert env["RABBITMQ_NODENAME"]["value"].replace("$(MY_POD_NAMESPACE)", "shop") == f"rabbit@$(MY_POD_NAME){suffix}"
    assert env["MY_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["MY_POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # Ports: AMQP as configured, Erlang distribution fixed where the NetworkPolicy opens it.
    assert int(conf["listeners.tcp.default"]) == ports["amqp"] == in_cluster["port"]
    assert int(conf["management.tcp.port"]) == ports["management"]
    assert int(conf["prometheus.tcp.port"]) == ports["metrics"]
    assert int(env["RABBITMQ_DIST_PORT"]["value"]) == ports["dist"] == 25672
    assert int(env["ERL_EPMD_PORT"]["value"]) == ports["epmd"] == 4369
    assert {p["name"] for p in headless["spec"]["ports"]} >= {"epmd", "dist"}
    # The node's memory is 80% of the container's limit, not the host's.
    limit = quantity_bytes(in_cluster["resources"]["limits"]["memory"])
    assert int(conf["total_memory_available_override_value"]) == limit * 4 // 5
    assert rabbit["resources"]["limits"]["memory"] == in_cluster["resources"]["limits"]["memory"]
    # Config changes roll the pods.
    digest = hashlib.sha256(f"{config['data']['rabbitmq.conf'].rstrip()}\n{config['data']['enabled_plugins']}".encode())
    assert sts["spec"]["template"]["metadata"]["annotations"]["checksum/config"] == digest.hexdigest()
    # What the plugin needs of the API: `get endpoints`, with the pods' own token.
    (account,) = of(objects, "ServiceAccount", "rabbitmq")
    (role,) = of(objects, "Role", "rabbitmq")
    (binding,) = of(objects, "RoleBinding", "rabbitmq")
    assert pod["serviceAccountName"] == account["metadata"]["name"] and pod["automountServiceAccountToken"] is True
    assert {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["get"]} in role["rules"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "shop"}]
    # Node-local probes; a node stops only once its quorum queues keep a majority without it.
    assert rabbit["startupProbe"]["exec"]["command"] == ["rabbitmq-diagnostics", "-q", "ping"]
    assert rabbit["livenessProbe"]["exec"]["command"] == ["rabbitmq-diagnostics", "-q", "ping"]
    assert rabbit["readinessProbe"]["exec"]["command"] == ["rabbitmq-diagnostics", "-q", "check_port_connectivity"]
    pre_stop = rabbit["lifecycle"]["preStop"]["exec"]["command"][2]
    wait = re.search(r"rabbitmq-upgrade await_online_quorum_plus_one -t (\d+)", pre_stop)
    grace = pod["terminationGracePeriodSeconds"]
    assert wait and int(wait.group(1)) < grace == in_cluster["terminationGracePeriodSeconds"]
    (pdb,) = of(objects, "PodDisruptionBudget", "rabbitmq")
    assert pdb["spec"]["maxUnavailable"] == 1
    # Non-root as the image's user, read-only root filesystem: config and the owner-only Erlang cookie
    # are assembled in writable volumes, the data on a volume per pod.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 999
    assert rabbit["securityContext"]["readOnlyRootFilesystem"] is True
    (setup,) = pod["initContainers"]
    assert "chmod 400 /var/lib/rabbitmq/.erlang.cookie" in setup["command"][2]
    assert setup["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in rabbit["volumeMounts"]}
    assert mounts["/var/lib/rabbitmq/mnesia"] == "data" and mounts["/etc/rabbitmq"] == "etc"
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["data"]
    # One node: no PodDisruptionBudget, no quorum wait (it would wait for peers that do not exist).
    objects = render(helm, {"rabbitmq": {"inCluster": {"replicas": 1}}})
    (sts,) = of(objects, "StatefulSet", "rabbitmq")
    assert "lifecycle" not in sts["spec"]["template"]["spec"]["containers"][0]
    assert not of(objects, "PodDisruptionBudget", "rabbitmq")


def test_helm_broker_url_reaches_the_workers_minio_and_keda(helm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from urllib.parse import urlsplit

    from services.ingest.app import create_app
    from services.ingest.settings import Settings as IngestSettings

    objects = render(helm, {})
    (secret,) = of(objects, "Secret", "rabbitmq")
    data = secret_data(secret)
    service = client_service(objects, "rabbitmq")
    amqp = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "amqp")
    # The generated URL, as the workers' own app reads it: the client Service, vhost "/", the user.
    for var in list(os.environ):
        if var.startswith("PRISM_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv(env_name(IngestSettings, "broker_url"), data["amqp-url"])
    with create_app(IngestSettings()).connection_for_write() as conn:
        assert (conn.hostname, conn.port, conn.virtual_host) == (f"{service['metadata']['name']}.shop.svc", amqp, "/")
        assert (conn.userid, conn.password) == (data["username"], data["password"])
    # Vhost "/" as the AMQP URI spec writes it: a bare trailing slash is the empty vhost to clients
    # that follow the spec (kombu and amqp091-go happen to read both as "/").
    assert urlsplit(data["amqp-url"]).path == "/%2F"
    assert data["username"] == values()["rabbitmq"]["inCluster"]["auth"]["username"]
    assert len(data["password"]) >= 32 and len(data["erlang-cookie"]) >= 32
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    ref = {"name": secret["metadata"]["name"], "key": "amqp-url"}
    assert broker_refs(objects) == {"ingest": ref, "minio": ref, "keda": ref}
    # The nodes seed that user and authenticate each other with that cookie.
    (sts,) = of(objects, "StatefulSet", "rabbitmq")
    pod = sts["spec"]["template"]["spec"]
    (setup,) = pod["initContainers"]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in setup["env"]} == {
        "RABBITMQ_USERNAME": {"name": ref["name"], "key": "username"},
        "RABBITMQ_PASSWORD": {"name": ref["name"], "key": "password"},
    }
    assert {v["name"]: v for v in pod["volumes"]}["secret"]["secret"]["secretName"] == ref["name"]
    # An existing Secret instead: nothing generated, the same users read it.
    objects = render(helm, {"rabbitmq": {"inCluster": {"auth": {"existingSecret": "broker"}}}})
    assert not of(objects, "Secret", "rabbitmq")
    assert broker_refs(objects) == {u: {"name": "broker", "key": "amqp-url"} for u in ("ingest", "minio", "keda")}
    # An external broker: no RabbitMQ objects at all, every user reads external's Secret.
    objects = render(
        helm, {"rabbitmq": {"inCluster": {"enabled": False}, "external": {"secretName": "mq", "secretKey": "url"}}}
    )
    assert not any(of(objects, kind, "rabbitmq") for kind in objects)
    assert broker_refs(objects) == {u: {"name": "mq", "key": "url"} for u in ("ingest", "minio", "keda")}


@pytest.mark.parametrize("mode", ["in-cluster", "external"])
def test_helm_object_store_reaches_the_services(helm: Any, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    external = {"endpoint": "s3.example.net:443", "secretName": "store", "accessKeyKey": "id", "secretKeyKey": "key"}
    external["notifyArn"] = "arn:minio:sqs::SHOP:amqp"
    if mode == "in-cluster":
        objects = render(helm, {})
        (secret,) = of(objects, "Secret", "minio")
        service = client_service(objects, "minio")
        api = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "api")
        endpoint, secure = f"{service['metadata']['name']}.shop.svc:{api}", False
        keys = {"name": secret["metadata"]["name"], "access": "access-key", "secret": "secret-key"}
        assert set(secret_data(secret)) == {"access-key", "secret-key"}
        arn = f"arn:minio:sqs::{values()['minio']['inCluster']['notify']['target']}:amqp"
    else:
        objects = render(helm, {"minio": {"inCluster": {"enabled": False}, "external": external}})
        assert not any(of(objects, kind, name) for kind in objects for name in ("minio", "minio-setup"))
        endpoint, secure, arn = external["endpoint"], True, external["notifyArn"]
        keys = {"name": "store", "access": "id", "secret": "key"}
    for deployment in objects["Deployment"]:
        name, env = component(deployment), container_env(deployment)
        store = {n: e for n, e in env.items() if n.startswith(env_prefix(StoreSettings))}
        if name not in STORE_USERS:
            assert not store, name
            continue
        for cred, key in (("access_key", keys["access"]), ("secret_key", keys["secret"])):
            assert store[env_name(StoreSettings, cred)]["valueFrom"]["secretKeyRef"] == {
                "name": keys["name"],
                "key": key,
            }
        # The plain variables, given to StoreSettings as the pod gets them.
        for var in list(os.environ):
            if var.startswith("PRISM_"):
                monkeypatch.delenv(var)
        for var, e in store.items():
            monkeypatch.setenv(var, e.get("value", f"<{var}>"))
        settings = StoreSettings()
        assert (settings.backend, settings.endpoint, settings.secure) == ("s3", endpoint, secure), name
        assert settings.bucket == values()["minio"]["bucket"], name
        assert settings.notify_arn == (arn if name in bucket_subscribers() else ""), name
    if mode == "external":
        with pytest.raises(helm.HelmError, match=re.escape("minio.external.endpoint")):
            render(helm, {"minio": {"inCluster": {"enabled": False}}})


def test_helm_minio_server_bucket_and_events_to_the_workers(helm: Any) -> None:
    in_cluster = values()["minio"]["inCluster"]
    objects = render(helm, {})
    (sts,) = of(objects, "StatefulSet", "minio")
    pod = sts["spec"]["template"]["spec"]
    (minio,) = pod["containers"]
    env = container_env(sts)
    assert sts["spec"]["replicas"] == 1 and minio["args"][0] == "server" and minio["args"][-1] == "/data"
    assert not of(objects, "PodDisruptionBudget", "minio")
    assert minio["livenessProbe"]["httpGet"] == {"path": "/minio/health/live", "port": "api"}
    assert minio["readinessProbe"]["httpGet"] == {"path": "/minio/health/ready", "port": "api"}
    assert minio["startupProbe"]["httpGet"] == {"path": "/minio/health/live", "port": "api"}
    assert {p["name"]: p["containerPort"] for p in minio["ports"]} == {
        "api": in_cluster["port"],
        "console": in_cluster["consolePort"],
    }
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert minio["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "data", "mountPath": "/data"} in minio["volumeMounts"]
    # Bucket events go to the exchange the workers consume, under the ARN they subscribe the bucket to.
    deployments = {component(d): d for d in objects["Deployment"]}
    ingest = {n: e["value"] for n, e in container_env(deployments["ingest"]).items() if "value" in e}
    arn = ingest[env_name(StoreSettings, "notify_arn")]
    target = re.fullmatch(r"arn:minio:sqs::(\w+):amqp", arn)
    assert target, arn
    exchange = ingest_exchange()
    amqp = {n.removesuffix(f"_{target.group(1)}"): e for n, e in env.items() if n.startswith("MINIO_NOTIFY_AMQP_")}
    assert amqp["MINIO_NOTIFY_AMQP_ENABLE"]["value"] == "on"
    assert amqp["MINIO_NOTIFY_AMQP_EXCHANGE"]["value"] == exchange.name
    assert amqp["MINIO_NOTIFY_AMQP_EXCHANGE_TYPE"]["value"] == exchange.type
    assert amqp["MINIO_NOTIFY_AMQP_DURABLE"]["value"] == "on" and exchange.durable
    assert amqp["MINIO_NOTIFY_AMQP_DELIVERY_MODE"]["value"] == "2"
    assert set(amqp) == {
        f"MINIO_NOTIFY_AMQP_{k}" for k in ("ENABLE", "URL", "EXCHANGE", "EXCHANGE_TYPE", "DURABLE", "DELIVERY_MODE")
    }
    # The Job creates the bucket the services use and subscribes it to that target, for the events the
    # workers subscribe it to themselves, at the endpoint the services use, after install and upgrade.
    (job,) = of(objects, "Job", "minio-setup")
    assert set(job["metadata"]["annotations"]["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    (mc,) = job["spec"]["template"]["spec"]["containers"]
    script, bucket = mc["command"][2], ingest[env_name(StoreSettings, "bucket")]
    assert mc["image"] == minio["image"]
    assert f'mc alias set local "http://{ingest[env_name(StoreSettings, "endpoint")]}"' in script
    assert f'mc mb --ignore-existing "local/{bucket}"' in script
    added = re.search(rf'mc event add "local/{re.escape(bucket)}" "{re.escape(arn)}" --event ([\w,]+)', script)
    assert added and {MC_EVENTS[e] for e in added.group(1).split(",")} == bucket_events()
    job_env = container_env({"spec": job["spec"]})
    assert job_env["MINIO_ROOT_USER"]["valueFrom"] == env["MINIO_ROOT_USER"]["valueFrom"]
    assert job_env["MINIO_ROOT_PASSWORD"]["valueFrom"] == env["MINIO_ROOT_PASSWORD"]["valueFrom"]
    # Four servers or more: one distributed server over every pod's volume, named by the headless Service.
    objects = render(helm, {"minio": {"inCluster": {"replicas": 4}}})
    (sts,) = of(objects, "StatefulSet", "minio")
    headless = next(s for s in of(objects, "Service", "minio") if s["metadata"]["name"] == sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    volumes = (
        f"http://{sts['metadata']['name']}-{{0...3}}.{headless['metadata']['name']}.shop.svc.cluster.local:9000/data"
    )
    assert sts["spec"]["template"]["spec"]["containers"][0]["args"][-1] == volumes
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    (pdb,) = of(objects, "PodDisruptionBudget", "minio")
    assert pdb["spec"]["maxUnavailable"] == 1
    # Two or three servers cannot erasure-code: Helm refuses them by the schema.
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema({"minio": {"inCluster": {"replicas": 4}}})
        for bad in (2, 3):
            with pytest.raises(helm.HelmError, match="anyOf"):
                chart.validate_schema({"minio": {"inCluster": {"replicas": bad}}})


def test_helm_network_policies_open_the_broker_and_store_to_their_users(helm: Any) -> None:
    metrics_from = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    objects = render(helm, {"minio": {"inCluster": {"replicas": 4}}, "networkPolicy": {"metricsFrom": metrics_from}})

    def ingress(name: str) -> dict[tuple[str, ...], list[dict[str, Any]]]:
        (policy,) = of(objects, "NetworkPolicy", name)
        return {tuple(sorted(p["port"] for p in r["ports"])): r["from"] for r in policy["spec"]["ingress"]}

    def container_ports_of(name: str) -> dict[str, int]:
        (sts,) = of(objects, "StatefulSet", name)
        (container,) = sts["spec"]["template"]["spec"]["containers"]
        return {p["name"]: p["containerPort"] for p in container["ports"]}

    # RabbitMQ: AMQP (5672) from the workers, MinIO's event target and KEDA; epmd (4369) and
    # distribution (25672) only between the nodes; Prometheus from metricsFrom.
    rules, ports = ingress("rabbitmq"), container_ports_of("rabbitmq")
    assert (ports["amqp"], ports["epmd"], ports["dist"]) == (5672, 4369, 25672)
    assert set(rules) == {("amqp",), ("dist", "epmd"), ("metrics",)}
    assert peer_components(rules[("amqp",)]) == broker_users() | {"minio"}
    assert [p for p in rules[("amqp",)] if "podSelector" not in p] == values()["networkPolicy"]["brokerFrom"]
    assert rules[("dist", "epmd")] == [
        {"podSelector": {"matchLabels": of(objects, "StatefulSet", "rabbitmq")[0]["spec"]["selector"]["matchLabels"]}}
    ]
    assert rules[("metrics",)] == metrics_from
    # MinIO: the S3 API (9000) from the services that use the store, the setup Job and, distributed,
    # the other MinIO pods; nothing else (the console is for kubectl port-forward).
    rules, ports = ingress("minio"), container_ports_of("minio")
    assert ports["api"] == 9000 and set(rules) == {("api",)}
    assert peer_components(rules[("api",)]) == STORE_USERS | {"minio", "minio-setup"}
    # Each selector matches the pods it means.
    pods = {
        component(w): w["spec"]["template"]["metadata"]["labels"]
        for kind in ("Deployment", "StatefulSet", "Job")
        for w in objects[kind]
    }
    for name in ("rabbitmq", "minio"):
        for peers in ingress(name).values():
            for peer in peers:
                if "podSelector" in peer:
                    labels = peer["podSelector"]["matchLabels"]
                    assert labels.items() <= pods[labels["app.kubernetes.io/component"]].items()
