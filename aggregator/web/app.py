"""The web app: fleet page, device page, live updates (SSE), ``/metrics``; read-only, loopback by default.

``build_app(ctx, extra_routes)`` composes the Starlette app from a ``WebContext`` (reader, hub, metrics,
settings) and routes other parts of the aggregator mount beside the pages (the transparency log's tile
routes, for instance); ``extra_nav`` adds their links to the page header. Pages are server-rendered with
Jinja2; htmx (sorting, filtering and paging swap the table) and uPlot (plots) are vendored in ``static/``,
so nothing is fetched from the internet. ``static/app.js`` holds the little page code: it opens the
EventSource and swaps the rows the server pushes.

Access: every method but GET and HEAD is refused (405) before routing, so no handler can change anything.
Without a token only loopback Host headers are served (a page elsewhere cannot read the fleet through the
browser by DNS rebinding); with ``web.token_file`` every request needs ``Authorization: Bearer <token>`` or
the cookie ``/auth?token=…`` sets. Responses carry a strict Content-Security-Policy: scripts and styles
only from this origin, no inline code.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from aggregator.config import WebSettings
from aggregator.topics import DEVICE_ID_RE
from aggregator.web import fmt
from aggregator.web.hub import Event, Hub, Renderers
from aggregator.web.metrics import CONTENT_TYPE, AggregatorMetrics
from aggregator.web.query import SORTS, STATES, FleetQuery
from aggregator.web.reader import FleetReader

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
COOKIE = "edge_web_token"
ALLOWED_METHODS = ("GET", "HEAD")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class WebContext:
    """What the pages need from the running aggregator."""

    reader: FleetReader
    settings: WebSettings
    metrics: AggregatorMetrics | None = None
    token: str | None = None  # the bearer token (read from web.token_file at start)
    link_state: Callable[[], dict[str, Any]] = field(default=lambda: {"connected": True, "last_error": ""})
    alive: Callable[[], bool] = field(default=lambda: True)
    hub: Hub | None = None  # created by build_app when absent


# ---- ASGI middleware (pure ASGI: they also guard the SSE streams and the mounted routes) -----------------


class ReadOnly:
    """Refuse every method but GET and HEAD with 405 before any route sees the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ALLOWED_METHODS:
            await PlainTextResponse("read-only: only GET and HEAD are served\n", 405,
                                    headers={"Allow": ", ".join(ALLOWED_METHODS)})(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)


