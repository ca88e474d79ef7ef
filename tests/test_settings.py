"""Settings from TOML and environment, and the errors a user sees when they are wrong."""

import os
import socket
import subprocess
import sys
from importlib.resources import files

import pytest
from pydantic import ValidationError

from bot.settings import Settings
from bot.upkeep.replicas import own_id


def run_cli(tmp_path, env, *args):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHBOT_") and k != "PORT"}
    clean |= {"DISPATCHBOT_CONFIG": str(tmp_path / "none.toml"), **env}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], env=clean, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


def test_serve_without_required_settings_names_each_env_var(tmp_path):
    result = run_cli(tmp_path, {"DISPATCHBOT_FORGE_URL": "https://forge"}, "serve")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "DISPATCHBOT_FORGE_TOKEN" in lines[0] and "DISPATCHBOT_WEBHOOK_SECRET" in lines[1]


def test_invalid_values_are_reported_per_setting(tmp_path):
    result = run_cli(tmp_path, {"DISPATCHBOT_LIMITS__PIDS": "many", "PORT": "http"}, "check-config")
    assert result.returncode == 2
    assert "invalid setting DISPATCHBOT_LIMITS__PIDS: Input should be a valid integer" in result.stderr
    assert "invalid setting DISPATCHBOT_PORT" in result.stderr


def test_check_config_hides_secrets(tmp_path):
    result = run_cli(tmp_path, {"DISPATCHBOT_FORGE_TOKEN": "tok-12345678", "DISPATCHBOT_WEBHOOK_SECRET": "sec-87654321"},
                     "check-config")
    assert result.returncode == 0, result.stderr
    assert "tok-12345678" not in result.stdout and "sec-87654321" not in result.stdout and "**********" in result.stdout


def test_toml_file_then_env_nested_and_port(tmp_path, monkeypatch):
    config = tmp_path / "bot.toml"
    config.write_text('forge_url = "https://file"\nmax_running = 7\n[limits]\nmemory = "1g"\n[pools.gemini]\nlimit = 1\n')
    for key in list(os.environ):
        if key.startswith("DISPATCHBOT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DISPATCHBOT_CONFIG", str(config))
    monkeypatch.setenv("DISPATCHBOT_LIMITS__MEMORY", "2g")
    monkeypatch.setenv("PORT", "5005")
    monkeypatch.setenv("AGENT_DOCKER_IMAGE", "agents:v2")
    s = Settings()
    assert (s.forge_url, s.max_running, s.limits.memory, s.port, s.image) == ("https://file", 7, "2g", 5005, "agents:v2")
    assert s.pool_of("gemini").limit == 1 and s.limits.cpus == 2.0
    assert s.missing_for_serve() == [
        "missing setting forge_token: set DISPATCHBOT_FORGE_TOKEN or `forge_token` in the config file",
        "missing setting webhook_secret: set DISPATCHBOT_WEBHOOK_SECRET or `webhook_secret` in the config file",
    ]


def test_shipped_example_config_is_valid(monkeypatch):
    monkeypatch.setenv("DISPATCHBOT_CONFIG", str(files("bot") / "dispatchbot.example.toml"))
    assert Settings().label_prefix == "dispatch:"


def test_serve_refuses_a_webhook_secret_too_short_to_mask(tmp_path):
    env = {"DISPATCHBOT_FORGE_URL": "http://127.0.0.1:9", "DISPATCHBOT_FORGE_TOKEN": "tok-0123456789abcdef",
           "DISPATCHBOT_WEBHOOK_SECRET": "s", "DISPATCHBOT_PORT": "0", "DISPATCHBOT_DATA_DIR": str(tmp_path / "d")}
    result = run_cli(tmp_path, env, "serve")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "DISPATCHBOT_WEBHOOK_SECRET" in line and "16 characters" in line


