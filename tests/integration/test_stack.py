"""The production stack, run without Docker: what proves docker-compose.yml and the Dockerfile.

`docker-compose config` resolves the compose file with .env.example as .env, exactly as a new
user's first `docker compose up` would. Each app service (ingest, scorer, alert) then runs as a
process made from that resolved config and the Dockerfile (tests/compose.py): the image's
entrypoint and the service's command, its environment (env_file + environment, over the image's
ENV), as the service's non-root user (setpriv), in the image's working directory, which that
user can't write, with its volumes as directories it owns. Compose hostnames point at the real
services the tests start: the tansu broker (`kafka`), a ClickHouse server with the stack's users
(`clickhouse`) and an SMTP server (`mailcatcher`); container ports are mapped to free host ports
the way Docker's port mapping would.

The run: posts from a file go in through what the stack offers a user (the ingest service's
push endpoint), get scored and stored, the alert service detects the negative spike in them and
e-mails it; `moodwire sql` from the host reads the stored posts as the stack's analyst user.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from moodwire.config import load_settings
from moodwire.store import ServerStore
from tests import compose, services
from tests.compose import Container, Endpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = compose.ROOT
APP_SERVICES = ("ingest", "scorer", "alert")
# The environment running the tests has moodwire's console script next to its interpreter.
VENV_BIN = Path(sys.executable).parent
SAMPLE = ROOT / "ingest" / "data" / "sample_stream.jsonl"
SPIKE_SYMBOL = "BA"  # the sample stream's negative spike


# --------------------------------------------------------------------------------------------
# the resolved configuration


@pytest.fixture(scope="module")
def project() -> Iterator[Path]:
    path = compose.scratch_project()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def config(project: Path) -> dict[str, Any]:
    return compose.resolved_config(project)


@pytest.fixture(scope="module")
def dotenv(project: Path) -> dict[str, str]:
    return compose.read_env_file(project / ".env")


def test_compose_config_validates_quietly(project: Path) -> None:
    for files in (("docker-compose.yml",), ("docker-compose.yml", "docker-compose.gpu.yml")):
        result = compose.run_compose(project, "config", "--quiet", files=files)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_default_stack_needs_no_gpu(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        assert not devices, f"{name} reserves a device: the stack would not start without the NVIDIA toolkit"
    scorer = config["services"]["scorer"]
    assert scorer["image"] == config["services"]["ingest"]["image"] == "moodwire:latest"
    assert scorer["build"].get("dockerfile", "Dockerfile") == "Dockerfile" and not scorer["build"].get("args")


def test_the_gpu_override_gives_the_scorer_its_own_image_and_the_gpu(project: Path, config: dict[str, Any]) -> None:
    gpu = compose.resolved_config(project, files=("docker-compose.yml", "docker-compose.gpu.yml"))
    scorer = gpu["services"]["scorer"]
    assert scorer["build"]["dockerfile"] == "Dockerfile.gpu"
    assert scorer["image"] == "moodwire:latest-gpu" != config["services"]["scorer"]["image"]
    (device,) = scorer["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert scorer["environment"]["MOODWIRE_EXECUTION_PROVIDER"] == "cuda"
    # everything else as in the default stack (merging may reorder lists)
    def same(service: dict[str, Any], leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
        return {k: sorted(map(str, v)) if isinstance(v, list) else v for k, v in service.items() if k not in leave_out}

    for name in ("ingest", "alert"):
        assert same(gpu["services"][name]) == same(config["services"][name])
    changed = ("build", "image", "deploy", "environment")
    assert same(scorer, changed) == same(config["services"]["scorer"], changed)


def test_scorer_replicas_can_scale(config: dict[str, Any]) -> None:
    scorer = config["services"]["scorer"]
    # a fixed name or a host port would make the second replica fail to start
    assert "container_name" not in scorer and "ports" not in scorer and "hostname" not in scorer


def test_published_ports_are_loopback_only_and_documented(config: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Production stack"):]
    section = section[: section.index("\n## ", 4)]
    published: dict[str, set[int]] = {}
    for name, service in config["services"].items():
        for entry in service.get("ports", []):
            host_ip, host_port, _ = str(entry).split("/")[0].split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {entry} beyond loopback"
            published.setdefault(name, set()).add(int(host_port))
    assert published == {
        "kafka": {9094},
        "clickhouse": {9000, 8123},
        "ingest": {8787},
        "prometheus": {9090},
        "alertmanager": {9093},
        "grafana": {3000},
        "mailcatcher": {8025},
    }
    for port in set().union(*published.values()):
        assert f"127.0.0.1:{port}" in section, f"port {port} is not in the README's Production stack section"


def test_kafka_keeps_its_logs_on_its_volume_and_advertises_the_host_listener(config: dict[str, Any]) -> None:
    kafka = config["services"]["kafka"]
    env = kafka["environment"]
    mounts = dict(str(v).split(":")[:2][::-1] for v in kafka["volumes"])  # target -> source
    assert mounts[env["KAFKA_LOG_DIRS"]] == "kafka-data"
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["EXTERNAL"] == "127.0.0.1:9094" and advertised["PLAINTEXT"] == "kafka:9092"
    assert "EXTERNAL:PLAINTEXT" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert any(str(p).startswith("127.0.0.1:9094:9094") for p in kafka["ports"])


# The plugin's requirements table (grafana.com/docs/plugins/grafana-clickhouse-datasource):
# Grafana 9.x-11.5.x: plugin 4.0-4.14; Grafana 11.6.0 and later: 4.15+.
def test_the_grafana_clickhouse_plugin_is_pinned_to_a_release_for_the_pinned_grafana(config: dict[str, Any]) -> None:
    grafana = config["services"]["grafana"]
    match = re.fullmatch(r"grafana/grafana:(\d+)\.(\d+)\.(\d+)", grafana["image"])
    assert match, f"Grafana is not pinned: {grafana['image']}"
    grafana_version = tuple(int(x) for x in match.groups())
    plugins = grafana["environment"]["GF_INSTALL_PLUGINS"].split(",")
    (pinned,) = [p for p in plugins if p.startswith("grafana-clickhouse-datasource")]
    plugin_match = re.fullmatch(r"grafana-clickhouse-datasource (\d+)\.(\d+)\.(\d+)", pinned.strip())
    assert plugin_match, f"the ClickHouse plugin is not pinned: {pinned!r}"
    plugin = tuple(int(x) for x in plugin_match.groups())
    if grafana_version < (11, 6, 0):
        assert (4, 0, 0) <= plugin < (4, 15, 0), f"plugin {plugin} needs Grafana >= 11.6"
    else:
        assert plugin >= (4, 15, 0)


def test_smtp_comes_from_the_env_file_not_the_compose_file(config: dict[str, Any]) -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in {"x-moodwire": raw["x-moodwire"], **raw["services"]}.items():
        pinned = [k for k in (service.get("environment") or {}) if k.startswith("MOODWIRE_SMTP_")]
        assert not pinned, f"{name} pins {pinned} in docker-compose.yml"
    example = compose.read_env_file(ROOT / ".env.example")
    assert example["MOODWIRE_SMTP_HOST"] == "mailcatcher"
    for name in APP_SERVICES:
        assert config["services"][name]["environment"]["MOODWIRE_SMTP_HOST"] == "mailcatcher"


def test_every_app_service_runs_as_the_images_non_root_user(config: dict[str, Any]) -> None:
    image = compose.read_dockerfile(ROOT / "Dockerfile")
    for name in APP_SERVICES:
        uid, gid = compose.parse_user(config["services"][name]["user"])
        assert uid != 0 and (uid, gid) == compose.parse_user(image.user)
        data_dir = image.env["MOODWIRE_DATA_DIR"]
        assert data_dir.startswith("/") and image.user_dirs[data_dir] == (uid, gid)
    ingest_mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in config["services"]["ingest"]["volumes"]}
    assert ingest_mounts[image.env["MOODWIRE_DATA_DIR"]] == "ingest-state"


# --------------------------------------------------------------------------------------------
# the services, running


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def mail() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=services.free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


def users_xml(dotenv: dict[str, str]) -> str:
    """What the stack's ClickHouse has (CLICKHOUSE_USER/PASSWORD and dashboards/clickhouse/init),
    as a users.d file: 18.16 has no CREATE USER."""
    return f"""<yandex>
  <users>
    <moodwire>
      <password>{dotenv['MOODWIRE_CLICKHOUSE_PASSWORD']}</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </moodwire>
    <analyst>
      <password>{dotenv['ANALYST_PASSWORD']}</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>readonly</profile>
      <quota>default</quota>
    </analyst>
  </users>
