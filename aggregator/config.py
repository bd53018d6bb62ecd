"""The aggregator's TOML config, validated once at start into frozen dataclasses.

Unknown keys are errors; every problem names its key path and the file; validation does no I/O (paths are
only resolved against the config file's directory). ``examples/aggregator.toml`` shows every key.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aggregator.errors import ConfigError
from envelope.limits import DEFAULT_LIMITS
from envelope.names import topic_prefix_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class MqttSettings:
    """Broker connection, session and topic layout."""

    url: str = "mqtt://127.0.0.1:1883"
    protocol: str = "5"  # "5" or "3.1.1" (the demo's embedded amqtt broker)
    client_id: str = "edge-aggregator"
    topic_prefix: str = "edge/v1"
    shared_group: str = ""  # non-empty: record topics via $share/<group>/..., for several workers
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600  # MQTT 5: how long the broker keeps our queue while we are away
    receive_maximum: int = 1000  # MQTT 5: un-acknowledged deliveries the broker may have in flight to us
    broker_ack: str = "after_commit"  # or "on_receive": when the QoS 1 PUBACK goes back to the broker
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class StoreSettings:
    """Where records go: a SQLite file path or a postgresql:// URL."""

    url: str = "/var/lib/edge-aggregator/records.db"
    schema: str | None = None  # PostgreSQL only: tables live in this schema (created if missing)


@dataclass(frozen=True)
class TrustSettings:
    """Trust anchors: fleet CA certificate files, CRL files, registry files from edge-provision."""

    ca_files: tuple[str, ...] = ()  # trust anchors: the fleet root alone is enough
    bundle_files: tuple[str, ...] = ()  # intermediates for chains that do not carry them
    crl_files: tuple[str, ...] = ()
    registry_files: tuple[str, ...] = ()
    reload_s: float = 60.0  # re-read CRLs and registries this often (0: never)


@dataclass(frozen=True)
class IdentitySettings:
    """The aggregator's own identity, required to sign receipts (DESIGN §8; made with
    ``edge-provision aggregator init``). Without it the worker publishes no receipts at all."""

    key: str | None = None  # key URI: file:/path (or a plain path) or pkcs11:token=...;object=...
    cert_file: str | None = None  # the aggregator certificate (PEM; may hold the chain, leaf first)
    chain_file: str | None = None  # intermediates to send in the receipt's x5chain, if cert_file lacks them


@dataclass(frozen=True)
class HoldSettings:
    """Bounds of the hold for records whose key is not known yet (aggregator.hold)."""

    max_records: int = 10_000
    max_bytes: int = 16 * 2**20
    max_age_s: float = 60.0


@dataclass(frozen=True)
class LogSettings:
    """The transparency log (DESIGN §9, docs/transparency.md): on when ``key_file`` is set.

    Every worker of a deployment gets the same key and origin: whichever holds the integrator lock signs.
    """

    key_file: str | None = None  # the log's Ed25519 key, PKCS#8 PEM, 0600 (edge-provision log init)
    origin: str = ""  # checkpoint origin line and note key name, "<fleet>/<log name>"
    checkpoint_interval_s: float = 1.0  # a checkpoint when the tree grew, at most this often
    integrate_max: int = 20_000  # records given an index per integration transaction
    keep_checkpoints: int = 1000  # signed checkpoints kept in the store (the newest)


@dataclass(frozen=True)
class ModelsSettings:
    """The signed model repository (DESIGN §11, docs/model-updates.md): flag results of unlisted model digests.

    Off while ``repository_url`` is empty. The same repository and trusted root the devices use."""

    repository_url: str = ""  # http(s)://host[/path]: metadata under <url>/metadata/
    root_file: str | None = None  # the trusted root (1.root.json of the release repository)
    cache_dir: str = ""  # TUF metadata cache; empty: models-tuf/ next to the SQLite store (else a temp dir)
    refresh_s: float = 300.0  # re-read the signed targets this often
    fetch_timeout_s: float = 30.0


