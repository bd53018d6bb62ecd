"""Load and validate the agent's TOML config: every mistake is reported with its key path and the file.

Two steps, both reporting in the same form: ``parse_config`` checks shape, types and ranges (pure, no I/O:
it takes the decoded TOML), and ``check_environment`` checks what the config points at on disk (model files,
key file permissions, outbox directory, TLS files). ``load_config`` does both. ``edge-agent check-config``
runs them without starting anything.
"""

from __future__ import annotations

import math
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from agent.errors import ConfigError
from agent.settings import (
    AgentConfig,
    DelegateConfig,
    DoctorConfig,
    MetricsConfig,
    MqttConfig,
    OutboxConfig,
    PipelineConfig,
    ReceiptsConfig,
    ReplaySourceConfig,
    SerialSourceConfig,
    SimulatedSourceConfig,
    SourceConfig,
    StatusConfig,
    TelemetryConfig,
    UpdatesConfig,
    WatchdogConfig,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (Jetson JetPack 6)
    import tomli as tomllib

DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,63}$")
STREAM_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
FAULTS = ("normal", "imbalance", "misalignment", "bearing_fault", "cycle")
T = TypeVar("T")


class _Problems:
    """Collects (key path, message) pairs so one run reports every mistake, not just the first."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, msg: str) -> None:
        self.items.append((key, msg))


class _Table:
    """Typed access to one TOML table that remembers which keys were read, to reject unknown ones."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: _Problems) -> None:
        self.data = data
        self.path = path
        self.p = problems
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, typ: type[T] | tuple[type, ...], default: Any = None, *, required: bool = False,
            check: Callable[[Any], str | None] | None = None) -> Any:
        self.seen.add(name)
        if name not in self.data:
            if required:
                self.p.add(self.key(name), "is required but missing")
            return default
        value = self.data[name]
        ok_types = typ if isinstance(typ, tuple) else (typ,)
        if float in ok_types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, ok_types) or (isinstance(value, bool) and bool not in ok_types):
            names = " or ".join(t.__name__ for t in ok_types)
            self.p.add(self.key(name), f"expected {names}, got {type(value).__name__} {value!r:.60}")
            return default
        if isinstance(value, float) and not math.isfinite(value):
            self.p.add(self.key(name), f"must be a finite number, got {value}")
            return default
        if check is not None:
            err = check(value)
            if err:
                self.p.add(self.key(name), err)
                return default
        return value

    def table(self, name: str, *, required: bool = False) -> _Table:
        self.seen.add(name)
        value = self.data.get(name)
        if value is None:
            if required:
                self.p.add(self.key(name), "table is required but missing")
            return _Table({}, self.key(name), self.p)
        if not isinstance(value, dict):
            self.p.add(self.key(name), f"expected a table, got {type(value).__name__}")
            return _Table({}, self.key(name), self.p)
        return _Table(value, self.key(name), self.p)

    def finish(self) -> None:
        for k in self.data:
            if k not in self.seen:
                self.p.add(self.key(k), "unknown key (check the spelling; see examples/agent.toml)")


def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v}"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else f"must be >= 0, got {v}"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(map(repr, choices))}, got {v!r}"
    return check


