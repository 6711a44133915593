"""Static checks of docker-compose.yml and Dockerfile.gpu against the code they run.

No Docker engine is needed: the files are parsed, and every command they start is checked
against the real `trainhub` argument parser and every setting against core.config.Settings.
"""
from __future__ import annotations

import json
import re
import shlex
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cli.main import ArgvError, command, parse_args
from core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
IMAGE_DOCKERFILE = "Dockerfile.gpu"
REQUIRED_SERVICES = {"postgres", "redis", "migrate", "api", "worker"}
DEPENDS_CONDITIONS = {"service_healthy", "service_completed_successfully", "service_started"}


# --- helpers -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def trainhub_services(services) -> dict:
    """The services that run the trainhub image (everything but Postgres and Redis)."""
    return {name: svc for name, svc in services.items() if "build" in svc
            or str(svc.get("image", "")).startswith("trainhub")}


def argv_of(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def parse_trainhub(argv: list[str]) -> SimpleNamespace:
    """Parse argv with the real (typer/click) command, running nothing; a bad subcommand,
    flag or value fails the test. Returns the verb as `command` and its parameters."""
    assert argv and argv[0] == "trainhub", f"not a trainhub command: {argv}"
    try:
        return parse_args(argv[1:])
    except ArgvError as exc:
        pytest.fail(f"`{shlex.join(argv)}` is not accepted by the trainhub command: {exc}")


def cli_subcommands() -> set[str]:
    verbs = set(command().commands)
    assert verbs, "the trainhub command has no subcommands"
    return verbs


def test_parse_trainhub_rejects_what_the_command_rejects():
    for argv in (["trainhub", "serve"], ["trainhub", "api", "--prot", "8000"],
                 ["trainhub", "worker", "--concurrency", "two"], ["trainhub"]):
        with pytest.raises(pytest.fail.Exception):
            parse_trainhub(argv)
    assert parse_trainhub(["trainhub", "worker"]).concurrency == 1


def env_keys(environment) -> list[str]:
    if isinstance(environment, dict):
        return list(environment)
    return [item.split("=", 1)[0] for item in environment or []]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in (ROOT / IMAGE_DOCKERFILE).read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def instruction_argv(args: str) -> list[str]:
    """The exec (JSON) or shell form of CMD/ENTRYPOINT/HEALTHCHECK CMD as a list."""
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def pyproject_pins() -> dict[str, str]:
    """`name==version` pins in pyproject.toml (a regex: tomllib needs Python 3.11)."""
    text = (ROOT / "pyproject.toml").read_text()
    return dict(re.findall(r'^\s*"([A-Za-z0-9_.\-]+)==([^"]+)",?\s*$', text, re.M))


# --- docker-compose.yml ------------------------------------------------------------------

def test_compose_has_the_required_services_and_no_version_key(compose, services):
    assert "version" not in compose, "the Compose spec has no `version:` key"
    assert REQUIRED_SERVICES <= set(services), REQUIRED_SERVICES - set(services)
    assert services["postgres"]["image"].split(":")[0] == "postgres"
    assert services["postgres"]["image"].split(":")[1].startswith("16")
    assert services["redis"]["image"].split(":")[0] == "redis"
    assert services["redis"]["image"].split(":")[1].startswith("7")
    for name in ("postgres", "redis", "api"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_every_trainhub_service_builds_from_the_gpu_dockerfile(trainhub_services):
    assert {"migrate", "api", "worker"} <= set(trainhub_services)
    images = set()
    for name, svc in trainhub_services.items():
        build = svc.get("build")
        assert isinstance(build, dict), f"{name}: build must name its dockerfile"
        assert build.get("dockerfile") == IMAGE_DOCKERFILE, name
        assert (ROOT / build.get("context", ".") / IMAGE_DOCKERFILE).is_file(), name
        images.add(svc.get("image"))
    assert len(images) == 1, f"trainhub services should share one image tag: {images}"


def test_every_command_is_a_real_trainhub_subcommand(trainhub_services):
    subcommands = cli_subcommands()
    assert {"api", "worker", "migrate", "up"} <= subcommands
    for name, svc in trainhub_services.items():
        argv = argv_of(svc["command"])
        assert argv[0] == "trainhub", f"{name}: command must start with trainhub: {argv}"
        assert argv[1] in subcommands, f"{name}: unknown subcommand {argv[1]!r}"
        parse_trainhub(argv)


def test_api_worker_and_migrate_commands(services):
    api = parse_trainhub(argv_of(services["api"]["command"]))
    assert (api.command, api.host, api.port) == ("api", "0.0.0.0", 8000)
    assert "8000:8000" in [str(p) for p in services["api"]["ports"]]
    worker = parse_trainhub(argv_of(services["worker"]["command"]))
    assert (worker.command, worker.concurrency) == ("worker", 1)  # one job per GPU
    assert parse_trainhub(argv_of(services["migrate"]["command"])).command == "migrate"
    assert services["migrate"].get("restart") == "no", "migrate is a one-shot"


def test_env_is_trainhub_settings_and_the_same_everywhere(trainhub_services):
    fields = set(Settings.model_fields)
    environments = []
    for name, svc in trainhub_services.items():
        keys = env_keys(svc.get("environment"))
        assert keys, f"{name} has no environment"
        for key in keys:
            assert key.startswith("TRAINHUB_"), f"{name}: {key} is not a TRAINHUB_ setting"
            field = key[len("TRAINHUB_"):].lower()
            assert field in fields, f"{name}: {key} is not a field of core.config.Settings"
        environments.append(svc["environment"])
    assert all(env == environments[0] for env in environments), "services differ in settings"
    env = environments[0]
    assert env["TRAINHUB_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:" in env["TRAINHUB_DATABASE_URL"]
    assert env["TRAINHUB_BROKER_URL"].startswith("redis://redis:")
    assert env["TRAINHUB_REDIS_URL"].startswith("redis://redis:")
    assert env["TRAINHUB_BROKER_URL"] != env["TRAINHUB_REDIS_URL"]


def test_env_values_are_valid_settings(trainhub_services):
    env = next(iter(trainhub_services.values()))["environment"]
    # ${VAR:-default} is what Compose substitutes when VAR is unset.
    resolved = {key: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
                for key, value in env.items()}
    settings = Settings(**{k[len("TRAINHUB_"):].lower(): v for k, v in resolved.items()})
    assert settings.resolved_database_url.startswith("postgresql+psycopg://")
    assert str(settings.data_dir) == "/data"


def test_depends_on_conditions_are_valid(services):
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            assert dep != name
            assert spec.get("condition", "service_started") in DEPENDS_CONDITIONS, (name, dep)
            if spec.get("condition") == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), (
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name


def test_worker_reserves_an_nvidia_gpu(services):
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    gpus = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]
    assert gpus, devices
    assert gpus[0].get("count") == 1 or len(gpus[0].get("device_ids", [])) == 1


def test_worker_healthcheck_pings_the_node_name_the_cli_gives_it(services, monkeypatch):
    test = " ".join(services["worker"]["healthcheck"]["test"])
    assert "inspect ping" in test and "trainhub@$$HOSTNAME" in test
    # The CLI names the node trainhub@<hostname>, which is $HOSTNAME inside a container.
    from cli import main as cli
    from worker.celery_app import app

    seen: list[list[str]] = []
    monkeypatch.setattr(app, "worker_main", lambda argv: seen.append(argv))
    assert cli.main(argv_of(services["worker"]["command"])[1:]) == 0
    assert f"--hostname=trainhub@{socket.gethostname()}" in seen[0]
    assert "--concurrency=1" in seen[0]


def test_volumes_are_declared_and_data_is_shared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":")[0]
            if volume_is_named(source):
                assert source in declared, f"{name} uses undeclared volume {source!r}"
    data_dir = services["api"]["environment"]["TRAINHUB_DATA_DIR"]
    mounts = {name: {v for v in services[name]["volumes"] if v.endswith(":" + data_dir)}
              for name in ("api", "worker")}
    assert mounts["api"] and mounts["api"] == mounts["worker"], mounts


def volume_is_named(source: str | None) -> bool:
    return bool(source) and not source.startswith((".", "/", "~", "$"))


# --- Dockerfile.gpu ----------------------------------------------------------------------

def test_dockerfile_base_and_pins():
    instructions = dockerfile_instructions()
    assert instructions[0][0] in ("FROM", "ARG"), "a Dockerfile starts with FROM (or ARG)"
    froms = [args for kw, args in instructions if kw == "FROM"]
    assert froms and froms[-1], "no FROM"
    text = " ".join(args for kw, args in instructions if kw == "RUN")
    pins = pyproject_pins()
    for package in ("torch", "torchvision"):
        assert f"{package}=={pins[package]}" in text, f"{package} not pinned like pyproject.toml"


def test_dockerfile_runs_as_a_non_root_user():
    users = [args.split(":")[0] for kw, args in dockerfile_instructions() if kw == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1] not in ("root", "0")


def test_dockerfile_workdir_expose_healthcheck_and_cmd():
    instructions = dockerfile_instructions()
    keywords = [kw for kw, _ in instructions]
    assert ("WORKDIR", "/app") in instructions
    assert any(kw == "EXPOSE" and "8000" in args.split() for kw, args in instructions)
    health = [args for kw, args in instructions if kw == "HEALTHCHECK"]
    assert health and "/health" in health[-1] and "CMD" in health[-1].split()
    assert "CMD" in keywords
    cmd = instruction_argv([args for kw, args in instructions if kw == "CMD"][-1])
    entrypoint = [instruction_argv(args) for kw, args in instructions if kw == "ENTRYPOINT"]
    argv = (entrypoint[-1] if entrypoint else []) + cmd
    assert "trainhub" in argv, argv
    parsed = parse_trainhub(argv[argv.index("trainhub"):])
    assert (parsed.command, parsed.host, parsed.port) == ("api", "0.0.0.0", 8000)


def test_dockerfile_installs_dependencies_before_copying_the_source():
    instructions = dockerfile_instructions()
    copies = [i for i, (kw, _) in enumerate(instructions) if kw == "COPY"]
    torch_install = next(i for i, (kw, args) in enumerate(instructions)
                         if kw == "RUN" and "torch==" in args)
    assert torch_install < copies[0], "torch should be installed before any COPY"
    project_install = [i for i, (kw, args) in enumerate(instructions)
                       if kw == "RUN" and re.search(r"pip install .*(?<![\w/])\.(\s|$)", args)]
    assert project_install, "no `pip install .` of the project"
    assert project_install[-1] > copies[-1]


def test_every_copy_source_exists():
    for kw, args in dockerfile_instructions():
        if kw not in ("COPY", "ADD"):
            continue
        parts = instruction_argv(args) if args.startswith("[") else args.split()
        parts = [p for p in parts if not p.startswith("--")]
        assert len(parts) >= 2, args
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source!r} is not in the repository"
            assert not source.startswith((".venv", "data", ".git"))


