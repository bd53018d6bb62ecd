"""The web app in a real aggregator (``[web] enabled``) fed through a real Mosquitto by simulated devices that
sign like the agent: fleet page content, SQL filtering/sorting/paging, live updates by SSE, the device page,
/metrics parsed by prometheus-client's parser, read-only and access rules (Host check, TLS + bearer token),
extra routes, and failures at start (no extra, busy port, loose token file)."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from aggregator import AggregatorService, ConfigError, parse_config
from tests.support.mosquitto import Mosquitto
from tests.support.pki import Fleet, make_fleet
from tests.support.sim_fleet import Publisher, SimAgent
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@dataclass
class Run:
    svc: AggregatorService
    fleet: Fleet
    devs: dict[str, SimAgent]
    pub: Publisher
    url: str

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kw)

    def processed(self, n: int) -> None:
        wait_for(lambda: self.svc.stats().received >= n, timeout=20, what=f"{n} records processed")


def service(tmp: Path, broker: Mosquitto, fleet: Fleet, web: dict[str, Any] | None = None,
            store: str | None = None, schema: str | None = None, reload_s: float = 60.0) -> AggregatorService:
    agg = fleet.aggregators.get("agg-1") or fleet.add_aggregator("agg-1")
    doc: dict[str, Any] = {
        "mqtt": {"url": broker.url, "client_id": f"agg-{tmp.name[-12:]}"},
        "store": {"url": store or str(tmp / "records.db"), **({"schema": schema} if schema else {})},
        "trust": {"ca_files": [str(fleet.ca_cert)], "crl_files": [str(fleet.crl)], "reload_s": reload_s},
        "identity": {"key": agg.key_uri, "cert_file": str(agg.cert)},
        "web": {"enabled": True, "port": 0, "push_interval_ms": 100, **(web or {})},
    }
    return AggregatorService(parse_config(doc, str(tmp / "aggregator.toml")))


@contextmanager
def running(tmp: Path, broker: Mosquitto, names: list[str], web: dict[str, Any] | None = None,
            **kw: Any) -> Iterator[Run]:
    fleet = make_fleet(tmp / "pki", devices=names)
    svc = service(tmp, broker, fleet, web, **kw)
    svc.start()
    pub = Publisher(broker.url, client_id=f"sim-{tmp.name[-12:]}")
    try:
        assert svc.web_url is not None
        yield Run(svc, fleet, {n: SimAgent.from_files(fleet.devices[n]) for n in names}, pub, svc.web_url)
    finally:
        pub.close()
        svc.stop()


def rows(html: str) -> dict[str, str]:
    """device id -> the <tr> of the fleet table."""
    return {m.group(1): m.group(0) for m in re.finditer(r'<tr id="row-([a-z0-9-]+)".*?</tr>', html, re.S)}


def sse_events(resp: httpx.Response) -> Iterator[tuple[str, str]]:
    event, data = "message", []
    for line in resp.iter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


# ---- pages -------------------------------------------------------------------------------------------------


def test_fleet_page_shows_state_rejects_model_agent_outbox_cert(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with running(tmp_path, mosquitto, ["pump-01", "fan-02", "press-03"]) as run:
        a, b, c = (run.devs[n] for n in ("pump-01", "fan-02", "press-03"))
        a.agent_version = "9.8.7"
        msgs = [a.birth(), a.result("normal"), a.telemetry(depth=1234), b.birth(), b.result(), c.birth(), c.result()]
        run.pub.send_all(msgs)
        run.pub.send(b.will())
        run.pub.send(c.forged())
        run.processed(len(msgs) + 2)
        html = run.get("/").text
        r = rows(html)
        assert set(r) == {"pump-01", "fan-02", "press-03"}
        assert 'data-state="online"' in r["pump-01"] and 'data-state="offline"' in r["fan-02"]
        assert 'data-reason="bad_signature"' in r["press-03"] and "bad_signature 1" in r["press-03"]
        assert "9.8.7" in r["pump-01"] and "1,234" in r["pump-01"], "agent version and outbox depth"
        assert "outbox backlog" in r["pump-01"], "depth above attention_outbox_depth"
        digest = hashlib.sha256(a.model).hexdigest()
        assert digest[:12] in r["pump-01"] and "v3" in r["pump-01"], "model digest and version"
        assert "expires in 36" in r["pump-01"], "certificate expiry"
        assert "ntp" in r["pump-01"], "clock state"
        assert 'data-seq="3"' in r["pump-01"]
        assert "<script" not in html.split("</head>")[1], "no inline scripts (CSP)"


def test_a_revoked_device_shows_revoked(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with running(tmp_path, mosquitto, ["press-05", "pump-01"], reload_s=0.2) as run:
        d, ok = run.devs["press-05"], run.devs["pump-01"]
        run.pub.send_all([d.birth(), d.result(), ok.birth(), ok.result()])
        run.processed(4)
        assert "revoked" not in rows(run.get("/").text)["press-05"]
        run.fleet.revoke("press-05")
        time.sleep(0.6)  # the aggregator re-reads the CRL every 0.2 s
        run.pub.send(d.result())
        run.processed(5)
        r = rows(run.get("/").text)
        assert '<span class="tag bad">revoked</span>' in r["press-05"] and 'data-reason="revoked"' in r["press-05"]
        assert "certificate revoked" in r["press-05"] and "revoked" not in r["pump-01"]
        assert set(rows(run.get("/?state=attention").text)) == {"press-05"}


def test_filter_sort_and_page_are_done_in_sql(tmp_path: Path, mosquitto: Mosquitto) -> None:
    names = [f"dev-{i:02d}" for i in range(25)]
    with running(tmp_path, mosquitto, names, web={"page_size": 10}) as run:
        msgs = []
        for i, n in enumerate(names):
            d = run.devs[n]
            msgs += [d.birth()] + [d.result() for _ in range(i % 5)]
        run.pub.send_all(msgs)
        offline = names[:4]
        for n in offline:
            run.pub.send(run.devs[n].will())
        run.processed(len(msgs) + len(offline))
        page1 = rows(run.get("/").text)
        assert list(page1) == names[:10]
        page3 = run.get("/?page=3").text
        assert list(rows(page3)) == names[20:] and "21–25 of 25" in page3 and "page 3 of 3" in page3
        assert list(rows(run.get("/?sort=device&dir=desc").text)) == names[::-1][:10]
        assert set(rows(run.get("/?state=offline").text)) == set(offline)
        assert set(rows(run.get("/?state=attention").text)) == set(offline), "offline needs attention"
        assert set(rows(run.get("/?state=online&per=50").text)) == set(names[4:])
        assert list(rows(run.get("/?q=dev-2").text)) == [f"dev-2{i}" for i in range(5)]
        by_seq = list(rows(run.get("/?sort=seq").text))
        assert run.devs[by_seq[0]].seq == 5 and run.devs[by_seq[-1]].seq >= 4, "highest seq first"
        frag = run.get("/?page=2", headers={"HX-Request": "true"}).text
        assert "<html" not in frag and 'id="fleet-view"' in frag and 'hx-swap-oob="true"' in frag
        assert list(rows(frag)) == names[10:20]
        api = run.get("/api/fleet?state=offline").json()
        assert api["total"] == 4 and {d["device_id"] for d in api["devices"]} == set(offline)
        assert run.get("/api/summary").json()["offline"] == 4


def test_device_page_and_plot_data(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with running(tmp_path, mosquitto, ["pump-01"]) as run:
        d = run.devs["pump-01"]
        now = int(time.time() * 1000)
        msgs = [d.birth()] + [d.result("imbalance" if i % 3 else "normal", latency_us=400 + i,
                                       capture_ms=now - i * 1000) for i in range(30)]
        msgs += [d.telemetry(cpu=10.0 + i, capture_ms=now - i * 20_000) for i in range(3)]
        first = d.seq + 1
        d.skip(2)
        msgs += [d.gap(first, first), d.result()]
        run.pub.send_all(msgs)
        run.processed(len(msgs))
        html = run.get("/devices/pump-01").text
        assert 'data-plot="rate"' in html and 'data-plot="labels"' in html and "uPlot.iife.min.js" in html
        assert "outbox_full" in html, "the policy gap and its reason"
        lost = rf'<td>{first + 1}</td><td class="num">1</td><td><span class="tag warn">missing'
        assert re.search(lost, html), "the seq lost in transit"
        s = run.get("/devices/pump-01/series.json").json()
        assert sum(s["labels"]["counts"]["imbalance"]) == 20 and sum(s["labels"]["counts"]["normal"]) == 11
        assert any(v for v in s["results"]["rate"]) and max(v for v in s["results"]["lat_max"] if v) >= 429
        assert sorted(s["telemetry"]["cpu"]) == [10.0, 11.0, 12.0]
        assert run.get("/devices/nope-99").status_code == 404
        assert run.get("/devices/Bad_Id").status_code == 404


def test_live_update_reaches_an_open_page_within_2_s(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with running(tmp_path, mosquitto, ["pump-01", "pump-02"]) as run:
        a, b = run.devs["pump-01"], run.devs["pump-02"]
        run.pub.send_all([a.birth(), b.birth()])
        run.processed(2)
        with httpx.Client(base_url=run.url, timeout=10) as client, \
                client.stream("GET", "/events/fleet?ids=pump-01") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            events = sse_events(resp)
            assert next(e for e, _ in events if e == "summary")
            t0 = time.monotonic()
            run.pub.send(b.result())  # not on this page: no rows event for it
            run.pub.send(a.result())
            rows = []  # a push of the birth (seq 1) may still be on its way: read on to the row of seq 2
            for e, x in events:
                if e == "rows":
                    rows.append(x)
                    if 'data-seq="2"' in x:
                        break
            elapsed = time.monotonic() - t0
            assert 'id="row-pump-01"' in rows[-1] and 'data-seq="2"' in rows[-1]
            assert not any("pump-02" in x for x in rows), "a row pushed to a page that does not show it"
            assert elapsed < 2.0, f"row pushed {elapsed:.2f} s after the record"


def test_device_stream_pushes_panel_and_series(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with running(tmp_path, mosquitto, ["pump-01"]) as run:
        d = run.devs["pump-01"]
        run.pub.send_all([d.birth(), d.result()])
        run.processed(2)
        with httpx.Client(base_url=run.url, timeout=10) as client, \
                client.stream("GET", "/events/devices/pump-01") as resp:
            events = sse_events(resp)
            assert [next(events)[0], next(events)[0]] == ["panel", "series"], "the current state on connect"
            run.pub.send(d.will())
            t0 = time.monotonic()
            panel = next(x for e, x in events if e == "panel" and "state-offline" in x)  # (a receipt may come first)
            assert 'id="device-state">offline' in panel and time.monotonic() - t0 < 2.0


# ---- metrics ---------------------------------------------------------------------------------------------

_UNITS = ("_seconds", "_bytes", "_total", "_ratio", "_info")


def test_metrics_parse_and_follow_the_naming_conventions(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with running(tmp_path, mosquitto, ["pump-01", "pump-02"]) as run:
        a, b = run.devs["pump-01"], run.devs["pump-02"]
        msgs = [a.birth(), a.result(), a.result(), b.birth()]
        run.pub.send_all(msgs)
        run.pub.send(a.forged())
        run.pub.send(b.will())
        run.processed(len(msgs) + 2)
        resp = run.get("/metrics")
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(resp.text)}
        ours = {n: f for n, f in families.items() if n.startswith("edge_aggregator_")}

        def value(name: str, **labels: str) -> float:
            f = families[name]
            return next(s.value for s in f.samples if s.labels == labels and not s.name.endswith("_created"))

        assert value("edge_aggregator_records", result="stored") == 4
        assert value("edge_aggregator_records", result="rejected") == 1
        assert value("edge_aggregator_records_rejected", reason="bad_signature") == 1
        assert value("edge_aggregator_devices_online") == 1 and value("edge_aggregator_devices_known") == 2
        assert value("edge_aggregator_queue_depth") == 0 and value("edge_aggregator_broker_connected") == 1
        commits = next(s.value for s in families["edge_aggregator_store_commit_seconds"].samples
                       if s.name == "edge_aggregator_store_commit_seconds_count")
        assert commits >= 1
        assert families["edge_aggregator_store_commit_seconds"].type == "histogram"
        assert "process_resident_memory_bytes" in families
        for name, f in ours.items():
            assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
            assert f.documentation, f"{name} has no help text"
            if f.type == "counter":
                assert all(s.name in (name + "_total", name + "_created") for s in f.samples), name
            else:
                assert not name.endswith("_total"), f"{name}: only counters end in _total"
            assert not name.endswith("_count") and not name.endswith("_sum"), name
            if "seconds" in name or "bytes" in name:
                assert name.endswith(_UNITS), f"{name}: unit suffix last"
            assert not re.search(r"_(ms|milliseconds|kb|mb|percent)(_|$)", name), f"{name}: base units only"


# ---- access ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_read_only_refuses_every_other_method(tmp_path: Path, mosquitto: Mosquitto, method: str) -> None:
    with running(tmp_path, mosquitto, ["pump-01"]) as run:
        for path in ("/", "/metrics", "/devices/pump-01", "/events/fleet", "/static/app.js", "/auth", "/nowhere"):
            r = httpx.request(method, run.url + path, timeout=5, content=b"x=1")
            assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", (method, path)
        head = httpx.head(run.url + "/", timeout=5)
        assert head.status_code == 200 and head.content == b""


def test_host_header_must_be_loopback_without_a_token(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with running(tmp_path, mosquitto, ["pump-01"]) as run:
        port = run.url.rsplit(":", 1)[1]
        assert run.get("/", headers={"Host": f"evil.example:{port}"}).status_code == 421
        assert run.get("/", headers={"Host": f"localhost:{port}"}).status_code == 200
        r = run.get("/")
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"


def _tls_pair(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cp, kp = tmp / "web.crt", tmp / "web.key"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cp, kp


def test_tls_and_bearer_token(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cert, key = _tls_pair(tmp_path)
    token = tmp_path / "web.token"
    token.write_text("s3cret-token-0123456789\n")
    os.chmod(token, 0o600)
    web = {"tls_cert_file": str(cert), "tls_key_file": str(key), "token_file": str(token)}
    with running(tmp_path, mosquitto, ["pump-01"], web=web) as run:
        assert run.url.startswith("https://")
        with httpx.Client(base_url=run.url, verify=ssl.create_default_context(cafile=str(cert)), timeout=10) as c:
            r = c.get("/")
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert c.get("/metrics").status_code == 401 and c.get("/events/fleet").status_code == 401
            assert c.get("/", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
            assert c.get("/", headers={"Authorization": "Bearer s3cret-token-0123456789"}).status_code == 200
            assert c.get("/metrics", headers={"Authorization": "Bearer s3cret-token-0123456789"}).status_code == 200
            assert c.get("/static/app.js").status_code == 200, "static files are public"
            assert c.get("/auth?token=nope").status_code == 401
            r = c.get("/auth?token=s3cret-token-0123456789")
            cookie = r.headers["set-cookie"]
            assert r.status_code == 303 and "HttpOnly" in cookie and "Secure" in cookie
            assert c.get("/").status_code == 200, "the cookie /auth set"
        with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError)):
            httpx.get(run.url.replace("https", "http") + "/", timeout=5)  # plain HTTP is not served


def test_loose_token_file_or_busy_port_refuse_to_start(tmp_path: Path, mosquitto: Mosquitto) -> None:
    from aggregator.web.server import WebError

    fleet = make_fleet(tmp_path / "pki", devices=["pump-01"])
    token = tmp_path / "web.token"
    token.write_text("s3cret-token-0123456789\n")
    os.chmod(token, 0o644)
    svc = service(tmp_path, mosquitto, fleet, {"token_file": str(token)})
    with pytest.raises(WebError, match=r"web\.token_file .*group or others"):
        svc.start()
    assert not svc.alive
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        svc = service(tmp_path, mosquitto, fleet, {"port": s.getsockname()[1]})
        with pytest.raises(WebError, match="could not listen"):
            svc.start()
        assert not svc.alive


def test_without_the_web_extra_start_names_the_key(tmp_path: Path, mosquitto: Mosquitto,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aggregator.web.server", None)  # as if starlette/uvicorn were missing
    fleet = make_fleet(tmp_path / "pki", devices=["pump-01"])
    svc = service(tmp_path, mosquitto, fleet)
    with pytest.raises(ConfigError, match=r"web\.enabled: .*depin-edge-agent\[web\]"):
        svc.start()
    assert not svc.alive


def test_extra_routes_are_mounted_and_guarded(tmp_path: Path, mosquitto: Mosquitto) -> None:
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def checkpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("test.fleet/log\n0\n")

    fleet = make_fleet(tmp_path / "pki", devices=["pump-01"])
    svc = service(tmp_path, mosquitto, fleet)
    svc.add_web_routes([Mount("/log", routes=[Route("/checkpoint", checkpoint)])], nav=[("Log", "/log/checkpoint")])
    svc.start()
    try:
        assert svc.web_url is not None
        assert httpx.get(svc.web_url + "/log/checkpoint").text == "test.fleet/log\n0\n"
        assert httpx.post(svc.web_url + "/log/checkpoint").status_code == 405
        assert '<a href="/log/checkpoint">Log</a>' in httpx.get(svc.web_url + "/").text
    finally:
        svc.stop()


# ---- PostgreSQL ------------------------------------------------------------------------------------------

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _pg_up(), reason="PostgreSQL is not listening on 127.0.0.1:5432")
def test_fleet_and_device_pages_on_postgresql(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    pytest.importorskip("psycopg")
    schema = f"web_{unique_id}"
    with running(tmp_path, mosquitto, ["pump-01", "fan-02"], store=PG_URL, schema=schema) as run:
        a, b = run.devs["pump-01"], run.devs["fan-02"]
        msgs = [a.birth(), a.result(), a.telemetry(depth=5), b.birth(), b.result()]
        run.pub.send_all(msgs)
        run.pub.send(b.will())
        run.pub.send(a.forged())
        run.processed(len(msgs) + 2)
        r = rows(run.get("/?sort=rate").text)
        assert set(r) == {"pump-01", "fan-02"} and "bad_signature 1" in r["pump-01"]
        assert set(rows(run.get("/?state=attention&sort=rejects").text)) == {"pump-01", "fan-02"}
        assert run.get("/devices/pump-01").status_code == 200
        assert run.get("/devices/pump-01/series.json").json()["telemetry"]["outbox"] == [5]
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