def _matches(rx: re.Pattern[str], what: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if rx.match(v) else f"{what}, got {v!r}"
    return check


def _key_uri(v: str) -> str | None:
    from provisioning import InvalidInput, parse_key_uri  # noqa: PLC0415 - keep import cost off check paths

    try:
        parse_key_uri(v)
    except InvalidInput as e:
        return str(e)
    return None


def _resolve(base_dir: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _parse_source(t: _Table, base_dir: str) -> SourceConfig | None:
    kind = t.get("type", str, required=True, check=_one_of("simulated", "replay", "serial"))
    cfg: SourceConfig | None = None
    if kind == "simulated":
        d = SimulatedSourceConfig()
        seed = t.get("seed", int, None)
        cfg = SimulatedSourceConfig(
            rate_hz=t.get("rate_hz", float, d.rate_hz, check=_positive),
            fault=t.get("fault", str, d.fault, check=_one_of(*FAULTS)),
            cycle_s=t.get("cycle_s", float, d.cycle_s, check=_positive),
            realtime=t.get("realtime", bool, d.realtime),
            block_samples=t.get("block_samples", int, d.block_samples, check=_positive),
            seed=seed,
        )
    elif kind == "replay":
        path = t.get("path", str, "", required=True)
        rate = t.get("rate_hz", float, None, check=_positive)
        cfg = ReplaySourceConfig(
            path=_resolve(base_dir, path) if path else "",
            rate_hz=rate,
            loop=t.get("loop", bool, False),
            realtime=t.get("realtime", bool, True),
        )
    elif kind == "serial":
        d2 = SerialSourceConfig(port="")
        cfg = SerialSourceConfig(
            port=t.get("port", str, "", required=True),
            baudrate=t.get("baudrate", int, d2.baudrate, check=_positive),
            sensor_id=t.get("sensor_id", int, d2.sensor_id, check=_non_negative),
            reopen_backoff_max_s=t.get("reopen_backoff_max_s", float, d2.reopen_backoff_max_s, check=_positive),
        )
    else:
        # Unknown or missing type: consume the keys so only the type error is reported.
        t.seen.update(t.data)
    t.finish()
    return cfg


def _parse_pipeline(t: _Table, base_dir: str) -> PipelineConfig | None:
    stream = t.get("stream", str, "", required=True,
                   check=_matches(STREAM_RE, "must be 1-64 of [a-z0-9_-] starting with a letter or digit"))
    model = t.get("model", str, "", required=True)
    model_path = _resolve(base_dir, model) if model else ""
    metadata = t.get("metadata", str, None)
    meta_path = _resolve(base_dir, metadata) if metadata else (
        str(Path(model_path).with_suffix(".json")) if model_path else "")
    window = t.get("window", int, 0, required=True, check=_positive)
    hop = t.get("hop", int, window or 1, check=_positive)
    labels = t.get("labels", list, [])
    if labels and not all(isinstance(x, str) and x for x in labels):
        t.p.add(t.key("labels"), "expected a list of non-empty strings")
        labels = []
    threshold = t.get("score_threshold", float, 0.0,
                      check=lambda v: None if 0.0 <= v <= 1.0 else f"must be within 0..1, got {v}")
    num_threads = t.get("num_threads", int, 1, check=lambda v: None if 1 <= v <= 16 else f"must be 1..16, got {v}")
    queue_windows = t.get("queue_windows", int, 256, check=_positive)
    source = _parse_source(t.table("source", required=True), base_dir)
    delegate = _parse_delegate(t.table("delegate"), base_dir) if "delegate" in t.data else None
    t.seen.add("delegate")
    t.finish()
    if not (stream and model and window and hop and source):
        return None
    return PipelineConfig(stream=stream, source=source, model=model_path, metadata=meta_path, window=window,
                          hop=hop, labels=tuple(labels), score_threshold=threshold, num_threads=num_threads,
                          queue_windows=queue_windows, delegate=delegate)


def _parse_delegate(t: _Table, base_dir: str) -> DelegateConfig | None:
    """``[pipeline.delegate]``: library (a path, or a soname the loader finds), options, on_failure, name."""
    lib = t.get("library", str, "", required=True, check=lambda v: None if v.strip() else "must not be empty")
    raw = t.get("options", dict, {})
    options = []
    for k, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            t.p.add(t.key(f"options.{k}"), f"expected a string or number, got {type(v).__name__}")
            continue
        options.append((str(k), str(v)))
    on_failure = t.get("on_failure", str, "fail", check=_one_of("fail", "cpu_fallback"))
    name = t.get("name", str, "", check=lambda v: None if re.match(r"^[A-Za-z0-9_.-]{0,64}$", v)
                 else f"must be 1-64 of [A-Za-z0-9_.-], got {v!r}")
    t.finish()
    if not lib:
        return None
    library = _resolve(base_dir, lib) if "/" in lib else lib  # a bare soname: the dynamic loader's search path
    return DelegateConfig(library=library, options=tuple(options), on_failure=on_failure, name=name)


def _check_vkey(value: str) -> str | None:
    """A C2SP verifier key string of the log (edge-provision log init prints it)."""
    from envelope import MalformedNote, NoteVerifier  # noqa: PLC0415

    try:
        NoteVerifier.from_vkey(value)
    except MalformedNote as e:
        return f"expected the log's verifier key <origin>+<key id>+<key> (edge-provision log init): {e}"
    return None


def _loopback(v: str) -> str | None:
    import ipaddress  # noqa: PLC0415

    try:
        ok = ipaddress.ip_address(v).is_loopback
    except ValueError:
        ok = False
    return None if ok else f"must be a loopback address (127.0.0.1 or ::1): metrics are never exposed, got {v!r}"


def _parse_metrics(t: _Table, base_dir: str) -> MetricsConfig:
    d = MetricsConfig()
    tpath = t.get("textfile_path", str, "", check=lambda v: None if v.endswith(".prom") and len(v) > 5
                  else f"must name a *.prom file (node-exporter's textfile collector reads only those), got {v!r}")
    cfg = MetricsConfig(
        mode=t.get("mode", str, d.mode, check=_one_of("off", "http", "textfile")),
        bind=t.get("bind", str, d.bind, check=_loopback),
        port=t.get("port", int, d.port, check=lambda v: None if 1 <= v <= 65535 else f"must be 1..65535, got {v}"),
        textfile_path=_resolve(base_dir, tpath) if tpath else d.textfile_path,
        interval_s=t.get("interval_s", float, d.interval_s,
                         check=lambda v: None if 1 <= v <= 3600 else f"must be 1..3600 seconds, got {v}"),
    )
    t.finish()
    return cfg


def _parse_doctor(t: _Table) -> DoctorConfig:
    d = DoctorConfig()
    cfg = DoctorConfig(
        unit=t.get("unit", str, d.unit, check=lambda v: None if re.match(r"^[A-Za-z0-9@._:-]+\.service$", v)
                   else f"must be a systemd service name like edge-agent.service, got {v!r}"),
        wear_budget_bytes_per_day=t.get("wear_budget_bytes_per_day", int, d.wear_budget_bytes_per_day,
                                        check=_positive),
        probe_timeout_s=t.get("probe_timeout_s", float, d.probe_timeout_s,
                              check=lambda v: None if 0.1 <= v <= 120 else f"must be 0.1..120 seconds, got {v}"),
    )
    t.finish()
    return cfg


def _parse_updates(top: _Table, base_dir: str, outbox_path: str) -> UpdatesConfig | None:
    """``[updates]`` (optional): signed model updates. Absent: the shipped models are never replaced."""
    if "updates" not in top.data:
        top.seen.add("updates")
        return None
    ut = top.table("updates")
    d = UpdatesConfig(repository_url="", root="")
    url = ut.get("repository_url", str, "", required=True, check=lambda v: None if re.match(
        r"^https?://[^/\s]+(/\S*)?$", v) else f"expected http(s)://host[:port][/path], got {v!r}")
    root = ut.get("root", str, "", required=True)
    udir = ut.get("dir", str, "", check=lambda v: None if v else "must not be empty (omit it for the default)")

    def _range(lo: float, hi: float, unit: str = "") -> Callable[[Any], str | None]:
        return lambda v: None if lo <= v <= hi else f"must be within {lo:g}..{hi:g}{unit}, got {v}"

    cfg = UpdatesConfig(
        repository_url=url,
        root=_resolve(base_dir, root) if root else "",
        dir=_resolve(base_dir, udir) if udir else (
            os.path.join(os.path.dirname(outbox_path), "updates") if outbox_path else ""),
        poll_interval_s=ut.get("poll_interval_s", float, d.poll_interval_s, check=_range(0.05, 7 * 86400, " s")),
        fetch_timeout_s=ut.get("fetch_timeout_s", float, d.fetch_timeout_s, check=_range(1, 600, " s")),
        max_model_bytes=ut.get("max_model_bytes", int, d.max_model_bytes, check=_range(1024, 2**34, " bytes")),
        max_metadata_bytes=ut.get("max_metadata_bytes", int, d.max_metadata_bytes,
                                  check=_range(16384, 2**28, " bytes")),
        health_window_s=ut.get("health_window_s", float, d.health_window_s, check=_range(0, 3600, " s")),
        health_min_windows=ut.get("health_min_windows", int, d.health_min_windows, check=_range(1, 100000)),
        latency_factor=ut.get("latency_factor", float, d.latency_factor, check=_range(1, 1000)),
        latency_slack_us=ut.get("latency_slack_us", float, d.latency_slack_us, check=_range(0, 1e7, " µs")),
    )
    ut.finish()
    return cfg


def parse_config(data: Mapping[str, Any], source_file: str) -> AgentConfig:
    """Validate decoded TOML. Pure: relative paths are resolved against the config file's directory."""
    base_dir = os.path.dirname(os.path.abspath(source_file))
    p = _Problems()
    top = _Table(data, "", p)
    device_id = top.get("device_id", str, "", check=_matches(
        DEVICE_ID_RE, "must be 3-64 of lowercase letters, digits and '-', starting with a letter or digit"))
    device_id_file = top.get("device_id_file", str, None)
    if ("device_id" in data) == (device_id_file is not None):
        p.add("device_id", "give exactly one of device_id or device_id_file (the file first boot writes, "
                           "e.g. /var/lib/edge-agent/device-id, so one config serves every device)")
    key_uri = top.get("key_uri", str, "", required=True, check=_key_uri)
    log_level = top.get("log_level", str, "INFO", check=_one_of("DEBUG", "INFO", "WARNING", "ERROR"))
    certificate = top.get("certificate", str, None)

    pipelines: list[PipelineConfig] = []
    top.seen.add("pipeline")
    raw_pipes = data.get("pipeline")
    if raw_pipes is None:
        p.add("pipeline", "at least one [[pipeline]] is required")
    elif not isinstance(raw_pipes, list) or not all(isinstance(x, dict) for x in raw_pipes):
        p.add("pipeline", "expected an array of tables ([[pipeline]])")
    else:
        for i, raw in enumerate(raw_pipes):
            pc = _parse_pipeline(_Table(raw, f"pipeline[{i}]", p), base_dir)
            if pc:
                pipelines.append(pc)
        streams = [pc.stream for pc in pipelines]
        for s in {s for s in streams if streams.count(s) > 1}:
            p.add("pipeline", f"stream {s!r} is used by more than one pipeline")

    ot = top.table("outbox", required=True)
    od = OutboxConfig(path="")
    opath = ot.get("path", str, "", required=True)
    outbox = OutboxConfig(
        path=_resolve(base_dir, opath) if opath else "",
        max_bytes=ot.get("max_bytes", int, od.max_bytes,
                         check=lambda v: None if v >= 64 * 1024 else f"must be >= 65536 bytes, got {v}"),
        delivery=ot.get("delivery", str, od.delivery, check=_one_of("aggregator", "broker")),
        resend_after_s=ot.get("resend_after_s", float, od.resend_after_s, check=_positive),
        commit_batch=ot.get("commit_batch", int, od.commit_batch, check=_positive),
        commit_linger_s=ot.get("commit_linger_s", float, od.commit_linger_s,
                               check=lambda v: None if 0 <= v <= 5 else f"must be within 0..5 seconds, got {v}"),
        inflight_max=ot.get("inflight_max", int, od.inflight_max, check=_positive),
    )
    ot.finish()

    mt = top.table("mqtt")
    md = MqttConfig()

    def _file(name: str) -> str | None:
        v = mt.get(name, str, None)
        return _resolve(base_dir, v) if v else None

    mqtt = MqttConfig(
        url=mt.get("url", str, md.url, check=lambda v: None if re.match(r"^mqtts?://[^/:]+(:\d+)?/?$", v)
                   else f"expected mqtt://host[:port] or mqtts://host[:port], got {v!r}"),
        protocol=mt.get("protocol", str, md.protocol, check=_one_of("5", "3.1.1")),
        client_id=mt.get("client_id", str, None),
        topic_prefix=mt.get("topic_prefix", str, md.topic_prefix, check=lambda v: None if v and not any(
            c in v for c in "+#") and not v.startswith("/") and not v.endswith("/")
            else f"must be a topic path without wildcards or leading/trailing '/', got {v!r}"),
        keepalive_s=mt.get("keepalive_s", int, md.keepalive_s,
                           check=lambda v: None if 5 <= v <= 3600 else f"must be 5..3600, got {v}"),
        max_packet_bytes=mt.get("max_packet_bytes", int, md.max_packet_bytes,
                                check=lambda v: None if v >= 1024 else f"must be >= 1024, got {v}"),
        ca_file=_file("ca_file"),
        cert_file=_file("cert_file"),
        key_file=_file("key_file"),
        username=mt.get("username", str, None),
        password_file=_file("password_file"),
        reconnect_min_s=mt.get("reconnect_min_s", float, md.reconnect_min_s, check=_positive),
        reconnect_max_s=mt.get("reconnect_max_s", float, md.reconnect_max_s, check=_positive),
        degraded_after_s=mt.get("degraded_after_s", float, md.degraded_after_s, check=_positive),
    )
    mt.finish()
    if (mqtt.cert_file is None) != (mqtt.key_file is None):
        p.add("mqtt.cert_file", "cert_file and key_file must be given together (mTLS)")
    if mqtt.reconnect_min_s > mqtt.reconnect_max_s:
        p.add("mqtt.reconnect_min_s", "must not exceed mqtt.reconnect_max_s")

    tt = top.table("telemetry")
    telemetry = TelemetryConfig(interval_s=tt.get("interval_s", float, TelemetryConfig().interval_s,
                                                  check=lambda v: None if v >= 1 else f"must be >= 1, got {v}"))
    tt.finish()

    wt = top.table("watchdog")
    watchdog = WatchdogConfig(stall_s=wt.get("stall_s", float, None,
                                             check=lambda v: None if v >= 0.5 else f"must be >= 0.5, got {v}"))
    wt.finish()

    st = top.table("status")
    spath = st.get("path", str, "", check=lambda v: None if v else "must not be empty (omit it for the default)")
    status = StatusConfig(
        path=_resolve(base_dir, spath) if spath else (
            os.path.join(os.path.dirname(outbox.path), "status.json") if outbox.path else ""),
        interval_s=st.get("interval_s", float, StatusConfig().interval_s,
                          check=lambda v: None if 0.2 <= v <= 3600 else f"must be 0.2..3600, got {v}"),
    )
    st.finish()

    rt = top.table("receipts")
    rpath = rt.get("path", str, "", check=lambda v: None if v else "must not be empty (omit it for the default)")
    rca = rt.get("ca_file", str, None)
    rcrl = rt.get("crl_file", str, None)
    rvkey = rt.get("log_vkey", str, None, check=_check_vkey)
    receipts = ReceiptsConfig(
        ca_file=_resolve(base_dir, rca) if rca else mqtt.ca_file,
        crl_file=_resolve(base_dir, rcrl) if rcrl else None,
        path=_resolve(base_dir, rpath) if rpath else (
            os.path.join(os.path.dirname(outbox.path), "receipt.cose") if outbox.path else ""),
        log_vkey=rvkey.strip() if rvkey else None,
    )
    rt.finish()
    metrics = _parse_metrics(top.table("metrics"), base_dir)
    doctor = _parse_doctor(top.table("doctor"))
    updates = _parse_updates(top, base_dir, outbox.path)
    top.finish()
    for pc in pipelines:
        if pc.hop > 10 * pc.window:
            idx = [x.stream for x in pipelines].index(pc.stream)
            p.add(f"pipeline[{idx}].hop", f"hop {pc.hop} is more than 10x the window {pc.window}")
    if p.items:
        raise ConfigError(source_file, p.items)
    return AgentConfig(source_file=source_file, device_id=device_id, key_uri=key_uri, pipelines=tuple(pipelines),
                       outbox=outbox, mqtt=mqtt, telemetry=telemetry, watchdog=watchdog, status=status,
                       receipts=receipts, metrics=metrics, doctor=doctor, updates=updates, log_level=log_level,
                       device_id_file=_resolve(base_dir, device_id_file) if device_id_file else None,
                       certificate=_resolve(base_dir, certificate) if certificate else None)


def check_environment(cfg: AgentConfig) -> None:
    """Check what the config points at: models, metadata, key, outbox dir, TLS files. Raises ``ConfigError``."""
    from provisioning import FileKeyUri, KeyStoreError, check_key_file_permissions, parse_key_uri  # noqa: PLC0415

    p = _Problems()
    for i, pc in enumerate(cfg.pipelines):
        if not os.path.isfile(pc.model):
            p.add(f"pipeline[{i}].model", f"model file {pc.model} does not exist")
        if not os.path.isfile(pc.metadata):
            p.add(f"pipeline[{i}].metadata", f"model metadata {pc.metadata} does not exist")
        if isinstance(pc.source, ReplaySourceConfig) and not os.path.isfile(pc.source.path):
            p.add(f"pipeline[{i}].source.path", f"replay file {pc.source.path} does not exist")
    uri = parse_key_uri(cfg.key_uri)
    if isinstance(uri, FileKeyUri):
        try:
            check_key_file_permissions(Path(uri.path))
            if not os.access(uri.path, os.R_OK):
                raise KeyStoreError(f"key file {uri.path} is not readable by uid {os.geteuid()}")
        except KeyStoreError as e:
            p.add("key_uri", str(e))
    if cfg.certificate and not os.path.isfile(cfg.certificate):
        p.add("certificate", f"certificate file {cfg.certificate} does not exist")
    out_dir = os.path.dirname(cfg.outbox.path) or "."
    if not os.path.isdir(out_dir):
        p.add("outbox.path", f"directory {out_dir} does not exist")
    elif not os.access(out_dir, os.W_OK):
        p.add("outbox.path", f"directory {out_dir} is not writable by uid {os.geteuid()}")
    for name in ("ca_file", "cert_file", "key_file", "password_file"):
        value = getattr(cfg.mqtt, name)
        if value and not os.path.isfile(value):
            p.add(f"mqtt.{name}", f"file {value} does not exist")
        elif value and name in ("key_file", "password_file"):
            mode = stat.S_IMODE(os.stat(value).st_mode)
            if mode & 0o077:
                p.add(f"mqtt.{name}", f"file {value} has mode {mode:04o}; run `chmod 600 {value}`")
    for name in ("ca_file", "crl_file"):
        value = getattr(cfg.receipts, name)
        if value and not os.path.isfile(value):
            p.add(f"receipts.{name}", f"file {value} does not exist")
    if cfg.updates is not None:
        if not os.path.isfile(cfg.updates.root):
            p.add("updates.root", f"trusted root {cfg.updates.root} does not exist (ship the release "
                                  "repository's metadata/1.root.json in the image)")
        parent = os.path.dirname(cfg.updates.dir.rstrip("/")) or "."
        if not os.path.isdir(cfg.updates.dir) and not os.path.isdir(parent):
            p.add("updates.dir", f"neither {cfg.updates.dir} nor its parent directory exists")
    if p.items:
        raise ConfigError(cfg.source_file, p.items)


def load_config(path: str, *, check_files: bool = True) -> AgentConfig:
    """Read, parse and check the config at ``path``. Raises ``ConfigError`` listing every problem."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, [("(file)", "config file does not exist")]) from None
    except PermissionError:
        raise ConfigError(path, [("(file)", f"config file is not readable by uid {os.geteuid()}")]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, [("(syntax)", f"not valid TOML: {e}")]) from None
    except UnicodeDecodeError:
        raise ConfigError(path, [("(syntax)", "not valid UTF-8 text")]) from None
    cfg = parse_config(data, path)
    if cfg.device_id_file:
        cfg = replace(cfg, device_id=read_device_id(cfg.device_id_file, path))
    if check_files:
        check_environment(cfg)
    return cfg


def read_device_id(id_file: str, config_path: str) -> str:
    """The device id from the file first boot wrote (``edge-provision device init``)."""
    try:
        with open(id_file, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as e:
        msg = f"cannot read {id_file}: {e.strerror}; has first-boot provisioning (edge-agent-provision) run?"
        raise ConfigError(config_path, [("device_id_file", msg)]) from None
    if not DEVICE_ID_RE.match(value):
        raise ConfigError(config_path, [("device_id_file", f"{id_file} holds {value[:70]!r}, not a device id "
                                                           "(3-64 of [a-z0-9-])")])
    return value
