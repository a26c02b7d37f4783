"""The compose stack read the way Docker reads it, for tests that run its services without Docker.

- `read_dockerfile`: what an image built from a Dockerfile starts with (WORKDIR, ENV, USER,
  ENTRYPOINT, and the directories it creates for its user).
- `resolved_config`: `docker-compose config` on a scratch copy of the compose files with
  .env.example as .env (Debian's docker-compose 1.29 resolves it offline: env_file merged into
  environment, anchors and overrides applied).
- `Container`: one app service as a process on this machine: the image's entrypoint and the
  service's command, its environment with container paths mapped to host directories and
  compose hostnames mapped to the addresses of the services that stand in for them, and its
  container ports mapped to free host ports, as Docker's port mapping would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.gpu.yml")
# What the compose files mount from the project directory.
PROJECT_DIRS = ("config", "dashboards")


# --------------------------------------------------------------------------------------------
# Dockerfiles


@dataclass(frozen=True)
class Image:
    base: str
    workdir: str
    env: dict[str, str]
    user: str
    entrypoint: list[str]
    user_dirs: dict[str, tuple[int, int]]  # directories created for a user: path -> (uid, gid)
    runs: list[str]
    copies: list[list[str]]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def read_dockerfile(path: Path) -> Image:
    base, workdir, user = "", "/", "root"
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    user_dirs: dict[str, tuple[int, int]] = {}
    runs: list[str] = []
    copies: list[list[str]] = []
    for keyword, rest in _instructions(path.read_text()):
        if keyword == "FROM":
            base = rest.split()[0]
        elif keyword == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
        elif keyword == "USER":
            user = rest
        elif keyword == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif keyword == "COPY":
            copies.append([a for a in shlex.split(rest) if not a.startswith("--")])
        elif keyword == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:  # the legacy `ENV KEY value` form
                env[words[0]] = " ".join(words[1:])
            else:
                for word in words:
                    key, _, value = word.partition("=")
                    env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
        elif keyword == "RUN":
            runs.append(rest)
            for match in re.finditer(r"install -d -o (\d+) -g (\d+)(?: -m \d+)? (/\S+)", rest):
                user_dirs[match.group(3)] = (int(match.group(1)), int(match.group(2)))
    return Image(base, workdir, env, user, entrypoint, user_dirs, runs, copies)


# --------------------------------------------------------------------------------------------
# docker-compose config


def compose_binary() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        raise FileNotFoundError("docker-compose is not installed; scripts/install-services.sh installs it")
    return path


def scratch_project(env_text: str | None = None) -> Path:
    """A temporary project directory: the compose files, a .env (default: .env.example), and
    links to the directories the compose files mount. The repository's own .env is never read."""
    project = Path(tempfile.mkdtemp(prefix="moodwire-compose-"))
    for name in COMPOSE_FILES:
        shutil.copyfile(ROOT / name, project / name)
    (project / ".env").write_text(env_text if env_text is not None else (ROOT / ".env.example").read_text())
    for name in PROJECT_DIRS:
        (project / name).symlink_to(ROOT / name)
    return project


def run_compose(project: Path, *args: str, files: tuple[str, ...] = ("docker-compose.yml",)) -> subprocess.CompletedProcess[str]:
    command = [compose_binary()]
    for name in files:
        command += ["-f", name]
    return subprocess.run([*command, *args], cwd=project, capture_output=True, text=True, timeout=120)


def resolved_config(project: Path, files: tuple[str, ...] = ("docker-compose.yml",)) -> dict[str, Any]:
    result = run_compose(project, "config", files=files)
    if result.returncode != 0:
        raise AssertionError(f"docker-compose config failed:\n{result.stdout}{result.stderr}")
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines the way compose reads an env file (no quotes, no expansion)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


# --------------------------------------------------------------------------------------------
# A service as a process


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


@dataclass
class Container:
    """One compose service, translated to a process on this machine."""

    name: str
    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    workdir: Path
    published: dict[int, int] = field(default_factory=dict)  # container port -> host port
    mounts: dict[str, Path] = field(default_factory=dict)  # container path -> host path


def parse_user(value: str) -> tuple[int, int]:
    uid, _, gid = str(value).partition(":")
    return int(uid), int(gid or uid)


