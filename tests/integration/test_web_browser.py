"""The web page in a real browser (Selenium, Debian's headless Chromium) against a real run: the agent
(``python -m agent run``), Mosquitto and the aggregator (``python -m aggregator run`` with ``[web]``).

In file order, on one run: the fleet page lists the device online; a new record shows within 2 s without a
reload; a forged record shows up as a reject with its reason; the device page's plot canvases are drawn with
data; killing the agent (SIGKILL) shows it offline within the will's delay (the agent sets none: the broker
publishes the will when the TCP connection drops).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_proc import REPO, AgentProcess, agent_config, to_toml, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.pki import make_fleet
from tests.support.sim_fleet import Publisher
from tests.support.wait import free_port, wait_for

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}); scripts/test installs "
                "them when run as root", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")

DEVICE = "web-browser-dev"


@dataclass
class Live:
    url: str
    db: Path
    agent: AgentProcess
    broker: Mosquitto
    driver: Any
    agg_log: Path

    def max_seq(self) -> int:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT MAX(seq) FROM records WHERE device_id = ?", (DEVICE,)).fetchone()
            return int(row[0] or 0)
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self, selector: str) -> str:
        """innerText of an element, read in one script call (rows are replaced live: no stale handles)."""
        return str(self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", selector))

    def row(self, attr: str) -> str | None:
        return self.js(f"const r = document.getElementById('row-{DEVICE}'); return r && r.dataset.{attr};")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from selenium.webdriver.chrome.service import Service

    tmp = tmp_path_factory.mktemp("web-browser")
    broker = Mosquitto().start()
    fleet = make_fleet(tmp / "pki", devices=[DEVICE])
    agg_id = fleet.add_aggregator("agg-browser")
    port = free_port()
    db = tmp / "records.db"
    conf = tmp / "aggregator.toml"
    conf.write_text(to_toml({
        "mqtt": {"url": broker.url, "client_id": "agg-browser"},
        "store": {"url": str(db)},
        "trust": {"ca_files": [str(fleet.ca_cert)], "crl_files": [str(fleet.crl)]},
        "identity": {"key": agg_id.key_uri, "cert_file": str(agg_id.cert)},
        "web": {"enabled": True, "port": port, "push_interval_ms": 200},
    }))
    agg_log = tmp / "aggregator.log"
    log = open(agg_log, "wb")  # noqa: SIM115 - closed below
    agg = subprocess.Popen([sys.executable, "-m", "aggregator", "run", "--config", str(conf)], stdout=log, stderr=log,
                           cwd=str(REPO))
    files = fleet.devices[DEVICE]
    (tmp / "agent").mkdir()
    cfg = agent_config(tmp / "agent", DEVICE, broker.url, delivery="aggregator", key_path=files.key,
                       certificate=str(files.cert), telemetry={"interval_s": 1.0},
                       receipts={"ca_file": str(fleet.ca_cert)},
                       source={"type": "simulated", "fault": "cycle", "cycle_s": 20.0, "realtime": True,
                               "rate_hz": 1000.0})
    agent = AgentProcess(write_config(tmp / "agent" / "agent.toml", cfg))
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
              "--disable-gpu", "--no-first-run"):
        opts.add_argument(a)
    driver = None
    try:
        wait_for(lambda: "web page at" in agg_log.read_text() or agg.poll() is not None, timeout=30,
                 what="aggregator web page up")
        assert agg.poll() is None, agg_log.read_text()
        agent.start()
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
        driver.set_script_timeout(10)
        run = Live(f"http://127.0.0.1:{port}", db, agent, broker, driver, agg_log)
        try:
            wait_for(lambda: run.max_seq() > 5, timeout=60, what="the agent's records stored")
        except TimeoutError as e:
            raise AssertionError(f"{e}\nagent log:\n{agent.log()[-3000:]}\naggregator log:\n"
                                 f"{agg_log.read_text()[-3000:]}") from None
        yield run
    finally:
        if driver is not None:
            driver.quit()
        agent.stop()
        agg.terminate()
        try:
            agg.wait(20)
        finally:
            if agg.poll() is None:
                agg.kill()
            log.close()
        broker.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def open_fleet(live: Live) -> None:
    live.driver.get(live.url + "/")
    wait_for(lambda: live.js("return document.body.dataset.live") == "1", timeout=10, what="live updates connected")


def test_fleet_page_lists_the_device_online(live: Live) -> None:
    open_fleet(live)
    wait_for(lambda: live.row("state") == "online", timeout=10, what="the device row online")
    text = live.text(f"#row-{DEVICE}")
    assert "online" in text and "0.1.0" in text, text


def test_a_new_record_shows_within_2_s_without_reload(live: Live) -> None:
    open_fleet(live)
    live.js("window.__noReload = 'still here';")
    before = live.max_seq()
    stored = wait_for(lambda: (s := live.max_seq()) > before and s, timeout=10, what="a new record stored")
    t0 = time.monotonic()
    wait_for(lambda: int(live.row("seq") or 0) >= stored, timeout=2.0, interval=0.02,
             what=f"seq {stored} on the page within 2 s")
    elapsed = time.monotonic() - t0
    assert live.js("return window.__noReload") == "still here", "the page was reloaded"
    assert int(live.js("return document.body.dataset.updates || '0'")) > 0
    print(f"record {stored} on the page {elapsed * 1000:.0f} ms after its commit was seen")


def test_a_forged_record_shows_as_a_reject_with_its_reason(live: Live) -> None:
    open_fleet(live)
    live.js("window.__noReload = 'still here';")
    conn = sqlite3.connect(f"file:{live.db}?mode=ro", uri=True, timeout=5)
    try:
        stream, record = conn.execute("SELECT stream, record FROM records WHERE device_id = ? AND kind = 'result' "
                                      "ORDER BY seq DESC LIMIT 1", (DEVICE,)).fetchone()
    finally:
        conn.close()
    forged = bytes(record[:-1]) + bytes([record[-1] ^ 0x5A])  # last signature byte changed
    pub = Publisher(live.broker.url, client_id="forger")
    try:
        pub.send((f"edge/v1/{DEVICE}/result/{stream}", forged))
    finally:
        pub.close()
    sel = f"#row-{DEVICE} .reject[data-reason='bad_signature']"
    wait_for(lambda: live.text(sel), timeout=5, what="the reject on the page")
    assert "bad_signature 1" in live.text(sel)
    assert live.js("return window.__noReload") == "still here"
    assert "recent rejects" in live.text(f"#row-{DEVICE}")


CANVAS_INK = """
const c = document.querySelector(`[data-plot='${arguments[0]}'] canvas`);
if (!c) return -1;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
return n;
"""


def test_the_device_page_plots_are_drawn_with_data(live: Live) -> None:
    live.driver.get(f"{live.url}/devices/{DEVICE}")
    wait_for(lambda: live.js("return document.body.dataset.plots") == "6", timeout=15, what="six plots")
    wait_for(lambda: live.js("return window.edgePlots.rate.data[0].length") > 0, timeout=10, what="rate data")
    wait_for(lambda: live.js("return window.edgePlots.host.data[1].filter(v => v !== null).length") > 0,
             timeout=15, what="telemetry (CPU) data")
    for name in ("rate", "latency", "host", "labels"):
        points = live.js(f"return window.edgePlots['{name}'].data[1].filter(v => v !== null).length")
        assert points > 0, f"{name}: no data"
        ink = live.js(CANVAS_INK, name)
        assert ink > 500, f"{name}: canvas nearly blank ({ink} painted pixels)"
        assert live.js(f"return document.querySelector(\"[data-plot='{name}']\").closest('figure')"
                       ".dataset.empty") == "0"
    assert DEVICE in live.text("#device-panel")


def test_killing_the_agent_shows_it_offline_within_the_will_delay(live: Live) -> None:
    open_fleet(live)
    wait_for(lambda: live.row("state") == "online", timeout=10, what="online before the kill")
    t0 = time.monotonic()
    live.agent.kill9()
    wait_for(lambda: live.row("state") == "offline", timeout=5.0, interval=0.05,
             what="offline on the page within 5 s of SIGKILL (will delay 0)")
    elapsed = time.monotonic() - t0
    assert "offline" in live.text(f"#row-{DEVICE}")
    assert "Traceback" not in live.agg_log.read_text()
    print(f"offline on the page {elapsed * 1000:.0f} ms after SIGKILL")
