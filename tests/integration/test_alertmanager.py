"""moodwire's alerts in a real Alertmanager (Debian's prometheus-alertmanager binary).

Alertmanager runs with the stack's own routing (dashboards/alertmanager/alertmanager.yml: its
route, grouping and inhibitions) and only its receivers swapped for a local webhook, so the
test sees what Alertmanager would send. Its API answers what it holds: groups, silences,
active alerts.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import yaml

from alerting import alertmanager
from alerting.detector import NEGATIVE_SPIKE, Alert, ExamplePost
from alerting.lifecycle import Notification
from alerting.notifiers import AlertmanagerNotifier, needs_resolutions, notifiers_from_settings
from moodwire.config import load_settings
from tests import services

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "dashboards" / "alertmanager" / "alertmanager.yml"
DASHBOARD = ROOT / "dashboards" / "grafana" / "dashboards" / "market-sentiment.json"
GRAFANA = "http://grafana.example:3000"
T = TypeVar("T")


def spike(symbol: str, severity: str, fired_at: datetime) -> Alert:
    return Alert(
        symbol=symbol,
        kind=NEGATIVE_SPIKE,
        fired_at=fired_at,
        severity=severity,  # type: ignore[arg-type]
        statistic=9.2,
        p_value=6.3e-10,
        window_minutes=5,
        window_posts=48,
        window_negative=31,
        window_share=31 / 48,
        baseline_share=0.19,
        expected_total=11.0,
        episode_id=f"{symbol}:negative-spike:{fired_at:%Y%m%dT%H%MZ}",
        examples=(ExamplePost(f"rss:{symbol}", f"{symbol} guidance cut, shares slide", -0.93, fired_at - timedelta(minutes=2)),),
    )


def notification(status: str, alerts: list[Alert], at: datetime) -> Notification:
    return Notification(f"{status}-{at:%Y%m%dT%H%MZ}-test", status, at, tuple(alerts))  # type: ignore[arg-type]


@dataclass
class Inbox:
    """What Alertmanager delivered to its (webhook) receivers."""

    url: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            box.messages.append({"receiver": self.path.strip("/"), **json.loads(body)})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield box
    server.shutdown()
    server.server_close()


def stack_config_with_receivers_at(url: str) -> str:
    """The stack's alertmanager.yml, receivers replaced by webhooks and the waits shortened."""
    config = yaml.safe_load(CONFIG.read_text())
    config.pop("global", None)
    config["receivers"] = [
        {"name": r["name"], "webhook_configs": [{"url": f"{url}/{r['name']}", "send_resolved": True}]}
        for r in config["receivers"]
    ]
    route = config["route"]
    route.update(group_wait="1s", group_interval="1s")
    for child in route.get("routes", []):
        child.pop("group_wait", None)
        child.pop("group_interval", None)
    return yaml.safe_dump(config)


@pytest.fixture
def am(inbox: Inbox) -> Iterator[str]:
    service = services.start_alertmanager(stack_config_with_receivers_at(inbox.url))
    try:
        yield f"http://127.0.0.1:{service.port}"
    finally:
        service.stop()


