"""The Dockerfile and the compose/CI examples, checked statically.

No Docker engine runs on the project's machines, so the image has never been built
here (docs/web.md says so). These tests check what can be checked without building it:
every COPY source exists, the exposed ports and the health check are the ones
``serve`` uses by default, the command is the ``segur-sim`` console script with options
it accepts, the simulator inside binds loopback only, the user is not root, the data
volume and the catalogue path agree with the code. The YAML examples are parsed with
PyYAML when it is installed (it is not a dependency of segur-sim; without it those
tests are reported as skipped, never as passed).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import pytest
from fastapi.testclient import TestClient
from web_helpers import build_app

from simulators.core.config import PORT_OFFSETS, DataDir, Settings
from simulators.core.testcases import TESTCASES_ENV
from simulators.mss.services import MssServices

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "examples" / "compose.yaml"
CI_EXAMPLES = sorted((REPO / "examples" / "ci").glob("*.yml"))


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # comments may also sit between continuation lines
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        if logical:
            keyword, _, args = logical.partition(" ")
            result.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continuation line"
    return result


def arguments(args: str) -> list[str]:
    """Exec (JSON) form or shell-words form, flags such as --chown dropped."""
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    return [w for w in words if not w.startswith("--")]


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def only(instructions: list[tuple[str, str]], keyword: str) -> str:
    found = [args for kw, args in instructions if kw == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for kw, args in instructions:
        if kw == "ENV":
            for word in shlex.split(args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV in the legacy 'KEY VALUE' form: {args}"
                env[key] = value
    return env


def test_every_copy_source_exists_and_makes_an_installable_tree(
    instructions: list[tuple[str, str]],
) -> None:
    copies = [arguments(args) for kw, args in instructions if kw in ("COPY", "ADD")]
    assert copies, "the image copies nothing"
    sources: list[str] = []
    destinations: dict[str, str] = {}
    for words in copies:
        *srcs, dest = words
        for src in srcs:
            assert not src.startswith(("/", "..")), f"{src}: outside the build context"
            assert (REPO / src).exists(), f"COPY source {src} does not exist"
            sources.append(src)
            destinations[src] = dest
    assert not (REPO / ".dockerignore").exists() or not any(
        line.strip() in sources for line in (REPO / ".dockerignore").read_text().splitlines()
    ), ".dockerignore excludes a COPY source"
    # `pip install .` in /src needs the project files, the readme it names, the package,
    # and testcases/ beside them: setup.py maps it into the wheel (simulators._testcases)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert {"pyproject.toml", "setup.py", project["readme"], "simulators", "testcases"} <= set(
        sources
    )
    # testcases/ must sit beside setup.py
    assert destinations["testcases"].rstrip("/") == "./testcases"
    assert any("pip install ." in args for kw, args in instructions if kw == "RUN")
    # the installed copy is the one the code reads: no override left in the image
    assert TESTCASES_ENV not in env_of(instructions)


def test_the_base_image_runs_a_supported_python(instructions: list[tuple[str, str]]) -> None:
    image = only(instructions, "FROM")
    match = re.fullmatch(r"python:(\d+)\.(\d+)[-\w.]*", image)
    assert match, f"unexpected base image {image}"
    minimum = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low = re.fullmatch(r">=\s*(\d+)\.(\d+)", minimum)
    assert low, minimum
    assert (int(match[1]), int(match[2])) >= (int(low[1]), int(low[2]))


def test_exposed_ports_are_the_defaults_of_serve(instructions: list[tuple[str, str]]) -> None:
    exposed = {int(p.split("/")[0]) for p in shlex.split(only(instructions, "EXPOSE"))}
    defaults = Settings()
    assert exposed == {defaults.port(name) for name in PORT_OFFSETS}
    # the health check asks the plain HTTP port, on loopback, for a route that exists
    health = only(instructions, "HEALTHCHECK")
    url = re.search(r"https?://([^/:'\"]+):(\d+)(/[\w/]*)", health)
    assert url, health
    assert url[1] == defaults.host == "127.0.0.1"
    assert int(url[2]) == defaults.port("http")


def test_the_health_check_route_exists(
    instructions: list[tuple[str, str]], web_services: MssServices
) -> None:
    health = only(instructions, "HEALTHCHECK")
    url = re.search(r"https?://[^/'\"]+(/[\w/]*)", health)
    assert url, health
    # over plain HTTP, as the health check asks (the console would redirect to HTTPS)
    answer = TestClient(build_app(web_services), base_url="http://127.0.0.1").get(
        url[1], follow_redirects=False
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"


def test_the_command_is_the_console_script_serving_on_loopback(
    instructions: list[tuple[str, str]], tmp_path: Path
) -> None:
    assert not [args for kw, args in instructions if kw == "ENTRYPOINT"]
    command = json.loads(only(instructions, "CMD"))  # exec form: signals reach segur-sim
    assert command[:2] == ["segur-sim", "serve"], command
    (script,) = entry_points(group="console_scripts", name="segur-sim")
    assert script.value == "simulators.cli:main"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["segur-sim"] == "simulators.cli:main"

    from simulators.cli import cli

    serve = cli.get_command(click.Context(cli), "serve")
    assert serve is not None
    ctx = serve.make_context("serve", list(command[2:]))  # the options exist and parse
    assert ctx.params["data_dir"] == Path("/data")
    assert ctx.params["host"] is None  # so the default, loopback, is bound
    assert Settings().host == "127.0.0.1"
    with pytest.raises(ValueError, match="loopback addresses only"):
        DataDir.open(tmp_path / "data", host="0.0.0.0")

    volumes = json.loads(only(instructions, "VOLUME"))
    env = env_of(instructions)
    assert volumes == ["/data"] == [env["SEGUR_SIM_DATA_DIR"]] == [str(ctx.params["data_dir"])]


def test_the_image_runs_as_a_non_root_user(instructions: list[tuple[str, str]]) -> None:
    user = only(instructions, "USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    creation = [args for kw, args in instructions if kw == "RUN" and "useradd" in args]
    assert creation and re.search(rf"useradd\b.*\b{re.escape(user)}\b", creation[0])
    assert "chown" in creation[0] and "/data" in creation[0]


# ---- YAML examples ---------------------------------------------------------------------------
def load_yaml(path: Path) -> Any:
    yaml = pytest.importorskip(
        "yaml",
        reason="PyYAML is not installed (not a segur-sim dependency): YAML examples unchecked",
    )
    return yaml.safe_load(path.read_text())


def test_compose_example_parses_and_matches_the_image(
    instructions: list[tuple[str, str]],
) -> None:
    compose = load_yaml(COMPOSE)
    service = compose["services"]["segur-sim"]
    context = (COMPOSE.parent / service["build"]["context"]).resolve()
    assert context == REPO and (context / service["build"]["dockerfile"]) == DOCKERFILE
    # loopback only: the host's network namespace, no published ports (they would not answer)
    assert service["network_mode"] == "host"
    assert "ports" not in service
    volume, _, target = service["volumes"][0].partition(":")
    assert [target] == json.loads(only(instructions, "VOLUME"))
    assert volume in compose["volumes"]


@pytest.mark.parametrize("path", CI_EXAMPLES, ids=lambda p: p.name)
def test_ci_examples_parse_and_call_existing_commands(path: Path) -> None:
    document = load_yaml(path)
    assert isinstance(document, dict) and document
    from simulators.cli import cli

    command_line = r"^[\s-]*(?:run:\s*)?segur-sim ([a-z]+)(?: ([a-z]+))?"
    used = re.findall(command_line, path.read_text(), flags=re.MULTILINE)
    assert used, f"{path.name} runs no segur-sim command"
    for group_name, sub in used:
        group = cli.get_command(click.Context(cli), group_name)
        assert group is not None, f"{path.name}: segur-sim {group_name} does not exist"
        if isinstance(group, click.Group) and sub:
            assert group.get_command(click.Context(group), sub) is not None, (
                f"{path.name}: segur-sim {group_name} {sub} does not exist"
            )