class Guard:
    """Host check (without a token) or bearer-token check (with one), plus security headers."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if self.token is None:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in _LOOPBACK_HOSTS:
                await PlainTextResponse(f"host {host[:80]!r} refused: without web.token_file only loopback names "
                                        "are served\n", 421)(scope, receive, send)
                return
        elif not (path == "/auth" or path.startswith("/static/") or self._authorised(headers)):
            await PlainTextResponse("a bearer token is required (Authorization: Bearer <token>, or open "
                                    "/auth?token=<token> once in a browser)\n", 401,
                                    headers={"WWW-Authenticate": 'Bearer realm="edge-aggregator"'})(
                scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = list(message.get("headers", []))
                names = {k.lower() for k, _ in h}
                for k, v in ((b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                             (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                             (b"cross-origin-resource-policy", b"same-origin")):
                    if k not in names:
                        h.append((k, v))
                message["headers"] = h
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authorised(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), self.token.encode()):
                return True
        return False


# ---- templates -------------------------------------------------------------------------------------------


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt.FILTERS)
    env.globals.update(SORTS=SORTS, STATES=STATES, quote=quote)
    return env


# ---- the app ---------------------------------------------------------------------------------------------


def build_app(ctx: WebContext, extra_routes: Sequence[BaseRoute] = (),
              extra_nav: Sequence[tuple[str, str]] = ()) -> Starlette:
    """The web app over ``ctx``, with ``extra_routes`` mounted beside the pages (checked first)."""
    env = make_env()
    reader, settings = ctx.reader, ctx.settings
    nav = [("Fleet", "/"), *extra_nav, ("Metrics", "/metrics")]

    def page(name: str, **values: Any) -> str:
        return env.get_template(name).render(title=settings.title, nav=nav, **values)

    def render_rows(ids: list[str]) -> dict[str, str]:
        rows = reader.rows(ids)
        tpl = env.get_template("_fleet_row.html")
        now = reader.now_ms()
        return {r["device_id"]: tpl.render(row=r, now_ms=now) for r in rows}

    def render_summary() -> str:
        return env.get_template("_summary.html").render(summary=reader.summary(), q=None)

    def render_device(device_id: str) -> list[Event]:
        dev = reader.device(device_id)
        if dev is None:
            return []
        panel = env.get_template("_device_panel.html").render(dev=dev, now_ms=reader.now_ms())
        series = reader.series(device_id, settings.device_window_s)
        return [("panel", panel), ("series", json.dumps(series, separators=(",", ":")))]

    hub = ctx.hub or Hub(Renderers(render_rows, render_summary, render_device), settings.push_interval_ms / 1000)
    ctx.hub = hub

    def per_page(request: Request) -> FleetQuery:
        return FleetQuery.from_params(request.query_params, settings.page_size)

    async def fleet(request: Request) -> Response:
        q = per_page(request)
        fragment = request.headers.get("hx-request") == "true" and "hx-history-restore-request" not in request.headers

        def render() -> str:
            t0 = time.perf_counter()
            fp = reader.fleet(q)
            summary = reader.summary()
            values = {"fp": fp, "q": q, "summary": summary, "now_ms": fp.now_ms,
                      "link": ctx.link_state(), "render_ms": 0.0}
            if fragment:
                html = env.get_template("_fleet_table.html").render(**values)
                html += env.get_template("_summary.html").render(summary=summary, q=q, oob=True)
            else:
                values["render_ms"] = (time.perf_counter() - t0) * 1000
                html = page("fleet.html", **values)
            return html

        return HTMLResponse(await run_in_threadpool(render),
                            headers={"Vary": "HX-Request", "Cache-Control": "no-store"})

    async def device(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        if not DEVICE_ID_RE.match(device_id):
            return HTMLResponse(page("error.html", message=f"not a device id: {device_id[:80]!r}"), 404)
        dev = await run_in_threadpool(reader.device, device_id)
        if dev is None:
            return HTMLResponse(page("error.html", message=f"no device {device_id!r} in the store"), 404)
        html = await run_in_threadpool(page, "device.html", dev=dev, now_ms=reader.now_ms(),
                                       link=ctx.link_state(), window_s=settings.device_window_s)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def series(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        if not DEVICE_ID_RE.match(device_id):
            return JSONResponse({"error": "not a device id"}, 404)
        data = await run_in_threadpool(reader.series, device_id, settings.device_window_s)
        return JSONResponse(data, headers={"Cache-Control": "no-store"})

    async def api_fleet(request: Request) -> Response:
        q = per_page(request)
        fp = await run_in_threadpool(reader.fleet, q)
        return JSONResponse({"total": fp.total, "page": q.page, "per": q.per, "now_ms": fp.now_ms,
                             "devices": [_jsonable(r) for r in fp.rows]})

    async def api_summary(request: Request) -> Response:
        s = await run_in_threadpool(reader.summary)
        return JSONResponse({**s.__dict__, "broker": ctx.link_state()})

    async def fleet_events(request: Request) -> Response:
        ids = [i for i in request.query_params.get("ids", "").split(",") if DEVICE_ID_RE.match(i)][:500]
        client = hub.subscribe("fleet", ids)

        async def initial() -> list[Event]:
            rows = await run_in_threadpool(render_rows, ids) if ids else {}
            summary = await run_in_threadpool(render_summary)
            return ([("rows", "".join(rows.values()))] if rows else []) + [("summary", summary)]

        return _stream(hub, client, initial)

    async def device_events(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        if not DEVICE_ID_RE.match(device_id):
            return PlainTextResponse("not a device id\n", 404)
        client = hub.subscribe("device", [device_id])

        async def initial() -> list[Event]:
            return await run_in_threadpool(render_device, device_id)

        return _stream(hub, client, initial)

    async def metrics(request: Request) -> Response:
        if ctx.metrics is None:
            return PlainTextResponse("metrics are not enabled\n", 404)
        body = await run_in_threadpool(ctx.metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        link = ctx.link_state()
        ok = ctx.alive() and bool(link.get("connected"))
        return JSONResponse({"ok": ok, "store_thread": ctx.alive(), "broker": link}, 200 if ok else 503)

    async def auth(request: Request) -> Response:
        token = request.query_params.get("token", "")
        if ctx.token is None:
            return RedirectResponse("/", 303)
        if not hmac.compare_digest(token.encode(), ctx.token.encode()):
            return PlainTextResponse("wrong token\n", 401)
        resp = RedirectResponse("/", 303)
        resp.set_cookie(COOKIE, ctx.token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/")
        return resp

    routes: list[BaseRoute] = [
        *extra_routes,
        Route("/", fleet),
        Route("/devices/{device_id}", device),
        Route("/devices/{device_id}/series.json", series),
        Route("/events/fleet", fleet_events),
        Route("/events/devices/{device_id}", device_events),
        Route("/api/fleet", api_fleet),
        Route("/api/summary", api_summary),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/auth", auth),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(ReadOnly), Middleware(Guard, token=ctx.token)])
    app.state.ctx = ctx
    return app


def _stream(hub: Hub, client: Any, initial: Callable[[], Awaitable[list[Event]]]) -> Response:
    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            yield ServerSentEvent(comment="live", retry=2000)
            for name, data in await initial():
                yield ServerSentEvent(data=data, event=name)
            while True:
                ev = await client.queue.get()
                if ev is None:
                    return
                yield ServerSentEvent(data=ev[1], event=ev[0])
        finally:
            hub.unsubscribe(client)

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}
