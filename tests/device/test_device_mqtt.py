"""``fer-device run --mqtt``: the message logic on its own, then whole runs against a real Mosquitto.

The broker tests start ``mosquitto`` on a free 127.0.0.1 port with their own
config (tests/device/mqtt_broker.py), run the real ``fer-device`` on the demo
clip and listen with a real paho subscriber. They skip only where Mosquitto
(or, for TLS, the openssl command) is not installed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mqtt_broker import Broker, Subscriber, make_test_ca, retained

from fer_edge.device.boxes import Box
from fer_edge.device.info import format_mqtt_facts, last_run_summary, mqtt_run_facts
from fer_edge.device.mqtt import (PASSWORD_ENV, DeviceInfo, DropOldestQueue, Reporter, device_id_from_hostname,
                                  discovery_configs, mqtt_settings, parse_mqtt_url)
from fer_edge.device.pipeline import STAGES, FrameResult, RunSummary
from fer_edge.device.sinks import open_log
from fer_edge.device.track import TrackedFace
from fer_edge.errors import FerEdgeError
from fer_edge.labels import FER2013_CLASSES

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed: pip install 'fer-edge[mqtt]'")

_SCRIPT = Path(sys.executable).with_name("fer-device")
FER_DEVICE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "fer_edge.device.cli"]
DEMO = ["run", "--source", "demo", "--headless", "--threads", "1", "--resolution", "320x240"]
CLASSES = FER2013_CLASSES


def _fer_device(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*FER_DEVICE, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]  # every line complete


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    return {**env, **extra}


# --------------------------------------------------------------------------- settings


def test_url_password_device_id_and_topic_checks(tmp_path) -> None:
    plain = parse_mqtt_url("mqtt://broker.lan", environ={})
    assert (plain.host, plain.port, plain.tls, plain.username, plain.password) == ("broker.lan", 1883, False, None,
                                                                                   None)
    tls = parse_mqtt_url("mqtts://pi@broker.lan:8884", environ={PASSWORD_ENV: "s3cret"})
    assert (tls.port, tls.tls, tls.username, tls.password) == (8884, True, "pi", "s3cret")
    assert "s3cret" not in tls.url and "s3cret" not in repr(tls)
    secret = tmp_path / "mqtt.pass"
    secret.write_text("from-file\n")
    assert parse_mqtt_url("mqtt://pi@h", secret, environ={PASSWORD_ENV: "env"}).password == "from-file"

    with pytest.raises(FerEdgeError, match=PASSWORD_ENV) as err:
        parse_mqtt_url("mqtt://pi:hunter2@h", environ={})
    assert "hunter2" not in str(err.value)
    for bad, why in (("http://h", "mqtt://"), ("mqtt://h:99999", "port"), ("mqtt://h/topic", "--mqtt-topic")):
        with pytest.raises(FerEdgeError, match=why):
            parse_mqtt_url(bad, environ={})
    with pytest.raises(FerEdgeError, match="no user name"):
        parse_mqtt_url("mqtt://h", environ={PASSWORD_ENV: "x"})
    with pytest.raises(FerEdgeError, match="password file"):
        parse_mqtt_url("mqtt://pi@h", tmp_path / "missing", environ={})

    assert device_id_from_hostname("Kitchen Pi.local") == "kitchen-pi"
    assert device_id_from_hostname("...") == "device"
    assert mqtt_settings("mqtt://h", device_id="door_2").prefix == "fer-edge/door_2"
    assert mqtt_settings("mqtt://h", topic="/home/cam/").prefix == "home/cam"
    for url, kwargs, why in (("mqtt://h", {"device_id": "a b"}, "letters"), ("mqtt://h", {"topic": "a/#"}, "'#'"),
                             ("mqtt://h", {"ca": tmp_path / "ca.pem"}, "mqtts://"),
                             ("mqtts://h", {"cert": tmp_path / "c.pem"}, "together"),
                             ("mqtts://h", {"ca": tmp_path / "ca.pem"}, "not found")):
        with pytest.raises(FerEdgeError, match=why):
            mqtt_settings(url, **kwargs)


def test_without_paho_the_error_names_the_extra(tmp_path) -> None:
    blocker = tmp_path / "no_paho"
    blocker.mkdir()
    # Imported by Python at start-up (site), before fer-device: `import paho` then fails as if not installed.
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['paho'] = None\n")
    done = _fer_device(*DEMO, "--mqtt", "mqtt://127.0.0.1", env=_env(PYTHONPATH=str(blocker)))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --mqtt needs paho-mqtt 2.x: pip install 'fer-edge[mqtt]'"]
    info = _fer_device("info", env=_env(PYTHONPATH=str(blocker)))
    assert "mqtt:     paho-mqtt 2." in info.stdout  # installed, only blocked here: info looks without importing


# --------------------------------------------------------------------------- messages (no broker)


def _frame(index: int, ts: float, labels: tuple[str, ...]) -> FrameResult:
    faces = tuple(TrackedFace(i + 1, Box(10.0 * i, 0, 10.0 * i + 8, 8), 0.9, label, 0.8,
                              tuple(0.8 if c == label else 0.2 / 6 for c in CLASSES),
                              tuple(0.8 if c == label else 0.2 / 6 for c in CLASSES))
                  for i, label in enumerate(labels))
    return FrameResult(index, ts, "demo", (320, 240), faces, (), None, dict.fromkeys(STAGES, 0.0))


def test_queue_drops_the_oldest_and_counts() -> None:
    queue = DropOldestQueue(3)
    for i in range(5):
        queue.put(("faces", i))
    assert queue.dropped == 2 and [queue.pop() for _ in range(4)] == [("faces", 2), ("faces", 3), ("faces", 4), None]
    queue.put(("state", 1))
    queue.put_back(("state", 0))
    assert queue.pop() == ("state", 0) and len(queue) == 1


def test_state_on_change_at_most_every_interval_faces_capped_minute_summaries() -> None:
    clock = [0.0]
    queue = DropOldestQueue(100)
    reporter = Reporter(CLASSES, queue, interval=1.0, faces_rate=2.0, clock=lambda: clock[0])
    t0 = 60.0 * 1000
    script = [("happy",)] * 10 + [("happy", "sad")] * 10 + [()] * 10  # 0.1 s a frame
    for i, labels in enumerate(script):
        clock[0] = i / 10
        reporter(_frame(i, t0 + 58 + i / 10, labels))  # the wall-clock minute turns at frame 20
    reporter.finish(RunSummary(30, 3.0, 10.0, 30, 0, 0, {"happy": 20, "sad": 10}, {}, "end of source"))
    items = []
    while (item := queue.pop()) is not None:
        items.append(item)
    states = [i[1] for i in items if i[0] == "state"]
    # checked at 0, 1 and 2 s, over the faces seen since the check before: frame 0 alone (happy), frames 1-10
    # (ten happy, one sad), frames 11-20 (nine each; no face in frame 20); the face count is the frame's own
    assert [(s["dominant"], s["faces"]) for s in states] == [("happy", 1), ("happy", 2), ("happy", 0)]
    assert states[1]["shares"] == {**dict.fromkeys(CLASSES, 0), "happy": 91, "sad": 9}
    assert states[2]["shares"]["sad"] == 50 and states[2]["shares"]["happy"] == 50
    faces = [i for i in items if i[0] == "faces"]
    assert [f[1] for f in faces] == [0, 5, 10, 15, 20]  # 2 a second while faces are in view, one empty after
    assert [len(f[4]) for f in faces] == [1, 1, 2, 2, 0]
    summaries = [i[1] for i in items if i[0] == "summary"]
    assert [s["type"] for s in summaries] == ["minute", "minute", "end"]
    assert summaries[0]["frames"] + summaries[1]["frames"] == 30
    assert sum(summaries[0]["counts"].values()) + sum(summaries[1]["counts"].values()) == 30
    assert summaries[-1]["end_reason"] == "end of source"


def test_unchanged_state_is_not_sent_again() -> None:
    clock = [0.0]
    queue = DropOldestQueue(100)
    reporter = Reporter(CLASSES, queue, interval=0.5, faces_rate=0, clock=lambda: clock[0])
    for i in range(50):
        clock[0] = i * 0.1
        reporter(_frame(i, 1000.0 + i * 0.1, ("neutral",)))
    kinds = []
    while (item := queue.pop()) is not None:
        kinds.append(item[0])
    assert kinds == ["state"]  # the same state for 5 s: one retained message, no faces (rate 0)


def test_home_assistant_discovery_configs_make_one_device(tmp_path) -> None:
    settings = mqtt_settings("mqtt://h", device_id="hall")
    configs = discovery_configs(settings, CLASSES, DeviceInfo("Raspberry Pi 5", "ab" * 32))
    assert len(configs) == 2 + len(CLASSES)
    payloads = {topic: json.loads(payload) for topic, payload in configs}
    assert all(t.startswith("homeassistant/sensor/fer-edge-hall/") and t.endswith("/config") for t in payloads)
    assert len({p["unique_id"] for p in payloads.values()}) == len(configs)
    devices = {json.dumps(p["device"], sort_keys=True) for p in payloads.values()}
    assert len(devices) == 1
    device = json.loads(devices.pop())
    assert device["identifiers"] == ["fer-edge-hall"] and device["model"] == "Raspberry Pi 5"
    assert device["hw_version"] == "bundle " + "ab" * 6 and device["sw_version"]
    emotion = payloads["homeassistant/sensor/fer-edge-hall/emotion/config"]
    assert emotion["options"] == [*CLASSES, "none"] and emotion["state_topic"] == "fer-edge/hall/state"
    assert {p["availability_topic"] for p in payloads.values()} == {"fer-edge/hall/availability"}
    share = payloads["homeassistant/sensor/fer-edge-hall/happy_share/config"]
    assert share["value_template"] == "{{ value_json.shares.happy }}" and share["unit_of_measurement"] == "%"


def test_info_reads_the_last_runs_mqtt_stats_from_a_jsonl_or_csv_log(tmp_path) -> None:
    stats = {"broker": "mqtt://h:1883", "connected": True, "connections": 2, "published": 60, "dropped": 54,
             "unsent": 0, "connected_at_end": True, "last_error": "connection lost (Unspecified error)"}
    for name in ("run.jsonl", "run.csv"):
        log = open_log(tmp_path / name, CLASSES)
        for i in range(3):
            log(_frame(i, 1000.0 + i, ("happy",)))
        log.close(RunSummary(3, 1.0, 3.0, 3, 0, 0, {"happy": 3}, {}, "end of source"))  # an earlier run
        log = open_log(tmp_path / name, CLASSES)
        log.close(RunSummary(0, 1.0, 0.0, 0, 0, 0, {}, {}, "stopped", mqtt=stats))
        end = last_run_summary(tmp_path / name)
        assert end is not None and end["mqtt"] == stats and end["end_reason"] == "stopped"
        text = format_mqtt_facts(mqtt_run_facts(tmp_path / name))
        assert text[0].startswith("mqtt:     paho-mqtt 2.")
        assert text[1].endswith("mqtt://h:1883: connected (2 connections), 60 published, 54 dropped (queue full), "
                                "0 unsent at the end; last error: connection lost (Unspecified error)")
    assert last_run_summary(tmp_path / "run.jsonl", tail_bytes=10) is None  # only a cut line in reach
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert format_mqtt_facts(mqtt_run_facts(empty))[1].endswith("no finished run in this log")


# --------------------------------------------------------------------------- a real broker


def test_demo_run_publishes_discovery_availability_state_faces_and_summary(tmp_path, bundle) -> None:
    broker = Broker(tmp_path / "broker").start()
    try:
        sub = Subscriber(broker.port)
        log = tmp_path / "run.jsonl"
        done = _fer_device(*DEMO, "--max-frames", "30", "--fps", "15", "--log", str(log),
                           "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--mqtt-device-id", "test-pi",
                           "--mqtt-interval", "0.5", env=_env())
        assert done.returncode == 0, done.stderr
        sub.wait_for(lambda s: s.on("fer-edge/test-pi/availability")[-1:] and
                     s.on("fer-edge/test-pi/availability")[-1].payload == "offline", 10, "offline")
        sub.close()
        after = retained(broker.port, ("#",))
    finally:
        broker.stop()

    prefix = "fer-edge/test-pi"
    assert [m.payload for m in sub.on(f"{prefix}/availability")] == ["online", "offline"]
    configs = {m.topic: m.json() for m in sub.messages if m.topic.startswith("homeassistant/")}
    assert len(configs) == 2 + len(bundle.classes)
    device = configs["homeassistant/sensor/fer-edge-test-pi/emotion/config"]["device"]
    assert device["hw_version"] == f"bundle {bundle.checksum[:12]}" and device["identifiers"] == ["fer-edge-test-pi"]
    states = [m.json() for m in sub.on(f"{prefix}/state")]
    assert states and states[0]["faces"] == 1 and states[0]["dominant"] in bundle.classes
    assert set(states[0]["shares"]) == set(bundle.classes) and 99 <= sum(states[0]["shares"].values()) <= 101
    faces = [m.json() for m in sub.on(f"{prefix}/faces")]
    assert faces and len(faces) <= 10  # 2 a second over 2 s of demo
    face = faces[0]["faces"][0]
    assert face["label"] in face["probs"] and len(face["box"]) == 4 and face["id"] >= 1
    summaries = [m.json() for m in sub.on(f"{prefix}/summary")]
    assert summaries[-1]["type"] == "end" and summaries[-1]["frames"] == 30
    assert sum(s["frames"] for s in summaries if s["type"] == "minute") == 30

    # what a newcomer (Home Assistant starting later) gets: the configs, the last state, offline
    assert after[f"{prefix}/availability"].payload == "offline"
    assert after[f"{prefix}/state"].json() == states[-1]
    assert set(configs) <= set(after) and f"{prefix}/faces" not in after

    end = _records(log)[-1]
    assert end["type"] == "end" and end["mqtt"]["connected"] and end["mqtt"]["dropped"] == 0
    assert end["mqtt"]["published"] == len(sub.messages)  # everything the broker took, the subscriber got
    assert f"mqtt: mqtt://127.0.0.1:{broker.port}: connected (1 connection)" in done.stderr

    info = _fer_device("info", "--log", str(log), env=_env())
    assert f"{end['mqtt']['published']} published, 0 dropped" in info.stdout
    assert "paho-mqtt 2." in info.stdout


def test_password_from_a_file_and_wrong_credentials(tmp_path) -> None:
    broker = Broker(tmp_path / "broker", password=("pi", "right-pass")).start()
    try:
        good = tmp_path / "mqtt.pass"
        good.write_text("right-pass\n")
        url = f"mqtt://pi@127.0.0.1:{broker.port}"
        done = _fer_device(*DEMO, "--max-frames", "5", "--mqtt", url, "--mqtt-password-file", str(good), env=_env())
        assert done.returncode == 0, done.stderr
        assert "connected (1 connection)" in done.stderr and "right-pass" not in done.stderr

        log = tmp_path / "run.jsonl"
        refused = _fer_device(*DEMO, "--loop", "--log", str(log), "--mqtt", url,
                              env=_env(**{PASSWORD_ENV: "wrong-pass"}))
    finally:
        broker.stop()
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: mqtt://pi@127.0.0.1:{broker.port} refused the login (Not authorized): check the user "
                      f"in --mqtt and the password in ${PASSWORD_ENV} or --mqtt-password-file"]
    assert "wrong-pass" not in refused.stderr and "wrong-pass" not in log.read_text()
    records = _records(log)  # the run stopped in order: the log is whole
    assert records[0]["type"] == "start" and records[-1]["type"] == "end"
    assert records[-1]["end_reason"] == "the MQTT broker refused the login"
    assert not records[-1]["mqtt"]["connected"]


def test_broker_killed_mid_run_and_restarted(tmp_path, bundle) -> None:
    broker = Broker(tmp_path / "broker").start()
    log = tmp_path / "run.jsonl"
    prefix = "fer-edge/crash-test"
    proc = subprocess.Popen(
        [*FER_DEVICE, *DEMO, "--loop", "--fps", "20", "--duration", "14", "--log", str(log),
         "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--mqtt-device-id", "crash-test",
         "--mqtt-faces-rate", "10", "--mqtt-queue", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        sub = Subscriber(broker.port, (f"{prefix}/#",))
        sub.wait_for(lambda s: len(s.on(f"{prefix}/faces")) >= 3, 60, "faces before the crash")
        broker.kill()
        time.sleep(3)  # ~30 faces messages come due meanwhile; the queue keeps 5
        broker.start()
        restarted = time.monotonic()
        sub.wait_for(lambda s: any(m.at > restarted for m in s.on(f"{prefix}/faces")), 30, "faces after the restart")
        _, err = proc.communicate(timeout=60)
        sub.wait_for(lambda s: s.on(f"{prefix}/availability")[-1].payload == "offline", 10, "offline")
        sub.close()
        # the restarted broker (no persistence) holds only what the board sent it again after reconnecting
        kept = retained(broker.port, (f"{prefix}/#", "homeassistant/sensor/fer-edge-crash-test/#"))
    finally:
        if proc.poll() is None:
            proc.kill()
        broker.stop()
    assert proc.returncode == 0, err
    records = _records(log)
    end = records[-1]
    assert end["type"] == "end" and end["end_reason"] == "reached --duration 14 s"
    assert sum(r["type"] == "face" for r in records) == end["faces"]  # nothing lost from the log
    assert end["frames"] > 100
    mqtt = end["mqtt"]
    assert mqtt["connections"] >= 2 and mqtt["dropped"] > 0 and mqtt["connected_at_end"]
    assert f"{mqtt['dropped']} dropped" in err and "again" in err and "lost" in err
    after = [m for m in sub.messages if m.at > restarted]
    topics = {m.topic for m in after}
    # after the restart: online, the last state again (a restarted broker lost its retained one), faces, summary
    assert {f"{prefix}/availability", f"{prefix}/state", f"{prefix}/faces", f"{prefix}/summary"} <= topics
    # all of the announcement, though it is longer than --mqtt-queue 5: every discovery config and the state
    assert len([t for t in kept if t.startswith("homeassistant/")]) == 2 + len(bundle.classes)
    assert kept[f"{prefix}/availability"].payload == "offline" and f"{prefix}/state" in kept


def test_a_board_killed_mid_run_shows_offline_through_its_last_will(tmp_path) -> None:
    broker = Broker(tmp_path / "broker").start()
    prefix = "fer-edge/will-test"
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen([*FER_DEVICE, *DEMO, "--loop", "--fps", "15", "--log", str(log),
                             "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--mqtt-device-id", "will-test"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        sub = Subscriber(broker.port, (f"{prefix}/availability",))
        sub.wait_for(lambda s: [m.payload for m in s.messages] == ["online"], 60, "online")
        proc.kill()  # no goodbye: the broker notices the dropped connection and publishes the will
        proc.wait(timeout=10)
        sub.wait_for(lambda s: [m.payload for m in s.messages] == ["online", "offline"], 30, "the last will")
        sub.close()
        assert retained(broker.port, (f"{prefix}/availability",))[f"{prefix}/availability"].payload == "offline"
    finally:
        if proc.poll() is None:
            proc.kill()
        broker.stop()
    assert all(json.loads(line) for line in log.read_text().splitlines()[:-1])  # at most the last line cut


def test_a_broker_that_never_answers_does_not_stall_the_run(tmp_path) -> None:
    with socket.socket() as silent:  # accepts TCP connections (the kernel does) but never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        log = tmp_path / "run.jsonl"
        done = _fer_device(*DEMO, "--loop", "--fps", "10", "--duration", "3", "--log", str(log),
                           "--mqtt", f"mqtt://127.0.0.1:{port}", env=_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    end = _records(log)[-1]
    assert end["frames"] >= 20  # paced at 10 a second for 3 s: the loop ran on while MQTT waited
    assert not end["mqtt"]["connected"] and end["mqtt"]["published"] == 0
    assert "never connected" in done.stderr


def test_tls_with_a_test_ca_and_client_certificate(tmp_path) -> None:
    tls = make_test_ca(tmp_path / "tls")
    broker = Broker(tmp_path / "broker", tls=tls).start()
    url = f"mqtts://127.0.0.1:{broker.port}"
    try:
        sub = Subscriber(broker.port, ("fer-edge/tls/#",), tls=tls)
        done = _fer_device(*DEMO, "--max-frames", "10", "--mqtt", url, "--mqtt-device-id", "tls",
                           "--mqtt-ca", str(tls.ca), "--mqtt-cert", str(tls.client_cert),
                           "--mqtt-key", str(tls.client_key), env=_env())
        assert done.returncode == 0, done.stderr
        sub.wait_for(lambda s: s.on("fer-edge/tls/state") and s.on("fer-edge/tls/availability")[-1:]
                     and s.on("fer-edge/tls/availability")[-1].payload == "offline", 10, "state over TLS")
        sub.close()
        assert "connected (1 connection)" in done.stderr

        untrusted = _fer_device(*DEMO, "--max-frames", "3", "--mqtt", url, env=_env())  # the system CAs: no
    finally:
        broker.stop()
    assert untrusted.returncode == 0, untrusted.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr and "never connected" in untrusted.stderr
