"""The image and the Kubernetes manifests, checked offline: there is no Docker engine or
cluster here. The manifests are validated against the Kubernetes JSON schemas that the
kubernetes-validate package ships (no network: the test forbids it), and checked against
each other, the ConfigMap, env/production.json and the Dockerfile."""

from __future__ import annotations

import json
import re
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from orchestrator import config

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests promise to work on; they are also validated against
# the newest schemas the installed kubernetes-validate ships.
MIN_KUBERNETES = "1.30"
NOT_LISTED = {"kustomization.yaml", "secret.example.yaml"}  # the Secret is made by hand
CRD_KINDS = {"ScaledObject"}  # no schema in kubernetes-validate: checked field by field
# Settings other branches add (harmless once they are settings keys).
SHUTDOWN_MARGIN = 5.0  # seconds a worker's stop may take beyond SHUTDOWN_GRACE
DESIRED_WORKERS = "orchestrator_fleet_desired_workers"
SECRET = "orchestrator-secrets"
OPTIONAL_SECRET_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # IRSA instead
PROBE_PATHS = {"livenessProbe": "/livez", "readinessProbe": "/readyz", "startupProbe": "/livez"}


# --- loading --------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def resources() -> list[dict[str, Any]]:
    """Every object the kustomization applies."""
    return [doc for name in kustomization()["resources"] for doc in load_docs(K8S / name)]


def only(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in resources() if doc["kind"] == kind]


def settings_map() -> dict[str, str]:
    (configmap,) = only("ConfigMap")
    data: dict[str, str] = configmap["data"]
    return data


def production_json() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((REPO / "env" / "production.json").read_text())
    return raw


def expected(key: str) -> int:
    """The ConfigMap's value of a port setting, which env/production.json must agree with
    when it has the key (the image runs production.json under the ConfigMap's values)."""
    value = int(settings_map()[key])
    prod = production_json()
    if key in prod:
        assert prod[key] == value, f"{key}: ConfigMap {value}, env/production.json {prod[key]}"
    return value


def containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, container) for every container of every Deployment."""
    for deployment in only("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def env_value(container: dict[str, Any], name: str) -> str | None:
    for var in container.get("env", []):
        if var["name"] == name:
            return str(var["value"]) if "value" in var else None
    return None


def port_number(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, by number or name, as a containerPort of `container`."""
    numbers = {p["containerPort"]: p["containerPort"] for p in container.get("ports", [])}
    names = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    found = names.get(port) if isinstance(port, str) else numbers.get(port)
    assert found is not None, f"{container['name']}: port {port!r} is not a containerPort"
    return found


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = (line.strip() for line in text.splitlines())
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines)
        if word and not word.startswith("#")
    ]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    start = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[start:]


def docker_user() -> int:
    users = [args for op, args in final_stage() if op == "USER"]
    assert users, "the image must not run as root: no USER in the final stage"
    user = users[-1].partition(":")[0]
    assert user.isdigit(), f"USER {user!r}: runAsNonRoot can only verify a numeric uid"
    return int(user)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to connect: the schemas must come from the installed package."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the deploy tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- the files ------------------------------------------------------------------------


def test_kustomization_lists_exactly_the_manifests() -> None:
    present = {p.name for p in K8S.glob("*.yaml")} - NOT_LISTED
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a manifest is listed twice"
    assert set(listed) == present
    assert "secret.example.yaml" in {p.name for p in K8S.glob("*.yaml")}


def test_manifests_are_namespace_agnostic() -> None:
    for doc in [*resources(), *load_docs(K8S / "secret.example.yaml")]:
        assert "namespace" not in doc["metadata"], f"{doc['kind']} {doc['metadata']['name']}"


@pytest.mark.parametrize("version", [MIN_KUBERNETES, kubernetes_validate.latest_version()])
@pytest.mark.usefixtures("no_network")
def test_manifests_match_the_kubernetes_schemas_strictly(version: str) -> None:
    # strict: a field the schema does not know (a typo, a misplaced key) fails.
    docs = [*resources(), *load_docs(K8S / "secret.example.yaml")]
    checked = set()
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} at {where}: {exc.message}")
        checked.add(doc["kind"])
    expected_kinds = {"ConfigMap", "Secret", "ServiceAccount", "Deployment", "Service"}
    assert expected_kinds | {"PodDisruptionBudget"} <= checked