@pytest.mark.parametrize("name", ["ADMIN_TOKEN", "READ_TOKEN"])
def test_serve_refuses_a_token_too_short_to_mask(tmp_path, name):
    env = {"DISPATCHBOT_FORGE_URL": "http://127.0.0.1:9", "DISPATCHBOT_FORGE_TOKEN": "tok-0123456789abcdef",
           "DISPATCHBOT_WEBHOOK_SECRET": "webhook-secret-0123456789", f"DISPATCHBOT_{name}": "short",
           "DISPATCHBOT_PORT": "0", "DISPATCHBOT_DATA_DIR": str(tmp_path / "d")}
    result = run_cli(tmp_path, env, "serve")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"DISPATCHBOT_{name}" in line and "16 characters" in line


def test_serve_refuses_an_http_forge_on_another_host(tmp_path):
    env = {"DISPATCHBOT_FORGE_URL": "http://git.example.com", "DISPATCHBOT_FORGE_TOKEN": "tok-0123456789abcdef",
           "DISPATCHBOT_WEBHOOK_SECRET": "webhook-secret-0123456789", "DISPATCHBOT_PORT": "0",
           "DISPATCHBOT_DATA_DIR": str(tmp_path / "d")}
    result = run_cli(tmp_path, env, "serve")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "DISPATCHBOT_FORGE_URL" in line and "allow_insecure_forge" in line


@pytest.mark.parametrize("url, ok", [
    ("https://git.example.com", True), ("http://127.0.0.1:3000", True), ("http://localhost:3000", True),
    ("http://[::1]:3000", True), ("http://git.example.com", False), ("http://10.0.0.5:3000", False),
])
def test_only_a_loopback_forge_may_be_plain_http(url, ok):
    problems = Settings(forge_url=url, forge_token="t" * 20, webhook_secret="s" * 20).missing_for_serve()
    assert (problems == []) is ok, problems
    allowed = Settings(forge_url=url, forge_token="t" * 20, webhook_secret="s" * 20, allow_insecure_forge=True)
    assert allowed.missing_for_serve() == []


def test_settings_the_agent_can_reach_through_are_named():
    assert Settings().exposures() == []
    assert Settings(docker_url="unix:///run/docker.sock").exposures() == []
    [tcp] = Settings(docker_url="tcp://10.0.0.1:2375").exposures()
    assert "docker_url" in tcp and "TCP" in tcp
    [host] = Settings(container_network="host").exposures()
    assert 'container_network = "host"' in host


def test_the_store_is_the_sqlite_file_unless_a_postgresql_url_is_given_and_its_password_is_masked(monkeypatch, tmp_path):
    monkeypatch.setenv("DISPATCHBOT_CONFIG", "/nonexistent")
    monkeypatch.setenv("DISPATCHBOT_DATA_DIR", str(tmp_path))
    assert Settings().store_location == tmp_path / "dispatchbot.sqlite3"
    monkeypatch.setenv("DISPATCHBOT_STORE_URL", "postgresql://bot:s3cr%2Ft-db-password@db.internal/bot")
    settings = Settings()
    assert settings.store_location == "postgresql://bot:s3cr%2Ft-db-password@db.internal/bot"
    assert "s3cr/t-db-password" in settings.secrets()
    assert "db-password" not in settings.model_dump_json()  # check-config prints it hidden
    monkeypatch.setenv("DISPATCHBOT_STORE_URL", "mysql://bot@db/bot")
    with pytest.raises(ValueError, match="must be a postgresql:// URL"):
        Settings()


def test_a_replicas_name_is_configured_or_kept_in_its_data_dir_from_its_first_start(tmp_path):
    first = own_id(Settings(data_dir=tmp_path / "data"))
    assert first.startswith(socket.gethostname() + "-")
    assert (tmp_path / "data" / "replica-id").read_text().strip() == first
    (tmp_path / "data" / "replica-id").write_text("bot-7\n")  # as an earlier host name left it
    assert own_id(Settings(data_dir=tmp_path / "data")) == "bot-7"
    assert own_id(Settings(data_dir=tmp_path / "data", replica={"id": "bot-2"})) == "bot-2"


def test_a_replica_ttl_shorter_than_three_heartbeats_is_refused():
    with pytest.raises(ValidationError, match="at least 3 heartbeats"):
        Settings(replica={"ttl": 20, "heartbeat": 10})