def test_dockerignore_keeps_the_context_small():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "data"} <= ignored
    assert any("__pycache__" in line for line in ignored)
    assert ".pytest_cache" in ignored
    # Nothing the image copies may be ignored.
    copied = {p for kw, args in dockerfile_instructions() if kw == "COPY"
              for p in args.split()[:-1] if not p.startswith("--")}
    assert not copied & ignored, copied & ignored


def test_the_image_copies_every_package_the_project_installs():
    """pip install . in the image builds from what was copied: a package left out would be
    missing from the installed `trainhub` (a worker or API that cannot start)."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = {p.rstrip("/") for kw, args in dockerfile_instructions() if kw == "COPY"
              for p in args.split()[:-1] if not p.startswith("--")}
    assert packages <= copied, packages - copied


# --- the compose test's stand-in images (tests/e2e/test_compose_up.py) -------------------

def test_compose_test_builds_a_stand_in_for_every_base_image(services):
    """No image can be pulled where the compose test runs: tests/compose/setup.sh builds
    stand-ins tagged with the names used here. A bumped tag (postgres:17) needs its stand-in."""
    setup = (ROOT / "tests" / "compose" / "setup.sh").read_text()
    standins = dict(re.findall(r"^\s*build (\S+) \"\$HERE/(\S+\.Dockerfile)\"", setup, re.M))
    pulled = {svc["image"] for svc in services.values() if "build" not in svc}
    pulled |= {args.split()[0] for kw, args in dockerfile_instructions() if kw == "FROM"}
    assert pulled == set(standins), (pulled, standins)
    for dockerfile in standins.values():
        assert (ROOT / "tests" / "compose" / dockerfile).is_file(), dockerfile


def test_every_data_file_of_a_product_package_is_installed_with_it():
    """A file the code reads beside its modules (the zoo's size table, the page) must be
    package data, or an installed image (Dockerfile: pip install .) lacks it."""
    import subprocess

    import tomllib

    repo = Path(__file__).resolve().parents[1]
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]
    tracked = subprocess.run(["git", "ls-files", "api", "core", "worker", "models", "cli"],
                             cwd=repo, capture_output=True, text=True, check=True).stdout
    installed = {f.relative_to(repo).as_posix() for package, globs in patterns.items()
                 for pattern in globs for f in (repo / package).glob(pattern) if f.is_file()}
    missing = [name for name in tracked.split()
               if not name.endswith(".py") and name not in installed]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
