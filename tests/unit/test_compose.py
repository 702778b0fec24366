"""docker-compose.yml cannot run here (no Docker engine): check it parses and uses real keys."""

from __future__ import annotations

from pathlib import Path

import yaml

from orchestrator import config

REPO = Path(__file__).resolve().parents[2]
NOT_SETTINGS = {"ORCHESTRATOR_ENV", "SERVICES", "SQS_ENDPOINT_STRATEGY"}


def test_compose_parses_with_mongodb_and_localstack() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert {"mongodb", "localstack", "orchestrator"} <= set(compose["services"])
    assert compose["services"]["mongodb"]["image"].startswith("mongo:")
    assert compose["services"]["localstack"]["image"].startswith("localstack/localstack")


def test_compose_environment_names_are_settings_keys() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    keys = set(config.setting_keys())
    for name, service in compose["services"].items():
        for var in service.get("environment", {}):
            assert var in keys or var in NOT_SETTINGS, f"{name}: {var} is not a setting"
    orchestrator_env = compose["services"]["orchestrator"]["environment"]
    assert set(orchestrator_env) - {"ORCHESTRATOR_ENV"} <= keys


def test_compose_publishes_ports_on_loopback_only() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_compose_sets_api_token_where_the_api_listens_beyond_loopback() -> None:
    # The daemon exits 2 when API_HOST is not a loopback address and API_TOKEN is empty.
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    env = compose["services"]["orchestrator"]["environment"]
    if env.get("API_HOST", "127.0.0.1") not in ("127.0.0.1", "localhost", "::1"):
        assert env.get("API_TOKEN"), "a non-loopback API_HOST needs API_TOKEN"
