"""Screenshots of the aggregator's web pages for the docs: docs/img/fleet.png and docs/img/device.png.

Starts a private Mosquitto, an aggregator with ``[web]`` on a free loopback port and a simulated fleet of
certified devices (``tests/support/sim_fleet.py``: real signed records through the real broker) with 30
minutes of history and a few devices in trouble: one offline (its will), one revoked (CRL), one sending
forged records, one with gaps (lost in transit, and evicted with a gap record), one with an unsynchronised
clock, one with an outbox backlog, one whose certificate expires in 5 days. Then headless Chromium
(Selenium, Debian's ``chromium`` and ``chromium-driver``) opens both pages and saves them.

    .venv/bin/python tools/screenshots.py [--out docs/img] [--keep]   # --keep: leave it running, print the URL
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aggregator import AggregatorService, parse_config  # noqa: E402
from envelope import labels  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402
from tests.support.pki import make_fleet  # noqa: E402
from tests.support.sim_fleet import Publisher, SimAgent  # noqa: E402
from tests.support.wait import wait_for  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
NAMES = ["pump-01", "pump-02", "pump-03", "fan-04", "press-05", "conveyor-06", "mixer-07", "drill-08", "lathe-09",
         "saw-10", "compressor-11", "chiller-12"]
FEATURED = "pump-02"  # the device page shown


def history(dev: SimAgent, rng: random.Random, minutes: int, *, ago: int | None = None, unsynced: bool = False,
            backlog: int = 0, fault_from: float = 2.0) -> list[tuple[str, bytes]]:
    """About one result every 5 s and telemetry every 30 s from ``ago`` minutes back (default ``minutes``)
    for ``minutes``, with capture times in the past (the store keeps them; the plots use them)."""
    end = int(time.time() * 1000) - ((ago if ago is not None else minutes) - minutes) * 60_000
    out = []
    clock = labels.CLOCK_UNSYNCED if unsynced else labels.CLOCK_NTP
    steps = minutes * 12
    for i in range(steps):
        t = end - (steps - i) * 5000
        frac = i / steps
        if rng.random() < 0.15 + 0.1 * math.sin(i / 40):
            continue  # a window without a confident result: fewer results in this stretch
        label = "normal"
        if frac > fault_from:
            label = rng.choice(["imbalance", "imbalance", "normal", "bearing"])
        elif rng.random() < 0.06:
            label = rng.choice(["imbalance", "misalignment"])
        lat = int(400 + 60 * math.sin(i / 9) + rng.gauss(0, 25) + (300 if rng.random() < 0.02 else 0))
        out.append(dev.result(label, score=round(0.7 + 0.29 * rng.random(), 3), latency_us=lat, capture_ms=t,
                              clock_state=clock))
        if i % 6 == 0:
            depth = backlog + int(backlog * frac) if backlog else rng.randint(0, 3)
            out.append(dev.telemetry(depth=depth, cpu=round(22 + 8 * math.sin(i / 15) + rng.gauss(0, 2), 1),
                                     mem_percent=round(38 + 6 * frac + rng.gauss(0, 0.5), 1),
                                     temp_c=round(51 + 4 * math.sin(i / 25) + rng.gauss(0, 0.3), 1),
                                     p50_us=lat, p99_us=lat * 2.1, capture_ms=t, clock_state=clock,
                                     receipt_settled=dev.seq - 2))
    return out


def build(tmp: Path, port: int = 0) -> tuple[Mosquitto, AggregatorService, dict[str, SimAgent]]:
    rng = random.Random(7)
    broker = Mosquitto().start()
    fleet = make_fleet(tmp / "pki", devices=[n for n in NAMES if n != "saw-10"])
    fleet.add_device("saw-10", not_after=datetime.now(timezone.utc) + timedelta(days=5))
    agg = fleet.add_aggregator("agg-1")
    cfg = parse_config({
        "mqtt": {"url": broker.url, "client_id": "agg-screens"},
        "store": {"url": str(tmp / "records.db")},
        "trust": {"ca_files": [str(fleet.ca_cert)], "crl_files": [str(fleet.crl)], "reload_s": 0.5},
        "identity": {"key": agg.key_uri, "cert_file": str(agg.cert)},
        "web": {"enabled": True, "port": port, "title": "edge fleet · plant 3"},
    })
    svc = AggregatorService(cfg)
    svc.start()
    devs = {n: SimAgent.from_files(fleet.devices[n]) for n in NAMES}
    devs["lathe-09"].agent_version = "0.0.9"
    devs["compressor-11"].model_version = "2"
    devs["compressor-11"].model = b"previous vibration model"
    pub = Publisher(broker.url)
    for name, dev in devs.items():
        pub.send(dev.birth())
        if name == "mixer-07":  # its outbox overflowed 15 minutes ago: 10 records evicted, a gap record sent
            msgs = history(dev, rng, 15, ago=30)
            first = dev.seq + 1
            dev.skip(10)
            msgs.append(dev.gap(first, first + 9))
            msgs += history(dev, rng, 15)
        else:
            msgs = history(dev, rng, 30, unsynced=name == "drill-08", backlog=1800 if name == "lathe-09" else 0,
                           fault_from=0.7 if name == FEATURED else 2.0)
        pub.send_all(msgs)
    mixer = devs["mixer-07"]
    mixer.skip(3)
    pub.send_all([mixer.result("normal"), mixer.telemetry()])
    for _ in range(4):
        pub.send(devs["conveyor-06"].forged())
    pub.send(devs["fan-04"].will())
    fleet.revoke("press-05")
    time.sleep(1.2)  # the aggregator re-reads the CRL every 0.5 s
    for _ in range(3):
        pub.send(devs["press-05"].result("normal"))
    for dev in devs.values():
        if dev.device_id not in ("fan-04", "press-05"):
            pub.send(dev.result("normal"))
    pub.close()
    wait_for(lambda: svc.stats().received >= sum(len(d.sent) for d in devs.values()) + 5, timeout=60,
             what="every simulated record processed")
    return broker, svc, devs


def viewport(driver: object, width: int, height: int) -> None:
    """Set the page's viewport exactly (the window size includes the browser's frame)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",  # type: ignore[attr-defined]
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def shoot(url: str, out: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1000",
              "--force-device-scale-factor=1", "--hide-scrollbars"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        out.mkdir(parents=True, exist_ok=True)
        viewport(driver, 1500, 900)
        driver.get(url + "/")
        wait_for(lambda: driver.execute_script("return document.body.dataset.live") == "1", timeout=15,
                 what="fleet page live")
        time.sleep(1.5)
        viewport(driver, 1500, driver.execute_script("return document.documentElement.scrollHeight") + 10)
        time.sleep(0.3)
        driver.save_screenshot(str(out / "fleet.png"))
        viewport(driver, 1500, 900)
        driver.get(f"{url}/devices/{FEATURED}")
        wait_for(lambda: driver.execute_script("return document.body.dataset.plots") == "6", timeout=15,
                 what="six plots drawn")
        time.sleep(1.0)
        viewport(driver, 1500, driver.execute_script("return document.documentElement.scrollHeight") + 10)
        time.sleep(0.5)
        driver.save_screenshot(str(out / "device.png"))
    finally:
        driver.quit()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    p.add_argument("--keep", action="store_true", help="keep running after the screenshots (Ctrl-C to stop)")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        print(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="screens-"))
    broker, svc, _ = build(tmp, a.port)
    try:
        assert svc.web_url is not None
        shoot(svc.web_url, a.out)
        print(f"wrote {a.out / 'fleet.png'} and {a.out / 'device.png'}")
        if a.keep:
            print(f"serving {svc.web_url} (Ctrl-C to stop)")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        svc.stop()
        broker.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
