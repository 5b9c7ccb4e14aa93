"""Publish results to an MQTT broker: Home Assistant sensors, a fleet's dashboard, Node-RED.

``fer-device run ... --mqtt mqtt://[user@]host[:port]`` (``mqtts://`` for TLS)
publishes under a prefix (``--mqtt-topic``, default ``fer-edge/<device id>``)::

    <prefix>/state         {"dominant", "faces", "shares": {class: percent}}   retained, on change,
                           at most every --mqtt-interval seconds
    <prefix>/faces         the faces of one frame (id, box, label, confidence,
                           probabilities), at most --mqtt-faces-rate a second  not retained
    <prefix>/summary       the log's per-minute record, and the run summary at the end
    <prefix>/availability  online / offline (the broker sends offline as the last will)  retained
    homeassistant/sensor/fer-edge-<id>/<sensor>/config   discovery configs   retained

docs/mqtt.md shows one real message of each. Three parts, so that the frame
loop never waits on the network:

- `Reporter` runs on the frame loop (inside `MqttSink.__call__`): it counts,
  decides what is due and puts small tuples on a `DropOldestQueue`. It never
  encodes JSON nor touches a socket.
- `Publisher` owns the paho-mqtt client on its own thread: it turns queued
  items into payloads and publishes them while connected. paho's network
  thread (``loop_start``) reconnects with backoff (``reconnect_delay_set``);
  meanwhile the queue keeps the newest ``--mqtt-queue`` messages and counts
  the ones it drops.
- `MqttSink` glues them to the pipeline's sink protocol and reports what MQTT
  did (connections, published, dropped) for the run summary and the log's
  end record.

A broker that refuses the login ends the run (retrying cannot fix a wrong
password): the sink sets the run's stop flag and `MqttSink.error` says why.
paho-mqtt comes from the optional ``mqtt`` extra and is imported only when
``--mqtt`` is given. The password comes from ``$FER_EDGE_MQTT_PASSWORD`` or
``--mqtt-password-file``, never from the command line, and is never printed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from urllib.parse import unquote, urlsplit

from fer_edge import __version__
from fer_edge.device.pipeline import FrameResult, RunSummary
from fer_edge.device.sinks import _MinuteCounts, iso_time, minute_record
from fer_edge.device.sources import StopFlag
from fer_edge.device.track import TrackedFace
from fer_edge.errors import FerEdgeError
from fer_edge.labels import DISPLAY

PASSWORD_ENV = "FER_EDGE_MQTT_PASSWORD"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
HA_DISCOVERY_PREFIX = "homeassistant"
INSTALL_HINT = "pip install 'fer-edge[mqtt]'"
#: CONNACK reason codes a retry cannot fix: protocol, client id, user name or password, not authorised, auth method.
FATAL_CONNACK = {132, 133, 134, 135, 140}
KEEPALIVE_S = 30
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30
CLOSE_TIMEOUT_S = 5.0
_ID_CHARS = re.compile(r"[^a-z0-9_-]+")


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class MqttTarget:
    """Where to connect; `url` is the display form, which never holds the password."""

    url: str
    host: str
    port: int
    tls: bool
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)


def parse_mqtt_url(url: str, password_file: Optional[Path] = None,
                   environ: Optional[dict[str, str]] = None) -> MqttTarget:
    """``mqtt://[user@]host[:port]`` or ``mqtts://...``; the password from `password_file` or the environment."""
    environ = os.environ if environ is None else environ
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise FerEdgeError(f"--mqtt {url!r}: use mqtt://[user@]host[:port] or mqtts://... for TLS")
    if parts.password is not None:
        raise FerEdgeError(f"--mqtt: put the password in ${PASSWORD_ENV} or --mqtt-password-file, "
                           "never on the command line (it shows in ps and shell history)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise FerEdgeError(f"--mqtt {url!r}: give only [user@]host[:port]; the topic prefix is --mqtt-topic")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise FerEdgeError(f"--mqtt {url!r}: the port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise FerEdgeError(f"--mqtt {url!r}: no host name")
    username = unquote(parts.username) if parts.username else None
    password: Optional[str] = None
    if password_file is not None:
        try:
            password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise FerEdgeError(f"{password_file}: cannot read the MQTT password file: {exc.strerror or exc}") from None
    elif environ.get(PASSWORD_ENV):
        password = environ[PASSWORD_ENV]
    if password is not None and username is None:
        raise FerEdgeError(f"--mqtt {url!r}: a password was given but no user name (mqtt://USER@host)")
    host = parts.hostname
    shown_host = f"[{host}]" if ":" in host else host
    shown = f"{scheme}://{parts.username + '@' if parts.username else ''}{shown_host}:{port}"
    return MqttTarget(shown, host, port, scheme == "mqtts", username, password)


def device_id_from_hostname(hostname: Optional[str] = None) -> str:
    """A topic- and Home-Assistant-safe id ([a-z0-9_-]) from the host name, e.g. ``kitchen-pi``."""
    name = (hostname if hostname is not None else socket.gethostname()).split(".")[0].lower()
    return _ID_CHARS.sub("-", name).strip("-") or "device"


@dataclass(frozen=True)
class MqttSettings:
    """Everything ``--mqtt*`` decides, checked before any model or camera is opened."""

    target: MqttTarget
    device_id: str
    prefix: str
    interval: float = 1.0
    faces_rate: float = 2.0
    queue_size: int = 1000
    ha_discovery: bool = True
    ca: Optional[Path] = None
    cert: Optional[Path] = None
    key: Optional[Path] = None

    @property
    def client_id(self) -> str:
        return f"fer-edge-{self.device_id}"

    def topic(self, name: str) -> str:
        return f"{self.prefix}/{name}"


def mqtt_settings(url: str, topic: Optional[str] = None, device_id: Optional[str] = None, interval: float = 1.0,
                  faces_rate: float = 2.0, queue_size: int = 1000, ha_discovery: bool = True,
                  password_file: Optional[Path] = None, ca: Optional[Path] = None, cert: Optional[Path] = None,
                  key: Optional[Path] = None) -> MqttSettings:
    """Check the ``--mqtt*`` options and that paho-mqtt is installed; a `FerEdgeError` names what is wrong."""
    import_paho()
    target = parse_mqtt_url(url, password_file)
    if device_id is not None and (not device_id or re.search(r"[^A-Za-z0-9_-]", device_id)):
        raise FerEdgeError(f"--mqtt-device-id {device_id!r}: use letters, digits, '_' and '-' only")
    device_id = device_id or device_id_from_hostname()
    prefix = (topic if topic is not None else f"fer-edge/{device_id}").strip("/")
    if not prefix or any(c in prefix for c in "+#\0"):
        raise FerEdgeError(f"--mqtt-topic {topic!r}: a topic prefix must be non-empty, without '+' or '#'")
    if (ca or cert or key) and not target.tls:
        raise FerEdgeError("--mqtt-ca/--mqtt-cert/--mqtt-key need an mqtts:// broker URL")
    if (cert is None) != (key is None):
        raise FerEdgeError("--mqtt-cert and --mqtt-key go together (the client certificate and its key)")
    for path, what in ((ca, "--mqtt-ca"), (cert, "--mqtt-cert"), (key, "--mqtt-key")):
        if path is not None and not Path(path).is_file():
            raise FerEdgeError(f"{path}: {what} file not found")
    return MqttSettings(target, device_id, prefix, interval, faces_rate, queue_size, ha_discovery, ca, cert, key)


def import_paho() -> Any:
    """paho-mqtt's client module, or a one-line error naming the extra to install."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise FerEdgeError(f"--mqtt needs paho-mqtt 2.x: {INSTALL_HINT}") from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise FerEdgeError(f"--mqtt needs paho-mqtt 2.x (found an older one): {INSTALL_HINT}")
    return mqtt


# --------------------------------------------------------------------------- the queue


class DropOldestQueue:
    """A bounded FIFO that drops its oldest item when full and counts the drops.

    `put` is called by the frame loop and never blocks; `pop` by the
    publisher thread. ``deque`` appends and pops are atomic, so no lock is
    needed beyond the event that wakes the publisher.
    """

    def __init__(self, size: int) -> None:
        self._items: deque = deque(maxlen=size)
        self.dropped = 0
        self.wake = threading.Event()

    def put(self, item: tuple) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1  # the append below pushes the oldest out
        self._items.append(item)
        self.wake.set()

    def pop(self) -> Optional[tuple]:
        try:
            return self._items.popleft()
        except IndexError:
            return None

    def put_back(self, item: tuple) -> None:
        """Return an item that could not be sent to the front (unless newer ones filled the queue)."""
        if len(self._items) < self._items.maxlen:
            self._items.appendleft(item)
        else:
            self.dropped += 1

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------- frame loop side


class Reporter:
    """Decides, frame by frame, which messages are due; cheap enough for the frame loop.

    State: label counts of the faces seen since the last check make the
    shares (percent of face observations) and the dominant emotion; the face
    count is the current frame's. It is checked at most every `interval`
    seconds and queued only when it changed. Faces: the current frame's, at
    most `faces_rate` a second, while faces are in view (plus one empty
    message when the last face leaves). Summary: the log's per-minute counts
    (the same `_MinuteCounts`) and, at the end, the run summary.
    """

    def __init__(self, classes: Sequence[str], queue: DropOldestQueue, interval: float = 1.0,
                 faces_rate: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.classes = tuple(classes)
        self.queue = queue
        self.interval = interval
        self.faces_period = 1.0 / faces_rate if faces_rate > 0 else None
        self.clock = clock
        self._minutes = _MinuteCounts()
        self._counts = dict.fromkeys(self.classes, 0)
        self._seen = 0
        self._next_state = float("-inf")
        self._last_state: Optional[tuple] = None
        self._next_faces = float("-inf")
        self._faces_in_view = False

    def __call__(self, result: FrameResult) -> None:
        finished = self._minutes.update(result)
        if finished:
            self.queue.put(("summary", minute_record(*finished, self.classes)))
        faces = result.faces
        for face in faces:
            self._counts[face.label] = self._counts.get(face.label, 0) + 1
        self._seen += len(faces)
        now = self.clock()
        if now >= self._next_state:
            self._next_state = now + self.interval
            self._check_state(result.timestamp, len(faces))
        if self.faces_period is not None and (faces or self._faces_in_view) and now >= self._next_faces:
            self._next_faces = now + self.faces_period
            self._faces_in_view = bool(faces)
            self.queue.put(("faces", result.index, result.timestamp, result.size, faces))

    def _check_state(self, timestamp: float, faces: int) -> None:
        seen = self._seen
        shares = {c: round(100 * n / seen) if seen else 0 for c, n in self._counts.items()}
        dominant = max(self._counts, key=self._counts.__getitem__) if seen else "none"
        key = (dominant, faces, tuple(shares.values()))
        if key != self._last_state:
            self._last_state = key
            self.queue.put(("state", {"time": iso_time(timestamp), "ts": round(timestamp, 3), "dominant": dominant,
                                      "faces": faces, "shares": shares}))
        self._counts = dict.fromkeys(self._counts, 0)
        self._seen = 0

    def finish(self, summary: RunSummary) -> None:
        """Queue the last (partial) minute and the run summary."""
        finished = self._minutes.flush()
        if finished:
            self.queue.put(("summary", minute_record(*finished, self.classes)))
        now = time.time()
        self.queue.put(("summary", {"type": "end", "time": iso_time(now), "ts": round(now, 3), **summary.to_dict()}))


# --------------------------------------------------------------------------- Home Assistant


@dataclass(frozen=True)
class DeviceInfo:
    """What Home Assistant shows on the device page."""

    model: str
    bundle_sha256: str
    sw_version: str = __version__


def discovery_configs(settings: MqttSettings, classes: Sequence[str], device: DeviceInfo) -> list[tuple[str, str]]:
    """(topic, JSON payload) of each Home Assistant sensor: the dominant emotion, the face count, each share.

    One config per sensor under ``homeassistant/sensor/fer-edge-<id>/<sensor>/config``,
    all naming the same device, so Home Assistant groups them on one page.
    """
    node = settings.client_id
    common = {
        "state_topic": settings.topic("state"),
        "availability_topic": settings.topic("availability"),
        "device": {"identifiers": [node], "name": f"fer-edge {settings.device_id}", "manufacturer": "fer-edge",
                   "model": device.model, "sw_version": device.sw_version,
                   "hw_version": f"bundle {device.bundle_sha256[:12]}"},
        "origin": {"name": "fer-edge", "sw_version": device.sw_version},
        "has_entity_name": True,
    }
    sensors: list[tuple[str, dict[str, Any]]] = [
        ("emotion", {"name": "Emotion", "value_template": "{{ value_json.dominant }}", "device_class": "enum",
                     "options": [*classes, "none"], "icon": "mdi:emoticon-outline"}),
        ("faces", {"name": "Faces", "value_template": "{{ value_json.faces }}", "state_class": "measurement",
                   "icon": "mdi:account-group"}),
    ]
    for name in classes:
        sensors.append((f"{name}_share", {
            "name": f"{DISPLAY.get(name, name.capitalize())} share",
            "value_template": f"{{{{ value_json.shares.{name} }}}}", "unit_of_measurement": "%",
            "state_class": "measurement", "icon": "mdi:percent"}))
    return [(f"{HA_DISCOVERY_PREFIX}/sensor/{node}/{object_id}/config",
             json.dumps({**config, "unique_id": f"{node}-{object_id}", **common}, separators=(",", ":")))
            for object_id, config in sensors]


# --------------------------------------------------------------------------- publisher thread


@dataclass
class MqttStats:
    """What MQTT did in a run: the end-of-run summary, the log's end record and ``fer-device info`` show it."""

    broker: str
    connections: int = 0
    published: int = 0
    dropped: int = 0
    unsent: int = 0
    connected_at_end: bool = False
    last_error: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"broker": self.broker, "connected": self.connections > 0, "connections": self.connections,
                "published": self.published, "dropped": self.dropped, "unsent": self.unsent,
                "connected_at_end": self.connected_at_end, "last_error": self.last_error}


