"""Docker's engine does not run here: check the image and compose files against the code."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import yaml

from ctp_node.cli import _parser
from ctp_node.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _dockerfile() -> list[tuple[str, str]]:
    lines = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    return [
        tuple(line.split(None, 1))
        for line in lines
        if line.strip() and not line.lstrip().startswith("#")
    ]  # type: ignore[misc]


def test_image_copies_files_that_exist_and_runs_the_console_script() -> None:
    instructions = _dockerfile()
    for keyword, argument in instructions:
        if keyword == "COPY":
            *sources, _ = shlex.split(argument)
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = dict(instructions)["ENTRYPOINT"]
    assert yaml.safe_load(entrypoint)[0] in scripts
    config_env = re.search(
        r"CTP_NODE_CONFIG=(\S+)",
        dict(instructions)["ENV"] + " " + " ".join(a for k, a in instructions if k == "ENV"),
    )
    copied = [a for k, a in instructions if k == "COPY" and "ctp-node.yaml" in a]
    assert config_env and copied and copied[0].split()[-1] == config_env.group(1)


def test_container_configuration_is_valid() -> None:
    config = load_config(ROOT / "docker" / "ctp-node.yaml")
    assert config.storage.root == Path("/var/lib/ctp-node")


def test_compose_services_match_the_cli_and_the_configuration() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = load_config(ROOT / "docker" / "ctp-node.yaml")
    parser = _parser()
    for name, service in compose["services"].items():
        if "command" not in service:
            continue
        args = parser.parse_args(service["command"])  # a command the CLI knows
        assert service["build"]["dockerfile"] == "docker/Dockerfile", f"{name}: cannot be built"
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"] if m.startswith(".")}
        assert str(args.config) in mounts, f"{name}: --config is not mounted"
        assert (ROOT / mounts[str(args.config)]).is_file()
        data_volumes = [m for m in service["volumes"] if not m.startswith(".")]
        assert any(m.split(":")[1] == str(config.storage.root) for m in data_volumes), name
    published = compose["services"]["ctp-node"]["ports"][0]
    assert int(published.split(":")[-1]) == config.node.port


def health_check_command() -> list[str]:
    """The image's HEALTHCHECK command (exec form: a JSON array, as Docker reads it)."""
    healthcheck = dict(_dockerfile())["HEALTHCHECK"]
    return json.loads(healthcheck.split("CMD", 1)[1])


def test_health_check_asks_the_configured_http_face() -> None:
    """The image's HEALTHCHECK asks /health/ready of the HTTP face the container's
    configuration enables, on the port compose publishes (on the host's loopback only);
    workers, which have no HTTP face, have it disabled. tests/http/test_health.py runs the
    command against a real serve."""
    command = health_check_command()
    config = load_config(ROOT / "docker" / "ctp-node.yaml")
    assert command[:2] == ["python", "-c"]
    assert config.http.enabled and config.http.bind == "0.0.0.0"
    assert f"'http://127.0.0.1:{config.http.port}/health/ready'" in command[2]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert (
        f"127.0.0.1:{config.http.port}:{config.http.port}"
        in compose["services"]["ctp-node"]["ports"]
    )
    assert compose["services"]["worker"]["healthcheck"] == {"disable": True}
