"""`moodwire report` on a real embedded store, rendered by headless Chromium.

The command runs as a user runs it (a subprocess), once through the read-only endpoint of a
process that holds chDB and once opening chDB itself; the HTML must stand alone (no scripts, no
remote resources) and its screenshot must show the plots: many colours, the polarity line's
blue and the negative bars' and alert markers' red.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from alerting.detector import NEGATIVE_SPIKE
from moodwire.config import load_settings
from moodwire.query_server import QueryServer
from moodwire.report import AlertMark, NegativePost, ReportData, SymbolSeries, collect, render_html
from moodwire.store import ChdbStore, ServerStore
from tests.conftest import unique
from tests.integration.test_dashboards import SPIKE_SYMBOL, SYMBOLS, Stream, load_stream, scored_stream

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BLUE = (0x25, 0x63, 0xEB)
RED = (0xDC, 0x26, 0x26)


def read_png(path: Path) -> np.ndarray:
    """A tiny PNG decoder (8-bit RGB/RGBA, not interlaced: what Chromium writes) -> (h, w, 3)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks = 8, []
    width = height = depth = color = interlace = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(chunks))
    image = np.zeros((height, stride), dtype=np.uint8)
    prior = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        offset = y * (stride + 1)
        kind = raw[offset]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=offset + 1).astype(np.int64)
        if kind == 0:
            current = line
        elif kind == 1:  # Sub: a running sum per channel
            current = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            current = (line + prior) % 256
        else:  # Average and Paeth depend on the byte just decoded: one at a time
            out = line.tolist()
            above = prior.tolist()
            for i in range(stride):
                left = out[i - bpp] if i >= bpp else 0
                if kind == 3:
                    out[i] = (out[i] + (left + above[i]) // 2) & 0xFF
                else:
                    upper_left = above[i - bpp] if i >= bpp else 0
                    p = left + above[i] - upper_left
                    pa, pb, pc = abs(p - left), abs(p - above[i]), abs(p - upper_left)
                    predictor = left if pa <= pb and pa <= pc else above[i] if pb <= pc else upper_left
                    out[i] = (out[i] + predictor) & 0xFF
            current = np.array(out, dtype=np.int64)
        image[y] = current
        prior = current
    return image.reshape(height, width, bpp)[:, :, :3]


def pixels_near(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 30) -> int:
    distance = np.abs(image.astype(np.int16) - np.array(rgb, dtype=np.int16)).max(axis=2)
    return int((distance <= tolerance).sum())


def screenshot(page: Path, out: Path, profile: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed; scripts/install-services.sh installs it")
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--window-size=1000,1400",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and out.exists(), result.stdout + result.stderr


def run_report(data_dir: Path, out: Path, stream: Stream, *extra: str) -> str:
    start = (stream.now - timedelta(hours=3)).isoformat()
    end = (stream.now + timedelta(minutes=1)).isoformat()
    # `python -m` from the repository root: the way the console script runs, without needing
    # the checkout installed.
    result = subprocess.run(
        [sys.executable, "-m", "moodwire.cli", "report", "--data-dir", str(data_dir), "--from", start, "--to", end, "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out.read_text(encoding="utf-8")


def check_standalone(page: str) -> None:
    assert "<svg" in page
    assert "<script" not in page.lower()
    # Nothing loads from elsewhere: no src/link/@import/url(); only post links point outside.
    assert not re.search(r"\ssrc=|<link|@import|url\(", page, re.IGNORECASE)


@pytest.fixture(scope="module")
def stream() -> Stream:
    return scored_stream()


def test_report_through_the_running_process_renders_in_chromium(tmp_path: Path, stream: Stream) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    # This process holds chDB, as `moodwire run` would: the command must go through the endpoint.
    store = ChdbStore(settings.chdb_path)
    endpoint = QueryServer(store, settings.state_dir)
    try:
        load_stream(store, stream)
        endpoint.start()
        page = run_report(settings.data_dir, tmp_path / "out" / "report.html", stream)
    finally:
        endpoint.stop()
        store.close()

    check_standalone(page)
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == len(SYMBOLS)
    assert page.index('id="sym-BA"') < page.index('id="sym-AAPL"'), "the alerted symbol comes first"
    assert page.count('<g class="alert">') == 1 and f"{SPIKE_SYMBOL} {NEGATIVE_SPIKE} (critical)" in page
    # Post text is shown as text, never as markup; each replayed post is listed once.
    assert "&lt;b&gt;shares&lt;/b&gt; &amp; outlook" in page and "<b>shares" not in page
    links = re.findall(r'<a href="(https://news\.example\.com/[^"]+)"', page)
    assert len(links) == 25 and len(links) == len(set(links))

    png = tmp_path / "report.png"
    screenshot(tmp_path / "out" / "report.html", png, tmp_path / "chromium-profile")
    image = read_png(png)
    assert image.shape[0] >= 1000 and image.shape[1] >= 900
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    inked = float((image.astype(np.int16).sum(axis=2) < 720).mean())
    assert colours > 50, f"only {colours} colours: blank or unstyled page"
    assert inked > 0.03, f"only {inked:.1%} of the page is not white"
    assert pixels_near(image, BLUE) > 300, "no net-polarity line visible"
    assert pixels_near(image, RED) > 300, "no negative bars or alert markers visible"


def test_report_opening_the_store_itself_matches(tmp_path: Path, stream: Stream) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    store = ChdbStore(settings.chdb_path)
    try:
        load_stream(store, stream)
    finally:
        store.close()  # chDB: one session per process; the command opens its own
    page = run_report(settings.data_dir, tmp_path / "report.html", stream, "--symbols", "ba,$TSLA", "--top-posts", "5")
    check_standalone(page)
    summary = page.split("<h2>Summary</h2>", 1)[1].split("</table>", 1)[0]
    assert re.findall(r'href="#sym-([A-Z]+)"', summary) == ["BA", "TSLA"]
    start, end = stream.now - timedelta(hours=3), stream.now + timedelta(minutes=1)
    assert f'<td class="num">{stream.distinct_in("BA", start, end)}</td>' in summary
    assert len(re.findall(r'<td class="num neg">-', page)) == 5


def test_report_queries_run_on_the_clickhouse_server(clickhouse_port: int, tmp_path: Path, stream: Stream) -> None:
    settings = load_settings(store="clickhouse", clickhouse_port=clickhouse_port, clickhouse_database=unique("report"), data_dir=tmp_path)
    store = ServerStore(settings)
    try:
        load_stream(store, stream)
        start, end = stream.now - timedelta(hours=3), stream.now + timedelta(minutes=1)
        data = collect(store.analyst_query, start, end)
    finally:
        store.run_ddl(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()
    assert [s.symbol for s in data.series][0] == SPIKE_SYMBOL and {s.symbol for s in data.series} == set(SYMBOLS)
    for series in data.series:
        assert series.posts == stream.distinct_in(series.symbol, start, end)
    assert [a.symbol for a in data.alerts] == [SPIKE_SYMBOL]
    assert len(data.posts) == 25 and len({p.url for p in data.posts}) == 25
    assert "<svg" in render_html(data)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--from", "now", "--to", "now-1h"], "must be before"),
        (["--from", "yesterday"], "or write now, now-6h"),
        (["--from", "now-1h"], "no embedded store at"),
    ],
)
def test_report_says_what_is_wrong(tmp_path: Path, arguments: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "moodwire.cli", "report", "--data-dir", str(tmp_path / "empty"), *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert not (tmp_path / "empty").exists(), "a failed report must not create a store"


def test_untrusted_text_and_links_stay_inert() -> None:
    now = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    at = int(now.timestamp()) - 600
    data = ReportData(
        start=now - timedelta(hours=1),
        end=now,
        step_s=60,
        series=[SymbolSeries("BA", {at - at % 60: (3, 2, 1)})],
        alerts=[AlertMark(at, "BA", NEGATIVE_SPIKE, "warning", 3, 2, 0.66, 0.2)],
        posts=[
            NegativePost(at, "BA", "rss", -0.9, "fear", '<script>alert("x")</script>', "javascript:alert(1)"),
            NegativePost(at, "BA", "rss", -0.8, "anger", "fine", 'https://example.com/?a="b"'),
        ],
        generated_at=now,
    )
    page = render_html(data)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "javascript:" not in page
    assert 'href="https://example.com/?a=&quot;b&quot;"' in page