def format_mqtt_stats(stats: dict[str, Any]) -> str:
    """One line: ``mqtt://host:1883: connected (1 connection), 153 published, 0 dropped, 0 unsent``."""
    n = stats.get("connections", 0)
    head = (f"connected ({n} connection{'s' if n != 1 else ''})" if stats.get("connected")
            else "never connected")
    line = (f"{stats.get('broker')}: {head}, {stats.get('published', 0)} published, {stats.get('dropped', 0)} dropped "
            f"(queue full), {stats.get('unsent', 0)} unsent at the end")
    if stats.get("last_error"):
        line += f"; last error: {stats['last_error']}"
    return line


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__


class Publisher:
    """Owns the paho client: publishes what the queue holds while connected; paho reconnects with backoff.

    Two threads: this one (``fer-edge-mqtt``) drains the queue, encodes and
    publishes; paho's network thread (``loop_start``) does the socket I/O,
    keep-alives and reconnects, and calls the ``_on_*`` callbacks. On each
    connection this thread announces ``online``, the discovery configs and
    the last state again (before the queued messages), since a restarted
    broker may have lost its retained ones. paho holds at most
    ``--mqtt-queue`` unacknowledged QoS 1 messages and refuses more
    (``MQTT_ERR_QUEUE_SIZE``); whatever it refuses waits here until its
    PUBACKs make room, so nothing of the announcement is lost, even with a
    queue smaller than the announcement.
    """

    def __init__(self, settings: MqttSettings, classes: Sequence[str], queue: DropOldestQueue,
                 discovery: Sequence[tuple[str, str]], stop: Optional[StopFlag] = None,
                 say: Callable[[str], None] = lambda line: None) -> None:
        mqtt = import_paho()
        self._mqtt = mqtt
        self.settings = settings
        self.classes = tuple(classes)
        self.queue = queue
        self.discovery = list(discovery)
        self.stop = stop
        self.say = say
        self.stats = MqttStats(settings.target.url)
        self.error: Optional[FerEdgeError] = None
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._last_state: Optional[str] = None
        self._announce_due = threading.Event()  # set on each connection: announce before draining the queue
        self._announcement: list[tuple[str, str]] = []  # (topic, payload) still to send, all qos 1, retained
        self._waiting_for_room = False  # paho's store was full: wake this thread on the next PUBACK
        self._lost_said = False
        self._thread = threading.Thread(target=self._run, name="fer-edge-mqtt", daemon=True)
        self._client = self._make_client()

    def _make_client(self) -> Any:
        mqtt, s = self._mqtt, self.settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id)
        if s.target.username:
            client.username_pw_set(s.target.username, s.target.password)
        if s.target.tls:
            try:
                client.tls_set(ca_certs=str(s.ca) if s.ca else None, certfile=str(s.cert) if s.cert else None,
                               keyfile=str(s.key) if s.key else None)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a bad PEM file
                raise FerEdgeError(f"--mqtt TLS files: {_reason(exc)}") from None
        client.will_set(s.topic("availability"), "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        client.max_queued_messages_set(s.queue_size)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def start(self) -> None:
        self._thread.start()

    # paho's network thread -------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.stats.last_error = f"refused: {reason_code}"
            if reason_code.value in FATAL_CONNACK:
                self.error = FerEdgeError(
                    f"{self.settings.target.url} refused the login ({reason_code}): check the user in --mqtt and "
                    f"the password in ${PASSWORD_ENV} or --mqtt-password-file")
                if self.stop is not None:
                    self.stop.set("the MQTT broker refused the login")
                client.disconnect()  # stops paho's reconnect loop: retrying cannot fix this
                self._closing.set()
                self.queue.wake.set()
            return
        self.stats.connections += 1
        if self.stats.connections > 1 or self._lost_said:
            self.say(f"mqtt: connected to {self.settings.target.url} again")
        self._lost_said = False
        # Not published here: on this thread no PUBACK can come in meanwhile, so paho's
        # store (--mqtt-queue messages) would refuse whatever does not fit, for good.
        self._announce_due.set()
        self._connected.set()
        self.queue.wake.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self.stats.last_error = self.stats.last_error or "cannot connect"
        if not self._lost_said:
            self._lost_said = True
            self.say(f"mqtt: cannot reach {self.settings.target.url}; retrying in the background, "
                     f"the log goes on (up to {self.settings.queue_size} messages wait)")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._closing.is_set():
            return
        if was_connected:
            self.stats.last_error = f"connection lost ({reason_code})"
            self._lost_said = True
            self.say(f"mqtt: lost {self.settings.target.url} ({reason_code}); reconnecting in the background, "
                     f"the log goes on (up to {self.settings.queue_size} messages wait)")
        elif not self._lost_said:  # connected at TCP level, but no CONNACK within the keep-alive
            self.stats.last_error = f"no answer ({reason_code})"
            self._lost_said = True
            self.say(f"mqtt: no answer from {self.settings.target.url} ({reason_code}); retrying in the background, "
                     f"the log goes on (up to {self.settings.queue_size} messages wait)")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self.stats.published += 1
        if self._waiting_for_room:  # a slot in paho's store is free again
            self._waiting_for_room = False
            self.queue.wake.set()

    # this thread -----------------------------------------------------------

    def _run(self) -> None:
        client, target = self._client, self.settings.target
        try:
            client.connect(target.host, target.port, KEEPALIVE_S)
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS handshake, unknown host
            self.stats.last_error = _reason(exc)
            self._lost_said = True
            self.say(f"mqtt: cannot connect to {target.url}: {_reason(exc)}; retrying in the background, "
                     f"the log goes on")
            client.connect_async(target.host, target.port, KEEPALIVE_S)
        client.loop_start()
        try:
            while not self._closing.is_set():
                self.queue.wake.wait(0.5)
                self.queue.wake.clear()
                self._drain()
            if self.error is None:
                self._goodbye()
        finally:
            client.loop_stop()

    def _drain(self) -> bool:
        """Announce first if a connection is new, then publish the queued items; True once paho took them all."""
        if not self._announce():
            return False
        while self._connected.is_set():
            item = self.queue.pop()
            if item is None:
                return True
            topic, payload, qos, retain = self._encode(item)
            if self._publish(topic, payload, qos, retain) is None:  # keep it for later
                self.queue.put_back(item)
                return False
            if item[0] == "state":
                self._last_state = payload
        return False

    def _announce(self) -> bool:
        """Send ``online``, the discovery configs and the last state after each connect; False while some wait."""
        if self._announce_due.is_set():
            self._announce_due.clear()
            s = self.settings
            self._announcement = [(s.topic("availability"), "online"), *(self.discovery if s.ha_discovery else [])]
            if self._last_state is not None:
                self._announcement.append((s.topic("state"), self._last_state))
        while self._announcement and self._connected.is_set():
            topic, payload = self._announcement[0]
            if self._publish(topic, payload, 1, True) is None:
                return False
            self._announcement.pop(0)
        return not self._announcement

    def _publish(self, topic: str, payload: str, qos: int, retain: bool) -> Optional[Any]:
        """Hand one message to paho: its ``MQTTMessageInfo``, or None if paho did not take it.

        Not taken: paho's store is full (``MQTT_ERR_QUEUE_SIZE``), or a qos 0
        message while the connection is gone. A qos 1 message published
        while the connection is gone (``MQTT_ERR_NO_CONN``) is taken: paho
        keeps it and sends it after the reconnect.
        """
        self._waiting_for_room = True  # before publishing, so that a PUBACK racing the refusal still wakes us
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
            return None
        self._waiting_for_room = False
        taken = info.rc == self._mqtt.MQTT_ERR_SUCCESS or (info.rc == self._mqtt.MQTT_ERR_NO_CONN and qos > 0)
        return info if taken else None

    def _goodbye(self) -> None:
        """Send what is queued, then ``offline``, and wait (boundedly) for the broker to take them."""
        if not self._connected.is_set():
            return
        deadline = time.monotonic() + CLOSE_TIMEOUT_S - 1
        offline = None
        while offline is None and self._connected.is_set() and time.monotonic() < deadline:
            if self._drain():
                offline = self._publish(self.settings.topic("availability"), "offline", 1, True)
            if offline is None:  # paho's store is full: a PUBACK makes room
                self.queue.wake.wait(0.1)
                self.queue.wake.clear()
        try:
            if offline is not None:
                offline.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except (RuntimeError, ValueError):  # not sent: the connection went
            pass
        self.stats.connected_at_end = self._connected.is_set()
        self._closing.set()
        self._client.disconnect()

    def _encode(self, item: tuple) -> tuple[str, str, int, bool]:
        kind = item[0]
        if kind == "faces":
            _, index, timestamp, size, faces = item
            record = {"time": iso_time(timestamp), "ts": round(timestamp, 3), "frame": index,
                      "width": size[0], "height": size[1], "faces": [self._face(f) for f in faces]}
            return self.settings.topic("faces"), json.dumps(record, separators=(",", ":")), 0, False
        payload = json.dumps(item[1], separators=(",", ":"))
        if kind == "state":
            return self.settings.topic("state"), payload, 1, True
        return self.settings.topic("summary"), payload, 1, False

    def _face(self, face: TrackedFace) -> dict[str, Any]:
        return {"id": face.track_id, "box": list(face.box.as_ints()), "label": face.label,
                "confidence": round(face.confidence, 4),
                "probs": {c: round(p, 4) for c, p in zip(self.classes, face.probs)}}

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> MqttStats:
        """Finish: flush and say offline if connected (at most `timeout` s); the stats of the run."""
        self._closing.set()
        self.queue.wake.set()
        if self._thread.is_alive():  # not connected: nothing to flush, so do not wait on a connect attempt
            self._thread.join(timeout if self._connected.is_set() else min(timeout, 1.0))
        self.stats.dropped = self.queue.dropped
        self.stats.unsent = len(self.queue)
        return self.stats


# --------------------------------------------------------------------------- the sink


class MqttSink:
    """The pipeline's MQTT sink: `Reporter` on the frame loop, `Publisher` on its own thread.

    `finish` (or `close`) sends the last minute and the run summary, says
    ``offline`` and returns the summary with what MQTT did in its ``mqtt``
    field. `error` is set when the broker refused the login; the run was
    stopped through `stop` and the caller reports it.
    """

    needs_image = False
    stage = "log"  # its per-frame cost (a few dict updates) shows in the log stage's time

    def __init__(self, settings: MqttSettings, classes: Sequence[str], device: DeviceInfo,
                 stop: Optional[StopFlag] = None, say: Callable[[str], None] = lambda line: None) -> None:
        self.settings = settings
        self.queue = DropOldestQueue(settings.queue_size)
        self.reporter = Reporter(classes, self.queue, settings.interval, settings.faces_rate)
        discovery = discovery_configs(settings, classes, device) if settings.ha_discovery else []
        self.publisher = Publisher(settings, classes, self.queue, discovery, stop, say)
        self.publisher.start()
        self._stats: Optional[dict[str, Any]] = None

    def __call__(self, result: FrameResult) -> None:
        self.reporter(result)

    @property
    def error(self) -> Optional[FerEdgeError]:
        return self.publisher.error

    def finish(self, summary: RunSummary) -> RunSummary:
        """Close (once) and return `summary` with the MQTT stats in it."""
        if self._stats is None:
            if self.publisher.error is None:
                self.reporter.finish(summary)
            self._stats = self.publisher.close().to_dict()
        return replace(summary, mqtt=self._stats)

    def close(self, summary: Optional[RunSummary] = None) -> None:
        if self._stats is None and summary is not None:
            self.finish(summary)
        elif self._stats is None:
            self._stats = self.publisher.close().to_dict()


def mqtt_facts() -> dict[str, Any]:
    """Whether the ``mqtt`` extra is installed, and paho-mqtt's version (found, not imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found: Optional[str] = version("paho-mqtt")
    except PackageNotFoundError:
        found = None
    return {"paho_mqtt": found, "usable": bool(found and int(found.split(".")[0]) >= 2), "install": INSTALL_HINT}