def api(base: str, path: str, body: Any = None, method: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return json.loads(text) if text else None


def eventually(probe: Callable[[], T | None], what: str, timeout_s: float = 30.0) -> T:
    """Poll until `probe` returns something truthy (Alertmanager works in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def notifier(base: str) -> AlertmanagerNotifier:
    return AlertmanagerNotifier(alertmanager.AlertmanagerSettings(url=base, grafana_url=GRAFANA, backoff_s=0.01))


def test_the_stack_config_is_valid() -> None:
    import shutil
    import subprocess

    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is not installed; scripts/install-services.sh installs prometheus-alertmanager")
    result = subprocess.run([amtool, "check-config", str(CONFIG)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_sell_off_is_one_group_and_one_message(am: str, inbox: Inbox) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    alerts = [spike("ACME", "critical", now), spike("XYZ", "warning", now), spike("BA", "critical", now)]
    outcome = notifier(am).deliver(notification("firing", alerts, now))
    assert outcome.delivered and outcome.channel == "alertmanager" and outcome.attempts == 1

    groups = eventually(lambda: api(am, "/api/v2/alerts/groups"), "a group")
    assert len(groups) == 1, groups
    (group,) = groups
    assert group["labels"] == {"alertname": "MoodwireNegativeSpike", "kind": "negative-spike"}
    assert group["receiver"]["name"] == "analysts"  # the route for sentiment alerts
    held = {a["labels"]["symbol"]: a for a in group["alerts"]}
    assert set(held) == {"ACME", "XYZ", "BA"}
    acme = held["ACME"]
    assert acme["labels"] == {
        "alertname": "MoodwireNegativeSpike", "symbol": "ACME", "kind": "negative-spike", "severity": "critical",
    }
    evidence = acme["annotations"]
    assert evidence["window_negative"] == "31" and evidence["window_posts"] == "48"
    assert evidence["episode_id"] == alerts[0].episode_id
    assert "ACME guidance cut" in evidence["examples"]
    link = urlsplit(evidence["grafana_url"])
    dashboard_uid = json.loads(DASHBOARD.read_text())["uid"]
    assert f"{link.scheme}://{link.netloc}" == GRAFANA and link.path == f"/d/{dashboard_uid}/"
    query = parse_qs(link.query)
    assert query["var-symbol"] == ["ACME"]
    assert int(query["from"][0]) <= int(alerts[0].window_start.timestamp() * 1000) < int(query["to"][0])
    assert acme["generatorURL"] == evidence["grafana_url"]

    # Alertmanager sends the group as one message naming all three.
    message = eventually(lambda: [m for m in inbox.messages if m["status"] == "firing"], "the grouped message")[0]
    assert message["receiver"] == "analysts"
    assert sorted(a["labels"]["symbol"] for a in message["alerts"]) == ["ACME", "BA", "XYZ"]


def test_a_silence_silences(am: str) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    silence = api(am, "/api/v2/silences", {
        "matchers": [{"name": "symbol", "value": "XYZ", "isRegex": False, "isEqual": True}],
        "startsAt": (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endsAt": (now + timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "createdBy": "moodwire tests",
        "comment": "earnings day",
    })
    assert notifier(am).deliver(notification("firing", [spike("ACME", "critical", now), spike("XYZ", "warning", now)], now)).delivered

    def states() -> dict[str, dict[str, Any]] | None:
        held = {a["labels"]["symbol"]: a["status"] for a in api(am, "/api/v2/alerts")}
        return held if len(held) == 2 and held["XYZ"]["state"] != "unprocessed" else None

    held = eventually(states, "both alerts processed")
    assert held["XYZ"]["state"] == "suppressed" and held["XYZ"]["silencedBy"] == [silence["silenceID"]]
    assert held["ACME"]["state"] == "active" and held["ACME"]["silencedBy"] == []
    filtered = api(am, "/api/v2/alerts?" + urlencode({"silenced": "false"}))
    assert [a["labels"]["symbol"] for a in filtered] == ["ACME"]


def test_a_resolution_resolves(am: str, inbox: Inbox) -> None:
    fired = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=20)
    acme, xyz = spike("ACME", "critical", fired), spike("XYZ", "warning", fired)
    send = notifier(am)
    assert send.deliver(notification("firing", [acme, xyz], fired)).delivered
    eventually(lambda: len(api(am, "/api/v2/alerts")) == 2, "two active alerts")

    # The lifecycle resolves ACME's episode; the resolved notification carries its first alert.
    resolved_at = fired + timedelta(minutes=16)
    assert send.deliver(notification("resolved", [acme], resolved_at)).delivered
    still = eventually(
        lambda: (left := api(am, "/api/v2/alerts")) and len(left) == 1 and left, "ACME to resolve"
    )
    assert still[0]["labels"]["symbol"] == "XYZ"
    # and the receiver hears of it, as for any resolved alert (in the group's next message,
    # next to XYZ, which still fires)
    def resolutions() -> list[dict[str, Any]]:
        return [a for m in inbox.messages for a in m["alerts"] if a["status"] == "resolved"]

    (gone,) = eventually(resolutions, "the resolution")
    assert gone["labels"]["symbol"] == "ACME" and gone["endsAt"].startswith(resolved_at.strftime("%Y-%m-%dT%H:%M"))


def test_a_refusal_is_final_and_recorded(am: str) -> None:
    # Alertmanager answers 404 to a wrong base URL: a refusal, not worth a retry.
    alert = spike("ACME", "critical", datetime.now(UTC))
    settings = alertmanager.AlertmanagerSettings(url=am + "/nowhere", backoff_s=0.01)
    outcome = alertmanager.deliver(notification("firing", [alert], alert.fired_at), settings)
    assert not outcome.delivered and outcome.status_code == 404 and outcome.attempts == 1
    assert outcome.error is not None and outcome.error.startswith("HTTP 404")


def test_settings_wire_the_channel_and_its_resolutions(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, alertmanager_url="http://alertmanager:9093", grafana_url=GRAFANA)
    notifiers = notifiers_from_settings(settings)
    assert [n.channel for n in notifiers] == ["alertmanager"]
    assert needs_resolutions(notifiers)
    assert not needs_resolutions(notifiers_from_settings(load_settings(data_dir=tmp_path)))
