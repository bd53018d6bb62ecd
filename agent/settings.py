"""The agent's validated configuration as frozen dataclasses (built by ``agent.config`` from TOML).

Kept apart from the parser so that sources, pipeline and publisher can import the shapes they consume
without pulling in validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SimulatedSourceConfig:
    """Samples from the vibration signal model (firmware_bridge.signal_model)."""

    rate_hz: float = 1000.0
    fault: str = "normal"  # one of signal_model.CLASSES, or "cycle"
    cycle_s: float = 5.0  # with fault = "cycle": seconds per class
    realtime: bool = True  # False: produce as fast as the pipeline consumes (tests, benchmarks)
    block_samples: int = 64
    seed: int | None = None


@dataclass(frozen=True)
class ReplaySourceConfig:
    """A recorded CSV: header row, optional ``t_us`` column, then one column per channel."""

    path: str
    rate_hz: float | None = None  # None: derive from the t_us column
    loop: bool = False
    realtime: bool = True


@dataclass(frozen=True)
class SerialSourceConfig:
    """A microcontroller on a serial port speaking the firmware_bridge protocol (docs/serial-protocol.md)."""

    port: str
    baudrate: int = 921600
    sensor_id: int = 0
    reopen_backoff_max_s: float = 2.0


SourceConfig = SimulatedSourceConfig | ReplaySourceConfig | SerialSourceConfig


@dataclass(frozen=True)
class DelegateConfig:
    """An external TFLite delegate under a pipeline's model (agent.delegates)."""

    library: str  # path or soname, e.g. /usr/lib/aarch64-linux-gnu/libedgetpu.so.1
    options: tuple[tuple[str, str], ...] = ()  # passed to the library as strings
    on_failure: str = "fail"  # or "cpu_fallback": run on the CPU and say so in status and birth records
    name: str = ""  # runtime name for golden vectors; empty: from the library's file name (edgetpu)


@dataclass(frozen=True)
class PipelineConfig:
    """One sensor stream → windows → model → signed results on ``<prefix>/<device>/result/<stream>``."""

    stream: str
    source: SourceConfig
    model: str
    metadata: str  # model metadata JSON (labels, normalisation); default: model path with .json
    window: int
    hop: int
    labels: tuple[str, ...] = ()  # empty: from metadata
    score_threshold: float = 0.0  # below it the result's label is "uncertain" (still published)
    num_threads: int = 1
    queue_windows: int = 256  # bounded queue between this pipeline and the signer/committer
    delegate: DelegateConfig | None = None  # [pipeline.delegate]: an accelerator's external delegate


@dataclass(frozen=True)
class OutboxConfig:
    """SQLite outbox: path, byte cap and delivery mode (DESIGN §4)."""

    path: str
    max_bytes: int = 64 * 1024 * 1024
    delivery: str = "aggregator"  # or "broker"
    resend_after_s: float = 30.0
    commit_batch: int = 256
    commit_linger_s: float = 1.0  # a part-filled batch of results waits this long for more (fewer fsyncs)
    inflight_max: int = 1000


@dataclass(frozen=True)
class MqttConfig:
    """Broker connection and topic layout (DESIGN §5)."""

    url: str = "mqtt://127.0.0.1:1883"
    protocol: str = "5"  # "5" or "3.1.1"
    client_id: str | None = None  # default: device id
    topic_prefix: str = "edge/v1"
    keepalive_s: int = 30
    max_packet_bytes: int = 128 * 1024
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    degraded_after_s: float = 120.0  # this long without a broker connection: status says degraded (exit 1)


@dataclass(frozen=True)
class ReceiptsConfig:
    """How the agent verifies the aggregator's signed receipts before it deletes (aggregator delivery)."""

    ca_file: str | None = None  # fleet CA (PEM); None: mqtt.ca_file
    crl_file: str | None = None  # the fleet CRL (PEM or DER), re-read when it changes
    path: str = ""  # latest valid receipt; empty: receipt.cose next to the outbox (the parser fills it in)
    log_vkey: str | None = None  # the transparency log's verifier key: receipts' log proofs are checked


@dataclass(frozen=True)
class UpdatesConfig:
    """Signed model updates (DESIGN §11, docs/model-updates.md): where the repository is, what to trust."""

    repository_url: str  # http(s)://host[/path]: metadata under <url>/metadata/, models under <url>/targets/
    root: str  # the trusted root.json shipped in the image (1.root.json of the release repository)
    dir: str = ""  # TUF metadata, verified models, state.json; empty: updates/ next to the outbox
    poll_interval_s: float = 3600.0
    fetch_timeout_s: float = 30.0
    max_model_bytes: int = 64 * 1024 * 1024
    max_metadata_bytes: int = 1024 * 1024  # root, snapshot, targets (timestamp: at most 16 KiB)
    health_window_s: float = 30.0  # after a switch: watch this long before committing the new version
    health_min_windows: int = 5
    latency_factor: float = 4.0  # median live latency may be this many times the golden run's + slack
    latency_slack_us: float = 500.0


@dataclass(frozen=True)
class TelemetryConfig:
    """Signed health records on ``<prefix>/<device>/telemetry``."""

    interval_s: float = 60.0


@dataclass(frozen=True)
class WatchdogConfig:
    """How the systemd watchdog judges health (the ping interval itself comes from ``WatchdogSec=``)."""

    stall_s: float | None = None  # a stage without progress this long is stalled; None: WatchdogSec / 2


@dataclass(frozen=True)
class StatusConfig:
    """The live status file that ``edge-agent status`` reads (atomic JSON, rewritten every ``interval_s``)."""

    path: str = ""  # empty: status.json next to the outbox (the parser fills it in)
    interval_s: float = 5.0


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics (docs/metrics.md): off, a loopback HTTP port, or node-exporter's textfile collector."""

    mode: str = "off"  # "off" | "http" | "textfile"
    bind: str = "127.0.0.1"  # http: a loopback address only
    port: int = 9464  # http
    textfile_path: str = "/var/lib/prometheus/node-exporter/edge_agent.prom"  # textfile: must end in .prom
    interval_s: float = 15.0  # textfile: rewritten this often


@dataclass(frozen=True)
class DoctorConfig:
    """What ``edge-agent doctor`` checks against (docs/doctor.md)."""

    unit: str = "edge-agent.service"  # the systemd unit whose state and watchdog are checked
    wear_budget_bytes_per_day: int = 1 << 30  # writes per day the storage may take for its rated life
    probe_timeout_s: float = 5.0  # each network step and the serial HELLO


@dataclass(frozen=True)
class AgentConfig:
    """The whole agent configuration, validated."""

    source_file: str
    device_id: str
    key_uri: str
    pipelines: tuple[PipelineConfig, ...]
    outbox: OutboxConfig
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    receipts: ReceiptsConfig = field(default_factory=ReceiptsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    doctor: DoctorConfig = field(default_factory=DoctorConfig)
    updates: UpdatesConfig | None = None  # None: no [updates] table, the shipped models run forever
    certificate: str | None = None  # PEM: device certificate, then intermediates (sent in the birth record)
    device_id_file: str | None = None  # read at load time instead of device_id (one config for every device)
    log_level: str = "INFO"
