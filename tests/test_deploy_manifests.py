"""The deployment examples under deploy/ (docs/deployment.md) stay true to the code: every YAML
file parses, every Sensorium container runs `sensorium ingest|worker|api` with options those
commands have, and the example configuration loads. (They are never run here: no Docker daemon,
no Kubernetes cluster.)"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMMANDS = ("ingest", "worker", "api")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_documents() -> list[dict[str, Any]]:
    return [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in documents(p)]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def sensorium_containers() -> list[tuple[str, dict[str, Any]]]:
    """(where, container) of every Kubernetes container running the Sensorium image."""
    out = []
    for doc in k8s_documents():
        if doc.get("kind") in WORKLOADS:
            for c in pod_spec(doc).get("containers", []):
                if "sensorium" in str(c.get("image", "")):
                    out.append((f"{doc['kind']}/{doc['metadata']['name']}", c))
    return out


def compose() -> dict[str, Any]:
    (doc,) = documents(DEPLOY / "docker-compose.yml")
    return doc  # type: ignore[no-any-return]


def sensorium_argvs() -> list[tuple[str, list[str]]]:
    """(where, argv) of every Sensorium process the examples start (Kubernetes and Compose)."""
    out = [(w, [*c.get("command", []), *c.get("args", [])]) for w, c in sensorium_containers()]
    for name, svc in compose()["services"].items():
        if "build" in svc or "sensorium" in str(svc.get("image", "")):
            cmd = svc.get("command")
            assert isinstance(cmd, list), f"compose service {name}: give the command as a list"
            out.append((f"compose/{name}", [*svc.get("entrypoint", []), *cmd]))
    return out


@cache
def help_options(command: str) -> frozenset[str]:
    """The options `sensorium <command> --help` lists."""
    from typer.testing import CliRunner

    from sensorium.cli.main import app

    result = CliRunner().invoke(
        app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    )
    assert result.exit_code == 0, result.output
    return frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])\b", result.output))


def test_every_yaml_file_parses() -> None:
    files = yaml_files()
    assert DEPLOY / "docker-compose.yml" in files
    assert len([p for p in files if p.parent.name == "k8s"]) >= 5
    for p in files:
        docs = documents(p)
        assert docs, f"{p}: no YAML document"
        for d in docs:
            assert isinstance(d, dict), f"{p}: a document that is not a mapping"


def test_every_sensorium_command_is_ingest_worker_or_api_with_options_that_exist() -> None:
    from typer.main import get_command

    from sensorium.cli.main import app

    cli = get_command(app)
    argvs = sensorium_argvs()
    seen = {argv[1] for _, argv in argvs if len(argv) > 1}
    assert seen == set(COMMANDS), seen  # the examples run all three, and nothing else
    for where, argv in argvs:
        assert argv[0] == "sensorium", f"{where}: {argv}"
        assert argv[1] in COMMANDS, f"{where}: {argv}"
        known = help_options(argv[1])
        for arg in argv[2:]:
            if arg.startswith("-"):
                flag = arg.split("=", 1)[0]
                assert flag in known, f"{where}: `sensorium {argv[1]}` has no option {flag} ({sorted(known)})"
        # and the command line parses (values of the right type, nothing left over)
        sub = cli.commands[argv[1]]  # type: ignore[attr-defined]
        sub.make_context(argv[1], list(argv[2:]))


def test_compose_defines_the_services() -> None:
    services = compose()["services"]
    for name in ("nats", "postgres", "ingest", "worker", "api"):
        assert name in services, name
    assert "--jetstream" in services["nats"]["command"]
    assert services["worker"]["command"][:2] == ["sensorium", "worker"]


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("SENSORIUM_"):
            monkeypatch.delenv(k)


def test_the_toml_example_loads_and_uses_nats(monkeypatch: pytest.MonkeyPatch) -> None:
    from sensorium.config import load_settings

    _clean_env(monkeypatch)
    s = load_settings(DEPLOY / "sensorium.toml")
    assert s.log_backend == "nats"
    assert s.nats_replicas == 3 and s.nats_partitions >= 12
    assert s.cache == "redis" and s.cache_instance


def test_k8s_configmap_is_the_toml_example() -> None:
    (cm,) = [d for d in k8s_documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sensorium-config"]
    assert cm["data"]["sensorium.toml"] == (DEPLOY / "sensorium.toml").read_text()


def test_k8s_manifests_are_namespace_free_and_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    from sensorium.config import load_settings

    docs = k8s_documents()
    for d in docs:
        assert "namespace" not in d["metadata"], d["metadata"]
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    # NATS: 3 servers with JetStream
    nats = by_kind["StatefulSet"]["nats"]
    assert nats["spec"]["replicas"] == 3
    assert "jetstream" in by_kind["ConfigMap"]["nats-config"]["data"]["nats.conf"]
    assert "postgres" in by_kind["StatefulSet"]
    # the shared data directory: ReadWriteMany, mounted by every Sensorium pod
    pvc = by_kind["PersistentVolumeClaim"]["sensorium-data"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for kind in WORKLOADS:
        for name, d in by_kind.get(kind, {}).items():
            spec = pod_spec(d)
            if any("sensorium" in str(c.get("image", "")) for c in spec["containers"]):
                claims = [v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", [])
                          if "persistentVolumeClaim" in v]
                assert claims == ["sensorium-data"], name
    # each role has its workload, ingest and api a Service
    roles = {c["command"][1]: w for w, c in sensorium_containers()}
    assert set(roles) == set(COMMANDS)
    for svc in ("sensorium-ingest", "sensorium-api"):
        assert svc in by_kind["Service"], svc
    # no more workers than partitions (an extra worker would own nothing)
    _clean_env(monkeypatch)
    s = load_settings(DEPLOY / "sensorium.toml")
    workers = by_kind["StatefulSet"]["sensorium-worker"]["spec"]["replicas"]
    assert workers <= s.nats_partitions


def test_k8s_environment_overrides_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings given as literal SENSORIUM_* values in a container's environment (the MQTT
    sources of the MQTT ingest node) are valid on top of the TOML example."""
    from sensorium.config import load_settings

    for where, c in sensorium_containers():
        _clean_env(monkeypatch)
        for e in c.get("env", []):
            if e["name"].startswith("SENSORIUM_") and "value" in e:
                monkeypatch.setenv(e["name"], e["value"])
        s = load_settings(DEPLOY / "sensorium.toml")
        assert s.log_backend == "nats", where
        if c["command"][1] == "ingest" and os.environ.get("SENSORIUM_MQTT_SOURCES"):
            assert s.mqtt_sources and s.mqtt_sources[0].topics, where
