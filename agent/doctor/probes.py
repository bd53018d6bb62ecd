"""The doctor's I/O: each probe looks at one thing for real and returns facts (``agent.doctor.verdicts``
judges them). Every probe has a deadline and catches what the thing it looks at can throw: a probe that
raises would hide every check after it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.doctor import mqtt_wire as mw
from agent.doctor.catalog import CheckResult, verdict
from agent.doctor.verdicts import BrokerFacts, CertFacts, DiskFacts, SerialFacts
from agent.settings import AgentConfig, MqttConfig, PipelineConfig, SerialSourceConfig

__all__ = ["broker_username", "probe_broker", "probe_certificates", "probe_disk", "probe_key", "probe_model",
           "probe_serial", "probe_systemd", "probe_wear", "read_status_doc"]

PROBE_PAYLOAD = b"edge-agent doctor probe"
POST_HANDSHAKE_WAIT_S = 0.3
SYSTEMD_PROPS = ("LoadState", "ActiveState", "SubState", "Result", "NRestarts", "WatchdogUSec")


# ----- key -----------------------------------------------------------------------------------------------

def probe_key(cfg: AgentConfig) -> tuple[CheckResult, Any]:
    """Open the key named by ``key_uri``, sign a random probe and verify it with the key's public half.

    Returns the verdict and the public key (None when the key is not usable)."""
    from envelope import InvalidSignature, UnsupportedAlgorithm, verify_signature  # noqa: PLC0415
    from provisioning import (  # noqa: PLC0415
        FileKeyUri,
        KeyStoreError,
        UnsafeKeyPermissions,
        check_key_file_permissions,
        open_signer,
        parse_key_uri,
    )
    from provisioning.signers import close_signer  # noqa: PLC0415

    uri = parse_key_uri(cfg.key_uri)
    tier = "file" if isinstance(uri, FileKeyUri) else "pkcs11"
    if isinstance(uri, FileKeyUri):
        try:
            check_key_file_permissions(Path(uri.path))
        except UnsafeKeyPermissions as e:
            return verdict("key", "permissions", str(e), path=uri.path), None
        except KeyStoreError as e:
            code = "missing" if not os.path.exists(uri.path) else "unusable"
            return verdict("key", code, str(e), problem=str(e), path=uri.path), None
    try:
        signer = open_signer(cfg.key_uri)
    except KeyStoreError as e:
        return verdict("key", "unusable", str(e), problem=str(e)), None
    except Exception as e:  # a PKCS#11 module that crashes on open
        return verdict("key", "unusable", f"{type(e).__name__}: {e}", problem=f"{type(e).__name__}: {e}"), None
    try:
        probe = PROBE_PAYLOAD + os.urandom(16)
        t0 = time.perf_counter()
        signature = signer.sign(probe)
        ms = (time.perf_counter() - t0) * 1000
        public = signer.public_key()
        try:
            verify_signature(signer.alg, public, probe, signature)
        except (InvalidSignature, UnsupportedAlgorithm) as e:
            return verdict("key", "bad_signature", f"{tier} key: {e}"), None
        return verdict("key", "ok", f"{tier} key signed a probe in {ms:.1f} ms and it verified "
                                    f"(alg {signer.alg}, kid {signer.kid.hex()})"), public
    except KeyStoreError as e:
        return verdict("key", "unusable", str(e), problem=str(e)), None
    finally:
        close_signer(signer)


# ----- certificates --------------------------------------------------------------------------------------

def probe_certificates(cfg: AgentConfig, public_key: Any, now: datetime) -> list[CertFacts]:
    """Each distinct certificate file the config names (``certificate``, ``mqtt.cert_file``), checked with
    ``provisioning.chain`` against the fleet CA (``receipts.ca_file``, default ``mqtt.ca_file``) and CRL."""
    paths = [p for p in dict.fromkeys([cfg.certificate, cfg.mqtt.cert_file]) if p]
    return [_cert_facts(p, cfg.receipts.ca_file, cfg.receipts.crl_file, public_key, now) for p in paths]


def _cert_facts(path: str, ca: str | None, crl: str | None, public_key: Any, now: datetime) -> CertFacts:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    from provisioning import InvalidInput, leaf_identity, load_certificates, load_crl  # noqa: PLC0415
    from provisioning.chain import verified_path  # noqa: PLC0415

    try:
        certs = load_certificates(Path(path).read_bytes(), source=path)
    except OSError as e:
        return CertFacts(path, False, f"cannot read: {e.strerror}")
    except InvalidInput as e:
        return CertFacts(path, False, str(e))
    leaf = certs[0]
    cn_attrs = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cn_attrs[0].value) if cn_attrs else None
    identity_error = ""
    try:
        leaf_identity(leaf, role="device")
    except InvalidInput as e:
        identity_error = str(e)
    key_matches = None
    if public_key is not None:
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        key_matches = (leaf.public_key().public_bytes(serialization.Encoding.DER, spki)
                       == public_key.public_bytes(serialization.Encoding.DER, spki))
    facts: dict[str, Any] = {"cn": cn, "not_before": leaf.not_valid_before_utc, "not_after": leaf.not_valid_after_utc,
                             "key_matches": key_matches, "ca": ca, "crl": crl, "identity_error": identity_error}
    if ca is None:
        return CertFacts(path, True, **facts)
    try:
        cas = load_certificates(Path(ca).read_bytes(), source=ca)
    except (OSError, InvalidInput) as e:
        return CertFacts(path, True, chain_reason="untrusted", chain_error=f"fleet CA {ca}: {e}", **facts)
    crls = []
    if crl:
        try:
            crls = [load_crl(crl)]
        except InvalidInput as e:
            return CertFacts(path, True, chain_reason="bad_crl", chain_error=str(e), **facts)
        nxt = crls[0].next_update_utc
        facts["crl_next_update"] = nxt
    der = [c.public_bytes(serialization.Encoding.DER) for c in certs]
    try:
        verified_path(der, cas, crls, now, "device")
    except InvalidInput as e:
        reason = getattr(e, "reason", "untrusted")
        if reason == "bad_id":  # the device_id check reports identity problems; the chain itself may be fine
            return CertFacts(path, True, **facts)
        return CertFacts(path, True, chain_reason=reason, chain_error=str(e), **facts)
    return CertFacts(path, True, **facts)


# ----- broker --------------------------------------------------------------------------------------------

def broker_username(cfg: MqttConfig, certs: list[CertFacts]) -> str:
    if cfg.cert_file:
        for c in certs:
            if c.path == cfg.cert_file and c.cn:
                return c.cn
    return cfg.username or "(anonymous)"


def probe_broker(cfg: AgentConfig, certs: list[CertFacts], timeout_s: float) -> BrokerFacts:
    """DNS, TCP, TLS with the device certificate, CONNECT and one QoS 1 PUBLISH on ``<prefix>/<device>/doctor``.

    The probe's client id is ``<client id>-doctor`` so that, on a broker that does not force the client id
    to the CN, it cannot take over the agent's session. Nothing is retained and the session expires at once.
    """
    m = cfg.mqtt
    u = urlsplit(m.url)
    tls = u.scheme == "mqtts"
    host = u.hostname or "127.0.0.1"
    port = u.port or (8883 if tls else 1883)
    protocol = 5 if m.protocol == "5" else 4
    client_id = f"{m.client_id or cfg.device_id}-doctor"
    f = BrokerFacts(host=host, port=port, tls=tls, protocol=protocol, timeout_s=timeout_s, client_id=client_id,
                    username=broker_username(m, certs), topic=f"{m.topic_prefix}/{cfg.device_id}/doctor",
                    prefix=m.topic_prefix, ca=m.ca_file or "(system CAs)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        f.dns_error = e.strerror or str(e)
        return f
    f.addrs = list(dict.fromkeys(str(i[4][0]) for i in infos))
    sock = None
    for family, stype, proto, _, addr in infos:
        try:
            sock = socket.socket(family, stype, proto)
            sock.settimeout(timeout_s)
            sock.connect(addr)
            break
        except OSError as e:
            if sock is not None:
                sock.close()
            sock = None
            if isinstance(e, ConnectionRefusedError):
                f.tcp_error = ("refused", "connection refused")
            elif isinstance(e, TimeoutError) or e.errno == errno.ETIMEDOUT:
                f.tcp_error = ("timeout", f"no answer within {timeout_s:g}s")
            else:
                f.tcp_error = ("error", e.strerror or str(e))
    if sock is None:
        return f
    f.tcp_error = None
    conn: socket.socket = sock
    try:
        if tls:
            wrapped = _tls(f, m, sock, host)
            if wrapped is None:
                return f
            conn = wrapped
        _mqtt(f, m, conn)
    finally:
        try:
            conn.close()
        except OSError:
            pass
    return f


def _tls(f: BrokerFacts, m: MqttConfig, sock: socket.socket, host: str) -> ssl.SSLSocket | None:
    try:
        ctx = ssl.create_default_context(cafile=m.ca_file)
        if m.cert_file and m.key_file:
            ctx.load_cert_chain(m.cert_file, m.key_file)
    except (ssl.SSLError, OSError) as e:
        f.tls_error = ("client_cert", str(e))
        return None
    try:
        tsock = ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as e:
        f.tls_error = ("verify", e.verify_message or str(e))
        return None
    except ssl.SSLError as e:
        f.tls_error = _tls_cause(e)
        return None
    except OSError as e:  # reset or timeout during the handshake
        f.tls_error = ("error", e.strerror or str(e) or type(e).__name__)
        return None
    f.tls_version = tsock.version()
    # TLS 1.3: the broker judges the client certificate after the handshake has completed on our side, and
    # says so with an alert, then closes. Wait briefly for that verdict before speaking MQTT: sending first
    # races the close, and the alert is often lost to a reset.
    try:
        tsock.settimeout(POST_HANDSHAKE_WAIT_S)
        data = tsock.recv(65536)
    except (TimeoutError, ssl.SSLWantReadError):
        return tsock
    except ssl.SSLError as e:
        f.tls_error = _refused_after_handshake(e)
        return None
    except OSError as e:
        f.tls_error = ("alert", f"the broker closed the TLS session after the handshake ({e.strerror or e}): it "
                                "refused the device certificate")
        return None
    if not data:
        f.tls_error = ("alert", "the broker closed the TLS session right after the handshake: it refused the device "
                                "certificate")
        return None
    f.early = data  # the broker spoke first (it should not in MQTT): keep it for the packet reader
    return tsock


def _refused_after_handshake(e: ssl.SSLError) -> tuple[str, str]:
    cause, detail = _tls_cause(e)
    if cause == "alert":
        return cause, detail
    return "alert", (f"the broker closed the TLS session after the handshake ({detail}): it refused the device "
                     "certificate")


def _tls_cause(e: ssl.SSLError) -> tuple[str, str]:
    reason = str(getattr(e, "reason", "") or e)
    return ("alert" if "ALERT" in reason.upper() else "error"), reason.lower()


def _read_packet(conn: socket.socket, reader: mw.PacketReader, deadline: float) -> mw.Packet | None:
    """The next packet, or None at EOF; raises ``TimeoutError`` at the deadline, ``ssl.SSLError`` on an alert."""
    while True:
        pkt = reader.next_packet()
        if pkt is not None:
            return pkt
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        conn.settimeout(left)
        try:
            data = conn.recv(65536)
        except TimeoutError:
            raise TimeoutError from None
        if not data:
            return None
        reader.feed(data)


def _mqtt(f: BrokerFacts, m: MqttConfig, conn: socket.socket) -> None:
    password = None
    if m.password_file:
        try:
            password = Path(m.password_file).read_bytes().strip()
        except OSError as e:
            f.connect_error = ("closed", f"cannot read mqtt.password_file: {e.strerror}")
            return
    reader = mw.PacketReader()
    reader.feed(f.early)
    try:
        conn.sendall(mw.connect_packet(f.client_id, protocol=f.protocol, keepalive_s=30, username=m.username,
                                       password=password))
        pkt = _read_packet(conn, reader, time.monotonic() + f.timeout_s)
    except TimeoutError:
        f.connect_error = ("timeout", f"no CONNACK within {f.timeout_s:g}s")
        return
    except ssl.SSLError as e:  # TLS 1.3: the broker's verdict on our certificate arrives after the handshake
        f.tls_error = _refused_after_handshake(e) if f.tls else _tls_cause(e)
        return
    except (OSError, mw.MalformedPacket) as e:
        f.connect_error = ("closed", f"connection closed before CONNACK: {e}")
        return
    if pkt is None:
        f.connect_error = ("closed", "connection closed before CONNACK")
        return
    try:
        _, f.connack = mw.parse_connack(pkt, f.protocol)
    except mw.MalformedPacket as e:
        f.connect_error = ("closed", str(e))
        return
    if f.connack != 0:
        return
    try:
        conn.sendall(mw.publish_packet(f.topic, PROBE_PAYLOAD, 1, protocol=f.protocol))
        deadline = time.monotonic() + f.timeout_s
        while True:
            pkt = _read_packet(conn, reader, deadline)
            if pkt is None:
                f.publish_error = ("disconnected", f"the broker closed the session after the PUBLISH to {f.topic}")
                return
            if pkt.type == mw.PUBACK:
                pid, f.puback = mw.parse_puback(pkt, f.protocol)
                if pid == 1:
                    break
            elif pkt.type == mw.DISCONNECT:
                code = pkt.body[0] if pkt.body else 0
                f.publish_error = ("disconnected", f"DISCONNECT {mw.reason_name(code)} after the PUBLISH to {f.topic}")
                return
        conn.sendall(mw.disconnect_packet())
    except TimeoutError:
        f.publish_error = ("timeout", f"no PUBACK within {f.timeout_s:g}s")
    except (OSError, mw.MalformedPacket) as e:
        f.publish_error = ("disconnected", f"the session ended on PUBLISH: {e}")


# ----- serial --------------------------------------------------------------------------------------------

def probe_serial(index: int, pc: PipelineConfig, timeout_s: float) -> SerialFacts:
    """Open the port exclusively (as the agent does), ask for a HELLO every 0.5 s until one comes or time ends."""
    import serial  # noqa: PLC0415

    from firmware_bridge import FrameDecoder, FrameEncoder, Hello, HelloRequest  # noqa: PLC0415

    src = pc.source
    assert isinstance(src, SerialSourceConfig)
    base: dict[str, Any] = {"stream": pc.stream, "key": f"pipeline[{index}].source.port", "port": src.port,
                            "baudrate": src.baudrate, "sensor_id": src.sensor_id, "timeout_s": timeout_s,
                            "uid": os.geteuid()}
    if not os.path.exists(src.port):
        return SerialFacts(exists=False, **base)
    try:
        ser = serial.Serial(src.port, src.baudrate, timeout=0.05, write_timeout=1.0, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as e:
        text = str(e)
        err = getattr(e, "errno", None)
        if err in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
            kind = "permission"
        elif "exclusively lock" in text or err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
            kind = "locked"
        else:
            kind = "error"
        return SerialFacts(exists=True, open_error=(kind, text), **base)
    decoder = FrameDecoder()
    encoder = FrameEncoder()
    seen = 0
    try:
        deadline = time.monotonic() + timeout_s
        next_ask = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_ask:
                try:
                    ser.write(encoder.encode(HelloRequest()))
                except (serial.SerialException, OSError):
                    pass
                next_ask = now + 0.5
            try:
                data = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError) as e:
                return SerialFacts(exists=True, open_error=("error", str(e)), bytes_seen=seen, **base)
            if not data:
                continue
            seen += len(data)
            for frame in decoder.feed(data):
                if isinstance(frame, Hello):
                    v = ".".join(str(x) for x in frame.fw_version)
                    return SerialFacts(exists=True, hello_sensors=tuple(s.sensor_id for s in frame.sensors),
                                       fw_version=v, bytes_seen=seen, frame_errors=decoder.stats.error_total,
                                       **base)
        return SerialFacts(exists=True, bytes_seen=seen, frame_errors=decoder.stats.error_total, **base)
    finally:
        ser.close()


# ----- model ---------------------------------------------------------------------------------------------

def probe_model(index: int, pc: PipelineConfig) -> CheckResult:
    from agent.doctor.verdicts import judge_model  # noqa: PLC0415
    from agent.model_meta import load_model_meta  # noqa: PLC0415

    key = f"pipeline[{index}].model"
    exists = os.path.isfile(pc.model)
    meta_error = None
    want = None
    got = None
    if exists:
        try:
            meta = load_model_meta(pc.metadata)
            want = meta.sha256
        except (OSError, ValueError) as e:
            meta_error = str(e)
        h = hashlib.sha256()
        with open(pc.model, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        got = h.hexdigest()
    return judge_model(pc.stream, key, pc.model, pc.metadata, exists=exists, meta_error=meta_error, want=want,
                       got=got)


# ----- outbox disk and wear ------------------------------------------------------------------------------

def probe_disk(cfg: AgentConfig) -> DiskFacts:
    """Free space at the outbox and a real write (64 KiB, fsynced, removed): statvfs alone misses a read-only
    mount, a quota and reserved blocks."""
    from agent.metrics import disk_free_bytes, outbox_file_bytes  # noqa: PLC0415

    directory = os.path.dirname(os.path.abspath(cfg.outbox.path))
    if not os.path.isdir(directory):
        return DiskFacts(directory, False, uid=os.geteuid())
    free = disk_free_bytes(directory)
    write_error = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".doctor-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"\0" * 65536)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            os.unlink(tmp)
    except OSError as e:
        kind = "full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "denied"
        write_error = (kind, f"a 64 KiB test write failed: {e.strerror}")
    return DiskFacts(directory, True, free_bytes=free, outbox_file_bytes=outbox_file_bytes(cfg.outbox.path),
                     max_bytes=cfg.outbox.max_bytes, write_error=write_error, uid=os.geteuid())


def probe_wear(cfg: AgentConfig, status: Mapping[str, Any] | None) -> tuple[float | None, str, bool]:
    """Bytes written per day: the running agent's own writes (its I/O counters since it started; ``own``
    True), else the outbox's block device since boot (everything on the host). (None, why, False) when
    neither can be read."""
    import psutil  # noqa: PLC0415

    if status is not None and not status.get("stale"):
        try:
            proc = psutil.Process(int(status["pid"]))
            io = proc.io_counters()
            age = max(60.0, time.time() - proc.create_time())
            return io.write_bytes * 86400.0 / age, f"the agent (pid {proc.pid}, over {age / 3600:.1f} h)", True
        except (psutil.Error, OSError, KeyError, ValueError, AttributeError):
            pass
    directory = os.path.dirname(os.path.abspath(cfg.outbox.path))
    try:
        dev = os.stat(directory).st_dev
        sys_dir = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
        fields = (sys_dir / "stat").read_text().split()
        sectors = int(fields[6])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        name = sys_dir.resolve().name
        return sectors * 512 * 86400.0 / max(60.0, uptime), f"everything on {name}, the outbox's disk (since boot)", \
            False
    except (OSError, ValueError, IndexError):
        return None, f"the agent is not running and {directory} is not on a block device with statistics", False


# ----- systemd and the running agent ---------------------------------------------------------------------

def probe_systemd(unit: str, timeout_s: float) -> tuple[dict[str, str] | None, str]:
    """``systemctl show`` of the unit; (None, why) when the host does not run systemd."""
    if not os.path.isdir("/run/systemd/system"):
        return None, "this host is not running systemd (no /run/systemd/system)"
    exe = shutil.which("systemctl")
    if exe is None:
        return None, "systemctl is not installed"
    try:
        r = subprocess.run([exe, "show", unit, "--property=" + ",".join(SYSTEMD_PROPS)], capture_output=True,
                           text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"systemctl show failed: {e}"
    if r.returncode != 0:
        return None, f"systemctl show {unit}: {r.stderr.strip() or r.returncode}"
    return parse_systemctl_show(r.stdout), ""


def parse_systemctl_show(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def read_status_doc(cfg: AgentConfig) -> tuple[dict[str, Any] | None, str]:
    from agent.status import read_status  # noqa: PLC0415

    try:
        return read_status(cfg.status.path), ""
    except FileNotFoundError:
        return None, f"no status file at {cfg.status.path}"
    except PermissionError:
        return None, f"cannot read {cfg.status.path} as uid {os.geteuid()}"
    except (OSError, ValueError, json.JSONDecodeError) as e:
        return None, f"unreadable status file {cfg.status.path}: {e}"