def test_schemas_come_from_the_installed_package() -> None:
    package = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    assert (package / f"v{MIN_KUBERNETES}.0-local-strict" / "deployment-apps-v1.json").is_file()


# --- ports and probes -----------------------------------------------------------------


def test_probes_use_the_health_port_and_paths() -> None:
    health_port = expected("HEALTH_PORT")
    seen = set()
    for deployment, container in containers():
        where = f"{deployment['metadata']['name']}/{container['name']}"
        for probe, path in PROBE_PATHS.items():
            if probe not in container:
                continue
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{where} {probe}: {get['path']}"
            assert port_number(container, get["port"]) == health_port, f"{where} {probe}"
            seen.add((deployment["metadata"]["name"], probe))
        for probe in ("livenessProbe", "readinessProbe"):
            assert (deployment["metadata"]["name"], probe) in seen, f"{where}: no {probe}"


def test_deployments_run_the_modes_master_and_worker() -> None:
    modes = {env_value(c, "MODE") for _, c in containers()}
    assert modes == {"M", "W"}
    for deployment, container in containers():
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "orchestrator"
        env_from = [e["configMapRef"]["name"] for e in container.get("envFrom", [])]
        assert only("ConfigMap")[0]["metadata"]["name"] in env_from
        if "M" in (env_value(container, "MODE") or ""):
            assert port_number(container, "http") == expected("PORT")


def test_masters_run_two_replicas_and_workers_leave_replicas_to_keda() -> None:
    for deployment, container in containers():
        replicas = deployment["spec"].get("replicas")
        if env_value(container, "MODE") == "M":
            assert replicas == 2
        else:
            assert replicas is None, "re-applying would reset the replicas KEDA chose"


