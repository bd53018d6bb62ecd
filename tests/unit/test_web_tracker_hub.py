"""The fleet tracker's writes (newest observation wins in any order; receipts; failures never raise) and the
live-update hub (a changed row is rendered once however many pages show it; pages get only their rows; a
stalled page is closed, not buffered)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from aggregator import open_store
from aggregator.web import project
from aggregator.web.hub import Hub, Renderers
from aggregator.web.tracker import DeviceUpdate, FleetTracker
from envelope import Receipt


def _status(version: str) -> project.StatusFields:
    return project.StatusFields(agent_version=version, models=(project.ModelInfo("s", "m", "ab" * 32, version),))


def _tracker(tmp: Path) -> FleetTracker:
    open_store(str(tmp / "r.db")).close()
    return FleetTracker(str(tmp / "r.db")).open()


def _row(tmp: Path, *cols: str) -> tuple:
    conn = sqlite3.connect(tmp / "r.db")
    try:
        return conn.execute(f"SELECT {', '.join(cols)} FROM web_fleet WHERE device_id = 'dev-a'").fetchone()
    finally:
        conn.close()


updates = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 2), st.integers(0, 500)),
                   min_size=1, max_size=6)


@given(updates, st.randoms(use_true_random=False))
def test_newest_observation_wins_whatever_the_order(obs: list[tuple[int, int, int, int]], rnd) -> None:
    from aggregator.schema import ddl
    from aggregator.web.db import DDL, Db
    from aggregator.web.tracker import UPSERT_SQL, upsert_params

    def apply(order: list[tuple[int, int, int, int]]) -> tuple:
        db = Db(sqlite3.connect(":memory:", isolation_level=None), "sqlite")
        for stmt in (*ddl("BLOB"), *DDL):
            db.run(stmt)
        for birth_ms, tel_ms, clock, depth in order:
            u = DeviceUpdate("dev-a", status=_status(f"v{birth_ms}"), status_ms=birth_ms,
                             telemetry=project.TelemetryFields(outbox_depth=depth), telemetry_ms=tel_ms,
                             clock_state=clock, clock_ms=tel_ms)
            db.run(UPSERT_SQL, upsert_params(u, 1000))
        row = db.one("SELECT agent_version, birth_ms, outbox_depth, telemetry_ms, clock_state, clock_ms "
                     "FROM web_fleet WHERE device_id = 'dev-a'")
        assert row is not None
        return row

    shuffled = list(obs)
    rnd.shuffle(shuffled)
    a, b = apply(obs), apply(shuffled)
    newest_birth = max(o[0] for o in obs)
    newest_tel = max(o[1] for o in obs)
    assert a[1] == b[1] == newest_birth and a[3] == b[3] == newest_tel
    assert a[0] in {f"v{o[0]}" for o in obs if o[0] == newest_birth}
    assert {a[2], b[2]} <= {o[3] for o in obs if o[1] == newest_tel}


def test_revoked_flag_and_receipts(tmp_path: Path) -> None:
    tr = _tracker(tmp_path)
    tr.apply([DeviceUpdate("dev-a", revoked=True)], 1)
    assert _row(tmp_path, "revoked") == (1,)
    tr.apply([DeviceUpdate("dev-a", verified=3)], 2)
    assert _row(tmp_path, "revoked") == (1,), "an update that says nothing about the key keeps the flag"
    tr.apply([DeviceUpdate("dev-a", kid="00", key_ms=3, revoked=False)], 3)
    assert _row(tmp_path, "revoked") == (0,)
    seen: list[set[str]] = []
    tr.add_listener(seen.append)
    tr.receipts_published([Receipt("agg", "dev-a", 2, 41, 5000, ((40, "bad_signature"),))])
    assert _row(tmp_path, "receipt_settled", "receipt_epoch", "receipt_ms") == (41, 2, 5000)
    assert '"bad_signature"' in _row(tmp_path, "receipt_rejected")[0] and seen == [{"dev-a"}]


def test_a_failing_write_is_counted_never_raised(tmp_path: Path) -> None:
    tr = _tracker(tmp_path)
    conn = sqlite3.connect(tmp_path / "r.db")
    conn.execute("DROP TABLE web_fleet")
    conn.commit()
    conn.close()
    tr.apply([DeviceUpdate("dev-a", verified=1)], 1)
    assert tr.stats.errors == 1 and "web_fleet" in tr.stats.last_error
    tr.close()


# ---- hub ------------------------------------------------------------------------------------------------


class Counting:
    def __init__(self) -> None:
        self.rendered: list[list[str]] = []

    def rows(self, ids: list[str]) -> dict[str, str]:
        self.rendered.append(ids)
        return {i: f'<tr id="row-{i}"></tr>' for i in ids}

    def device(self, device_id: str) -> list[tuple[str, str]]:
        return [("panel", device_id)]


def test_hub_renders_once_and_sends_each_page_its_rows() -> None:
    async def scenario() -> None:
        c = Counting()
        hub = Hub(Renderers(c.rows, lambda: "<section/>", c.device), interval_s=0.01)
        await hub.start()
        pages = [hub.subscribe("fleet", ["a", "b"]) for _ in range(20)]
        other = hub.subscribe("fleet", ["z"])
        dev = hub.subscribe("device", ["a"])
        hub.notify({"a", "q"})
        first = await asyncio.wait_for(pages[0].queue.get(), 2)
        assert first == ("rows", '<tr id="row-a"></tr>')
        assert c.rendered == [["a"]], "one render for twenty pages; q is on no page"
        assert await asyncio.wait_for(other.queue.get(), 2) == ("summary", "<section/>"), "z did not change"
        assert await asyncio.wait_for(dev.queue.get(), 2) == ("panel", "a")
        assert hub.clients("fleet") == 21 and hub.clients("device") == 1
        assert all(p.queue.get_nowait() == ("rows", '<tr id="row-a"></tr>') for p in pages[1:])
        await hub.stop()
        assert await pages[1].queue.get() is None, "stopping ends every stream"

    asyncio.run(scenario())


def test_a_stalled_page_is_closed_not_buffered() -> None:
    async def scenario() -> None:
        c = Counting()
        hub = Hub(Renderers(c.rows, lambda: "s", c.device), interval_s=0.0, queue_size=4)
        await hub.start()
        slow = hub.subscribe("fleet", ["a"])
        for _ in range(6):
            hub.notify({"a"})
            await asyncio.sleep(0.02)
        assert slow.closed and hub.stats.dropped_clients == 1
        assert await slow.queue.get() is None, "the stream ends; the browser reconnects"
        assert hub.clients() == 0
        await hub.stop()

    asyncio.run(scenario())