def _container_ports(service: Mapping[str, Any]) -> set[int]:
    ports = {int(str(p).split("/")[0]) for p in service.get("expose", [])}
    for entry in service.get("ports", []):
        target = entry.get("target") if isinstance(entry, dict) else str(entry).split("/")[0].rsplit(":", 1)[-1]
        ports.add(int(target))
    return ports


def translate(
    name: str,
    service: Mapping[str, Any],
    image: Image,
    *,
    app_root: Path,
    volumes: dict[str, Path],
    hosts: Mapping[str, Mapping[int, Endpoint]],
    scratch: Path,
    service_names: set[str],
) -> Container:
    """`service` (from the resolved config) as a process: see the module docstring.

    `volumes` maps named volumes to host directories (created here on first use, owned by the
    service's user, and shared by every service that mounts the same volume). `hosts` maps
    compose hostnames and their ports to the stand-in services; an address naming any other
    compose service (`service_names`) fails. `scratch` holds what the image itself would
    provide: the directories its Dockerfile creates for its user.
    """
    if "user" not in service:
        raise AssertionError(f"{name}: no `user` in the compose file; the service would run as the image's user")
    uid, gid = parse_user(service["user"])
    mounts: dict[str, Path] = {image.workdir: app_root}
    for path, owner in image.user_dirs.items():
        mounts[path] = _owned_dir(scratch / f"{name}{path.replace('/', '_')}", owner)
    for entry in service.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        if source.startswith("/"):
            mounts[target] = Path(source).resolve()
        else:
            if source not in volumes:
                volumes[source] = _owned_dir(scratch / f"volume-{source}", (uid, gid))
            mounts[target] = volumes[source]

    env = {**image.env, **{k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()}}
    listening = _container_ports(service)
    published = {port: free_port() for port in sorted(listening)}
    mapped: dict[str, str] = {}
    for key, value in env.items():
        mapped[key] = _map_value(key, value, env, mounts, hosts, published)
    names = "|".join(map(re.escape, sorted(service_names | set(hosts))))
    leftovers = [
        f"{k}={v}" for k, v in mapped.items()
        if _is_address(k, v) and re.search(rf"(^|//|@|,)({names})(:|/|,|$)", v)
    ]
    if leftovers:
        raise AssertionError(f"{name}: compose hostnames nothing stands in for: {leftovers}")
    argv = [*image.entrypoint, *[str(a) for a in service.get("command", [])]]
    return Container(name, argv, mapped, uid, gid, app_root, published, mounts)


def _map_value(
    key: str,
    value: str,
    env: Mapping[str, str],
    mounts: Mapping[str, Path],
    hosts: Mapping[str, Mapping[int, Endpoint]],
    published: Mapping[int, int],
) -> str:
    if value.startswith("/"):
        for target in sorted(mounts, key=len, reverse=True):
            if value == target or value.startswith(target.rstrip("/") + "/"):
                return str(mounts[target]) + value[len(target.rstrip("/")):]
        if key.startswith("MOODWIRE_") or key == "HOME":
            raise AssertionError(f"{key}={value}: a container path nothing maps to a host directory")
        return value
    if key.endswith("_HOST"):
        if value in hosts:
            return next(iter(hosts[value].values())).host
        if value == "0.0.0.0":  # all interfaces inside the container; Docker publishes on loopback
            return "127.0.0.1"
        return value
    if key.endswith("_PORT") and value.isdigit():
        host_key = key[: -len("_PORT")] + "_HOST"
        if env.get(host_key) in hosts:  # a client port of a compose hostname
            return str(hosts[env[host_key]][int(value)].port)
        if int(value) in published:  # a port this container listens on
            return str(published[int(value)])
        return value

    def replace(match: re.Match[str]) -> str:
        endpoint = hosts[match.group(2)][int(match.group(3))]
        return f"{match.group(1)}{endpoint.host}:{endpoint.port}"

    pattern = rf"(^|//|@|,)({'|'.join(map(re.escape, hosts))}):(\d+)"
    return re.sub(pattern, replace, value)


def _is_address(key: str, value: str) -> bool:
    return key.endswith(("_HOST", "_SERVERS", "_URL")) or "://" in value or bool(re.match(r"^[\w.-]+:\d+", value))


def _owned_dir(path: Path, owner: tuple[int, int]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, *owner)
    path.chmod(0o750)
    return path