def test_service_targets_the_masters_api_port() -> None:
    (service,) = only("Service")
    masters = [(d, c) for d, c in containers() if env_value(c, "MODE") == "M"]
    (master, container), *_ = masters
    labels = master["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port_number(container, port["targetPort"]) == expected("PORT")
    notes = service["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert notes["prometheus.io/path"] == "/metrics"
    assert int(notes["prometheus.io/port"]) == expected("PORT")


def test_workers_get_longer_than_the_shutdown_grace_to_stop() -> None:
    grace = float(settings_map()["SHUTDOWN_GRACE"])
    for deployment, container in containers():
        if "W" in (env_value(container, "MODE") or ""):
            period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert period > grace + SHUTDOWN_MARGIN, f"{period} s <= {grace} s + margin"


# --- settings, secrets, security ------------------------------------------------------


def test_configmap_holds_valid_settings(tmp_path: Path) -> None:
    data = settings_map()
    keys = set(config.setting_keys())
    unknown = set(data) - keys - {config.ENV_NAME_VAR}
    assert not unknown, f"not settings: {sorted(unknown)}"
    assert data["API_HOST"] == "0.0.0.0" and data["LOG_FORMAT"] == "json"
    assert data["WORKER_INSTANCES"] == "1", "KEDA counts one worker per pod"
    # The image's settings under the ConfigMap's environment, with the Secret's API_TOKEN
    # (API_HOST 0.0.0.0 needs one), must load: values in range, the rules between keys hold.
    (tmp_path / "production.json").write_text(json.dumps(production_json()))
    environ = {**data, "API_TOKEN": "from-the-secret", config.CONFIG_DIR_VAR: str(tmp_path)}
    settings = config.load(environ=environ)
    assert settings.env_name == "production"
    assert settings.port == expected("PORT")


def test_secrets_come_from_one_secret_and_aws_keys_are_optional() -> None:
    example = load_docs(K8S / "secret.example.yaml")[0]
    assert example["metadata"]["name"] == SECRET
    provided = set(example.get("stringData", {})) | set(example.get("data", {}))
    for deployment, container in containers():
        env = container.get("env", [])
        refs = {v["name"]: v["valueFrom"]["secretKeyRef"]
                for v in env if "secretKeyRef" in v.get("valueFrom", {})}  # fmt: skip
        assert {"MONGODB_URI", "API_TOKEN"} | OPTIONAL_SECRET_KEYS <= set(refs)
        for name, ref in refs.items():
            where = f"{deployment['metadata']['name']}: {name}"
            assert ref["name"] == SECRET and ref["key"] == name, where
            assert ref.get("optional", False) == (name in OPTIONAL_SECRET_KEYS), where
            assert name in OPTIONAL_SECRET_KEYS or name in provided, where


def test_every_pod_and_container_is_restricted() -> None:
    uid = docker_user()
    for deployment, container in containers():
        where = f"{deployment['metadata']['name']}/{container['name']}"
        pod = deployment["spec"]["template"]["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"] == {"drop": ["ALL"]}, where
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"


def test_pod_disruption_budgets_cover_masters_and_workers() -> None:
    budgets = only("PodDisruptionBudget")
    for deployment in only("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets
                    if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]  # fmt: skip
        assert len(matching) == 1, deployment["metadata"]["name"]
        spec = matching[0]["spec"]
        assert spec.get("minAvailable", 0) >= 1 or spec.get("maxUnavailable") == 1


def test_images_name_the_package_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    image = f"orchestrator:{version}"
    assert {c["image"] for _, c in containers()} == {image}
    (override,) = kustomization()["images"]
    assert (override["name"], override["newTag"]) == ("orchestrator", version)
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]["orchestrator"]["image"] == image


# --- KEDA -----------------------------------------------------------------------------


def test_keda_scales_the_workers_on_desired_workers() -> None:
    (scaled,) = only("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    workers = [d for d, c in containers() if env_value(c, "MODE") == "W"]
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target["name"] == workers[0]["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger.get("metricType", "AverageValue") == "AverageValue"
    meta = trigger["metadata"]
    assert DESIRED_WORKERS in meta["query"]
    assert meta["serverAddress"].startswith(("http://", "https://"))
    # KEDA reads metadata as strings; threshold 1 makes replicas equal the metric.
    assert all(isinstance(v, str) for v in meta.values())
    assert float(meta["threshold"]) == 1


# --- the Dockerfile -------------------------------------------------------------------


def test_dockerfile_builds_a_wheel_and_installs_only_it() -> None:
    instructions = dockerfile()
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2, "multi-stage: build the wheel, then install it"
    build = instructions[: len(instructions) - len(final_stage())]
    assert any("python -m build --wheel" in args for op, args in build if op == "RUN")
    final = final_stage()
    assert final[0][1].split()[0] == "python:3.11-slim"
    installs = [args for op, args in final if op == "RUN" and "pip install" in args]
    assert len(installs) == 1 and re.search(r"/\*\.whl\s*$", installs[0]), installs
    copied = " ".join(args for op, args in final if op in ("COPY", "ADD"))
    assert "orchestrator" not in copied and "pyproject" not in copied, copied


def test_dockerfile_runs_as_the_manifests_user_with_a_livez_healthcheck() -> None:
    uid = docker_user()
    assert uid != 0
    final = dict(final_stage())  # the last of each instruction
    env = dict(kv.split("=", 1) for kv in final["ENV"].split())
    assert env["ORCHESTRATOR_ENV"] == "production"
    assert env["ORCHESTRATOR_CONFIG_DIR"] == "/app/env"
    assert int(env["HEALTH_PORT"]) == expected("HEALTH_PORT")
    assert {int(p) for p in final["EXPOSE"].split()} == {expected("PORT"), expected("HEALTH_PORT")}
    # Exec form must be valid JSON: Docker silently runs anything else through a shell.
    options, _, command = final["HEALTHCHECK"].partition(" CMD ")
    check = json.loads(command)
    assert check[:2] == ["python", "-c"], check
    assert "/livez" in check[2] and "urllib" in check[2] and "HEALTH_PORT" in check[2]
    compile(check[2], "HEALTHCHECK", "exec")
    assert "--interval" in options
    assert json.loads(final["CMD"]) == ["orchestrator", "run"]
    assert json.loads(final["ENTRYPOINT"])[0].endswith("/tini"), "PID 1 must reap orphans"