@dataclass(frozen=True)
class WebSettings:
    """The fleet web page and ``/metrics`` (``aggregator.web``, extra ``web``; docs/web.md).

    Loopback by default. Bound elsewhere it needs TLS and a bearer token file: the page shows the whole fleet."""

    enabled: bool = False  # serve the web app (uvicorn, in the aggregator process)
    track_fleet: bool = False  # keep the fleet view tables current without serving (other workers of a group)
    host: str = "127.0.0.1"
    port: int = 8780  # 0: any free port (tests)
    tls_cert_file: str | None = None  # PEM certificate (chain) for HTTPS
    tls_key_file: str | None = None
    token_file: str | None = None  # bearer token (one line); required off loopback, optional on it
    title: str = "edge fleet"
    page_size: int = 50  # fleet rows per page (a page may ask for 10..200)
    push_interval_ms: int = 500  # live updates: at most one push per page this often
    device_window_s: int = 3600  # how far back the device page plots
    attention_outbox_depth: int = 1000  # "needs attention": more records than this waiting on the device
    attention_cert_days: int = 14  # "needs attention": certificate expiring within this many days
    attention_window_s: int = 3600  # "needs attention": a reject within this window

    @property
    def tracking(self) -> bool:
        """Whether this worker maintains the fleet view (serving it implies tracking)."""
        return self.enabled or self.track_fleet


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1): the only binds allowed without TLS."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AggregatorConfig:
    """The whole aggregator configuration."""

    mqtt: MqttSettings = field(default_factory=MqttSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    hold: HoldSettings = field(default_factory=HoldSettings)
    log: LogSettings = field(default_factory=LogSettings)
    web: WebSettings = field(default_factory=WebSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    max_record_bytes: int = DEFAULT_LIMITS.max_record_bytes  # envelope.limits: what agents refuse to commit
    max_skew_s: float = DEFAULT_LIMITS.max_skew_ms / 1000
    queue_size: int = 20_000
    batch_max: int = 1000
    ack_interval_ms: int = 100
    ack_refresh_s: float = 1.0  # re-read acks other workers advanced (shared subscription)
    log_level: str = "INFO"
    source_file: str = ""


_TYPES: dict[str, Any] = {"str": str, "int": int, "float": (int, float), "bool": bool}


def _section(cls: Any, data: Any, key: str, problems: list[tuple[str, str]], base: Path) -> dict[str, Any]:
    if not isinstance(data, dict):
        problems.append((key, f"expected a table, got {type(data).__name__}"))
        return {}
    known = {f.name: f for f in fields(cls) if f.name != "source_file"}
    out: dict[str, Any] = {}
    for name, value in data.items():
        path = f"{key}.{name}" if key else name
        f = known.get(name)
        if f is None:
            problems.append((path, f"unknown key; expected one of {sorted(known)}"))
            continue
        typ = str(f.type)
        if typ in ("MqttSettings", "StoreSettings", "TrustSettings", "IdentitySettings", "HoldSettings",
                   "LogSettings", "WebSettings", "ModelsSettings"):
            continue
        if typ.startswith("tuple"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append((path, f"expected a list of strings, got {value!r:.60}"))
                continue
            value = tuple(str(base / v) for v in value)
        else:
            want = _TYPES[typ.split(" ", maxsplit=1)[0]]
            if not isinstance(value, want) or isinstance(value, bool) != (want is bool):
                problems.append((path, f"expected {typ}, got {type(value).__name__} {value!r:.60}"))
                continue
            if name.endswith(("_file",)) and isinstance(value, str):
                value = str(base / value)
        out[name] = value
    return out


def parse_config(doc: dict[str, Any], source: str = "<config>") -> AggregatorConfig:
    """Validate a parsed TOML document; raises ``ConfigError`` listing every problem."""
    problems: list[tuple[str, str]] = []
    base = Path(source).parent if source != "<config>" else Path(".")
    top = dict(doc)
    sections = {name: top.pop(name, {}) for name in ("mqtt", "store", "trust", "identity", "hold", "log", "web",
                                                       "models")}
    agg = top.pop("aggregator", {})
    for name in top:
        problems.append((name, "unknown key; expected tables [aggregator], [mqtt], [store], [trust], [identity], "
                         "[hold], [log], [web], [models]"))
    mqtt = MqttSettings(**_section(MqttSettings, sections["mqtt"], "mqtt", problems, base))
    store_kw = _section(StoreSettings, sections["store"], "store", problems, base)
    url = store_kw.get("url")
    if isinstance(url, str) and not url.startswith(("postgresql://", "postgres://", ":memory:")):
        store_kw["url"] = str(base / url.removeprefix("sqlite://").removeprefix("sqlite:"))
    store = StoreSettings(**store_kw)
    trust = TrustSettings(**_section(TrustSettings, sections["trust"], "trust", problems, base))
    ident_kw = _section(IdentitySettings, sections["identity"], "identity", problems, base)
    key = ident_kw.get("key")
    if isinstance(key, str) and not key.startswith(("pkcs11:", "file:")):
        ident_kw["key"] = f"file:{base / key}"
    elif isinstance(key, str) and key.startswith("file:") and not key[5:].startswith("/"):
        ident_kw["key"] = f"file:{base / key[5:]}"
    identity = IdentitySettings(**ident_kw)
    hold = HoldSettings(**_section(HoldSettings, sections["hold"], "hold", problems, base))
    log_settings = LogSettings(**_section(LogSettings, sections["log"], "log", problems, base))
    web = WebSettings(**_section(WebSettings, sections["web"], "web", problems, base))
    models_kw = _section(ModelsSettings, sections["models"], "models", problems, base)
    if isinstance(models_kw.get("cache_dir"), str) and models_kw["cache_dir"]:
        models_kw["cache_dir"] = str(base / models_kw["cache_dir"])
    models = ModelsSettings(**models_kw)
    kw = _section(AggregatorConfig, agg, "aggregator", problems, base)
    cfg = AggregatorConfig(mqtt=mqtt, store=store, trust=trust, identity=identity, hold=hold, log=log_settings,
                           web=web, models=models, source_file=source, **kw)
    problems += check(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def check(cfg: AggregatorConfig) -> list[tuple[str, str]]:
    """Cross-field checks after parsing."""
    p: list[tuple[str, str]] = []
    m = cfg.mqtt
    if not m.url.startswith(("mqtt://", "mqtts://")):
        p.append(("mqtt.url", f"expected mqtt://host:port or mqtts://host:port, got {m.url!r}"))
    if m.protocol not in ("5", "3.1.1"):
        p.append(("mqtt.protocol", f"expected \"5\" or \"3.1.1\", got {m.protocol!r}"))
    if m.broker_ack not in ("after_commit", "on_receive"):
        p.append(("mqtt.broker_ack", f"expected after_commit or on_receive, got {m.broker_ack!r}"))
    if m.shared_group and not _NAME_RE.match(m.shared_group):
        p.append(("mqtt.shared_group", f"expected 1-64 letters, digits, _ or -, got {m.shared_group!r}"))
    if not m.client_id or len(m.client_id) > 128:
        p.append(("mqtt.client_id", "expected a non-empty client id of at most 128 characters"))
    if (problem := topic_prefix_problem(m.topic_prefix)) is not None:
        p.append(("mqtt.topic_prefix", problem))
    for name, lo, hi in (("keepalive_s", 5, 3600), ("receive_maximum", 1, 65535), ("session_expiry_s", 0, 2**32 - 1)):
        if not lo <= getattr(m, name) <= hi:
            p.append((f"mqtt.{name}", f"expected {lo}..{hi}, got {getattr(m, name)}"))
    if bool(m.cert_file) != bool(m.key_file):
        p.append(("mqtt.cert_file", "cert_file and key_file go together (mTLS client certificate)"))
    if cfg.store.schema is not None and not _SCHEMA_RE.match(cfg.store.schema):
        p.append(("store.schema", f"expected a lowercase SQL identifier, got {cfg.store.schema!r}"))
    for name, lo, hi in (("max_record_bytes", 256, 16 * 2**20), ("queue_size", 10, 10**7), ("batch_max", 1, 100_000),
                         ("ack_interval_ms", 1, 60_000)):
        if not lo <= getattr(cfg, name) <= hi:
            p.append((f"aggregator.{name}", f"expected {lo}..{hi}, got {getattr(cfg, name)}"))
    if cfg.max_skew_s <= 0:
        p.append(("aggregator.max_skew_s", f"expected a positive number of seconds, got {cfg.max_skew_s}"))
    if cfg.ack_refresh_s <= 0:
        p.append(("aggregator.ack_refresh_s", f"expected a positive number of seconds, got {cfg.ack_refresh_s}"))
    ident = cfg.identity
    if bool(ident.key) != bool(ident.cert_file):
        p.append(("identity.cert_file" if ident.key else "identity.key",
                  "identity.key and identity.cert_file go together (the receipt signing key and its certificate)"))
    if ident.chain_file and not ident.key:
        p.append(("identity.chain_file", "needs identity.key and identity.cert_file"))
    for name, lo, hi in (("max_records", 0, 10**7), ("max_bytes", 0, 2**34)):
        if not lo <= getattr(cfg.hold, name) <= hi:
            p.append((f"hold.{name}", f"expected {lo}..{hi}, got {getattr(cfg.hold, name)}"))
    if not 0 <= cfg.hold.max_age_s <= 86_400:
        p.append(("hold.max_age_s", f"expected 0..86400 seconds, got {cfg.hold.max_age_s}"))
    p += _check_log(cfg)
    p += _check_web(cfg)
    p += _check_models(cfg)
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        p.append(("aggregator.log_level", f"expected DEBUG, INFO, WARNING or ERROR, got {cfg.log_level!r}"))
    return p


def _check_models(cfg: AggregatorConfig) -> list[tuple[str, str]]:
    m, p = cfg.models, []
    if m.repository_url and not re.match(r"^https?://[^/\s]+(/\S*)?$", m.repository_url):
        p.append(("models.repository_url", f"expected http(s)://host[:port][/path], got {m.repository_url!r}"))
    if bool(m.repository_url) != bool(m.root_file):
        p.append(("models.root_file" if m.repository_url else "models.repository_url",
                  "models.repository_url and models.root_file go together (the repository and its trusted root)"))
    if not 1 <= m.refresh_s <= 86_400:
        p.append(("models.refresh_s", f"expected 1..86400 seconds, got {m.refresh_s}"))
    if not 1 <= m.fetch_timeout_s <= 600:
        p.append(("models.fetch_timeout_s", f"expected 1..600 seconds, got {m.fetch_timeout_s}"))
    return p


def _check_log(cfg: AggregatorConfig) -> list[tuple[str, str]]:
    lg, p = cfg.log, []
    if lg.key_file is None:
        if lg.origin:
            p.append(("log.key_file", "log.origin is set but log.key_file is not: the log needs its key"))
        return p
    if not lg.origin or len(lg.origin) > 200 or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in lg.origin):
        p.append(("log.origin", f"expected \"<fleet>/<log name>\" without spaces or +, got {lg.origin!r:.80}"))
    if not 0.01 <= lg.checkpoint_interval_s <= 3600:
        p.append(("log.checkpoint_interval_s", f"expected 0.01..3600 seconds, got {lg.checkpoint_interval_s}"))
    if not 1 <= lg.integrate_max <= 1_000_000:
        p.append(("log.integrate_max", f"expected 1..1000000, got {lg.integrate_max}"))
    if not 1 <= lg.keep_checkpoints <= 10**7:
        p.append(("log.keep_checkpoints", f"expected 1..10000000, got {lg.keep_checkpoints}"))
    if cfg.max_record_bytes > 65_536:  # C2SP entry bundles prefix each entry with a 16-bit length
        p.append(("aggregator.max_record_bytes", f"with [log] at most 65535 (tlog-tiles entry bundles; the "
                  f"65536 is taken as 65535), got {cfg.max_record_bytes}"))
    return p


def _check_web(cfg: AggregatorConfig) -> list[tuple[str, str]]:
    w = cfg.web
    p: list[tuple[str, str]] = []
    if not w.host or any(c.isspace() for c in w.host):
        p.append(("web.host", f"expected a host name or address, got {w.host!r}"))
    elif not is_loopback(w.host) and not (w.tls_cert_file and w.tls_key_file and w.token_file):
        p.append(("web.host", f"binding to {w.host!r} (not loopback) needs web.tls_cert_file, web.tls_key_file and "
                  "web.token_file: the page shows the whole fleet"))
    if bool(w.tls_cert_file) != bool(w.tls_key_file):
        p.append(("web.tls_cert_file" if w.tls_key_file else "web.tls_key_file",
                  "web.tls_cert_file and web.tls_key_file go together"))
    for name, lo, hi in (("port", 0, 65535), ("page_size", 10, 200), ("push_interval_ms", 50, 10_000),
                         ("device_window_s", 60, 7 * 86_400), ("attention_outbox_depth", 1, 10**9),
                         ("attention_cert_days", 0, 3650), ("attention_window_s", 60, 30 * 86_400)):
        if not lo <= getattr(w, name) <= hi:
            p.append((f"web.{name}", f"expected {lo}..{hi}, got {getattr(w, name)}"))
    if not w.title or len(w.title) > 80:
        p.append(("web.title", "expected a title of 1..80 characters"))
    if w.tracking and cfg.store.url == ":memory:":
        p.append(("web.enabled" if w.enabled else "web.track_fleet",
                  "the web page reads the store over its own connections: store.url must be a file or PostgreSQL"))
    return p


def load_config(path: str | Path) -> AggregatorConfig:
    """Read and validate a TOML config file."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(str(path), [("", f"cannot read: {e.strerror or e}")]) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), [("", f"not valid TOML: {e}")]) from e
    return parse_config(doc, str(path))