</yandex>
"""


@pytest.fixture
def clickhouse(dotenv: dict[str, str]) -> Iterator[services.Service]:
    server = services.start_clickhouse(users_xml=users_xml(dotenv))
    try:
        yield server
    finally:
        server.stop()


class Running:
    """The app services as processes; stopped (SIGTERM, like `docker stop`) at the end."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.containers: dict[str, Container] = {}

    def start(self, container: Container) -> None:
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            # stands in for the image's site-packages: this checkout's code
            "PYTHONPATH": str(ROOT),
            "LANG": "C.UTF-8",
            **container.env,
        }
        log = (self.scratch / f"{container.name}.log").open("wb")
        self.processes[container.name] = subprocess.Popen(
            as_user(container, container.argv),
            cwd=container.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.containers[container.name] = container

    def log(self, name: str) -> str:
        return (self.scratch / f"{name}.log").read_text(errors="replace")[-4000:]

    def url(self, name: str, port: int, path: str) -> str:
        return f"http://127.0.0.1:{self.containers[name].published[port]}{path}"

    def wait_ready(self, name: str, metrics_port: int, timeout_s: float = 120.0) -> None:
        url = self.url(name, metrics_port, "/readyz")
        deadline = time.monotonic() + timeout_s
        while True:
            process = self.processes[name]
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{self.log(name)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not ready after {timeout_s} s:\n{self.log(name)}")
            time.sleep(0.2)

    def stop(self, name: str) -> int:
        return services.stop_process(self.processes[name], signal.SIGTERM, timeout_s=60)

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            services.stop_process(self.processes[name], signal.SIGTERM, timeout_s=30)


def as_user(container: Container, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={container.uid}", f"--regid={container.gid}", "--clear-groups", "--", *argv]


def sample_posts_ending_now() -> list[dict[str, Any]]:
    """The bundled sample stream (six hours, a negative spike on BA), shifted to end now."""
    posts = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    stamps = [datetime.fromisoformat(p["published_at"].replace("Z", "+00:00")) for p in posts]
    shift = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2) - max(stamps)
    for post, stamp in zip(posts, stamps):
        post["published_at"] = (stamp + shift).strftime("%Y-%m-%dT%H:%M:%SZ")
    return posts


def push(url: str, token: str, body: bytes) -> dict[str, Any]:
    """POST to the push endpoint, resending on 503 (the endpoint's own advice; posts dedupe)."""
    deadline = time.monotonic() + 120
    while True:
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise AssertionError(f"push answered {exc.code}: {exc.read()[:500]!r}") from None
        time.sleep(1)


def metric_total(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " "))


def until(probe: Any, what: str, timeout_s: float, log: Any = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{log()}" if log else ""))
        time.sleep(0.5)


def test_posts_from_a_file_become_an_e_mailed_alert_through_the_composed_services(
    config: dict[str, Any],
    dotenv: dict[str, str],
    kafka_bootstrap: str,
    clickhouse: services.Service,
    mail: tuple[Inbox, int],
) -> None:
    inbox, smtp_port = mail
    kafka_host, kafka_port = kafka_bootstrap.rsplit(":", 1)
    clickhouse_http = _http_port(clickhouse)
    hosts = {
        "kafka": {9092: Endpoint(kafka_host, int(kafka_port))},
        "clickhouse": {9000: Endpoint("127.0.0.1", clickhouse.port), 8123: Endpoint("127.0.0.1", clickhouse_http)},
        "mailcatcher": {1025: Endpoint("127.0.0.1", smtp_port)},
    }
    scratch = Path(tempfile.mkdtemp(prefix="moodwire-stack-"))
    scratch.chmod(0o711)  # the services' user reaches its own directories in here, nothing else
    running = Running(scratch)
    volumes: dict[str, Path] = {}
    try:
        containers = {}
        for name in APP_SERVICES:
            service = config["services"][name]
            image = compose.read_dockerfile(ROOT / service["build"].get("dockerfile", "Dockerfile"))
            containers[name] = compose.translate(
                name, service, image, app_root=ROOT, volumes=volumes, hosts=hosts, scratch=scratch,
                service_names=set(config["services"]),
            )
        ingest = containers["ingest"]
        # The image's working directory is read-only to the services' user; its volume is not.
        assert subprocess.run(as_user(ingest, ["test", "-w", str(ROOT)])).returncode != 0
        assert subprocess.run(as_user(ingest, ["test", "-w", str(volumes["ingest-state"])])).returncode == 0

        metrics_port = int(config["services"]["ingest"]["environment"]["MOODWIRE_METRICS_PORT"])
        push_port = int(config["services"]["ingest"]["environment"]["MOODWIRE_PUSH__PORT"])
        for name in ("ingest", "scorer"):
            running.start(containers[name])
        for name in ("ingest", "scorer"):
            running.wait_ready(name, metrics_port)

        # Posts from a file, through the push endpoint the stack publishes.
        posts = sample_posts_ending_now()
        body = "".join(json.dumps(p) + "\n" for p in posts).encode()
        answer = push(running.url("ingest", push_port, "/v1/posts"), dotenv["MOODWIRE_PUSH__TOKEN"], body)
        assert answer["accepted"] == len(posts) and answer["rejected"] == [], answer

        def on_the_bus() -> float:
            with urllib.request.urlopen(running.url("ingest", metrics_port, "/metrics"), timeout=5) as response:
                text = response.read().decode()
            done = metric_total(text, "moodwire_posts_ingested_total") + metric_total(text, "moodwire_posts_duplicate_total")
            return metric_total(text, "moodwire_posts_ingested_total") if done >= len(posts) else 0

        ingested = int(until(on_the_bus, "ingest to put every post on the bus", 120, lambda: running.log("ingest")))
        assert ingested > 0.9 * len(posts)
        store = ServerStore(
            load_settings(
                store="clickhouse",
                clickhouse_port=clickhouse.port,
                clickhouse_user="moodwire",
                clickhouse_password=dotenv["MOODWIRE_CLICKHOUSE_PASSWORD"],
            )
        )
        try:
            until(
                lambda: store.query("SELECT uniqExact(id) FROM moodwire.posts").rows[0][0] == ingested,
                "the scorer to store every post",
                180,
                lambda: running.log("scorer"),
            )

            # `moodwire sql` from the host, as README "Production stack" says (the published
            # ClickHouse port is a free one here, as Docker's mapping would publish 9000).
            sql = subprocess.run(
                [str(VENV_BIN / "moodwire"), "sql", "SELECT uniqExact(id) AS n FROM posts", "--format", "tsv"],
                env={
                    "PATH": os.environ["PATH"],
                    "PYTHONPATH": str(ROOT),
                    "MOODWIRE_STORE": "clickhouse",
                    "MOODWIRE_CLICKHOUSE_PORT": str(clickhouse.port),
                    "MOODWIRE_CLICKHOUSE_USER": "analyst",
                    "MOODWIRE_CLICKHOUSE_PASSWORD": dotenv["ANALYST_PASSWORD"],
                },
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert sql.returncode == 0, sql.stderr
            assert sql.stdout.splitlines() == ["n", str(ingested)]

            # The alert service: detects the spike in the stored minutes and e-mails it.
            running.start(containers["alert"])
            running.wait_ready("alert", metrics_port)
            message = until(
                lambda: [m for m in inbox.messages if SPIKE_SYMBOL in str(m["Subject"])],
                "the alert e-mail",
                180,
                lambda: running.log("alert"),
            )[0]
            assert "negative-spike" in str(message["Subject"])
            assert message["To"] == "analysts@example.com"
            # The rows are written once the SMTP server has taken the message, so the e-mail can
            # be in the inbox a moment before they are: wait for them, do not race them.
            until(
                lambda: ("BA", "negative-spike", "firing") in store.query(
                    "SELECT symbol, kind, status FROM moodwire.alerts WHERE symbol = %(s)s", {"s": SPIKE_SYMBOL}
                ).rows,
                "the alert's row",
                30,
                lambda: running.log("alert"),
            )
            until(
                lambda: ("email", "sent") in store.query(
                    "SELECT channel, outcome FROM moodwire.alert_deliveries WHERE outcome = 'sent'"
                ).rows,
                "the e-mail's delivery row",
                30,
                lambda: running.log("alert"),
            )
        finally:
            store.close()

        # ingest kept its checkpoints in data_dir, on its volume, as the services' user
        state = [p for p in volumes["ingest-state"].rglob("*") if p.is_file()]
        assert state and all(p.stat().st_uid == ingest.uid for p in state), state
        # and every service stops cleanly on SIGTERM, as `docker compose stop` sends it
        for name in ("ingest", "scorer", "alert"):
            assert running.stop(name) == 0, running.log(name)
    finally:
        running.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)


def _http_port(server: services.Service) -> int:
    """The HTTP port a ClickHouse server from tests.services was started with."""
    args = server.process.args
    assert isinstance(args, list)
    (flag,) = [a for a in args if str(a).startswith("--http_port=")]
    return int(str(flag).split("=", 1)[1])
