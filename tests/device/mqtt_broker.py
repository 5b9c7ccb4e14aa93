"""A real Mosquitto broker and a real paho subscriber for the MQTT tests.

Each test starts its own ``mosquitto -c <config>`` on a free 127.0.0.1 port
with a config written into the test's temporary folder (anonymous, a password
file made with ``mosquitto_passwd``, or a TLS listener with a CA the test
makes with the ``openssl`` command), and stops it. Nothing here fakes the
broker: the tests skip, saying why, only where Mosquitto is not installed.
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest


def find_program(name: str) -> Optional[str]:
    """`name` on PATH or in /usr/sbin (Debian puts the broker there, off a normal user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def need_mosquitto() -> str:
    broker = find_program("mosquitto")
    if broker is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
    return broker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_test_ca(folder: Path) -> TlsFiles:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with ``openssl``."""
    openssl = find_program("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (needed to make the test CA)")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=fer-edge test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                        ("client", "extendedKeyUsage=clientAuth\n")):
        (folder / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\n"
                                            "keyUsage=critical,digitalSignature\n" + extra)
        run("req", *curve, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=fer-edge test {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
                    folder / "client.key")


class Broker:
    """One Mosquitto process with its own config; `kill` and `start` again keep the same port."""

    def __init__(self, folder: Path, password: Optional[tuple[str, str]] = None,
                 tls: Optional[TlsFiles] = None) -> None:
        self.program = need_mosquitto()
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = folder / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"log_dest file {self.log}",
                 "log_type all", f"user {getpass.getuser()}"]  # as root, stay root: the files are the test's
        if password is None:
            lines.append("allow_anonymous true")
        else:
            passwd = find_program("mosquitto_passwd")
            if passwd is None:
                pytest.skip("mosquitto_passwd is not installed (apt-get install mosquitto)")
            password_file = folder / "passwords"
            subprocess.run([passwd, "-c", "-b", str(password_file), *password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}",
                      "require_certificate true", "tls_version tlsv1.2"]
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "Broker":
        self.process = subprocess.Popen([self.program, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read()} {self._log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self._log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would: no goodbye to the clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


@dataclass
class Message:
    topic: str
    payload: str
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A paho client subscribed to `topics`, keeping every message it gets; reconnects on its own."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("#",), username: Optional[str] = None,
                 password: Optional[str] = None, tls: Optional[TlsFiles] = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{port}-{id(self)}")
        if username:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)

        def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            if not reason_code.is_failure:
                client.subscribe([(t, 1) for t in topics])

        def on_subscribe(client: Any, userdata: Any, mid: Any, reason_codes: Any, properties: Any) -> None:
            self._subscribed.set()

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            with self._lock:
                self.messages.append(Message(msg.topic, msg.payload.decode(), bool(msg.retain), time.monotonic()))

        self.client.on_connect, self.client.on_subscribe, self.client.on_message = on_connect, on_subscribe, on_message
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(15):
            self.close()
            raise RuntimeError("the test subscriber could not subscribe")

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def topics(self) -> set[str]:
        with self._lock:
            return {m.topic for m in self.messages}

    def wait_for(self, check: Callable[["Subscriber"], bool], timeout: float = 60, what: str = "messages") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self):
                return
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout:g} s; got topics {sorted(self.topics())}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topics: tuple[str, ...], settle: float = 1.0, **kwargs: Any) -> dict[str, Message]:
    """What a newcomer gets on subscribing: the retained message of each topic matched."""
    sub = Subscriber(port, topics, **kwargs)
    time.sleep(settle)  # retained messages arrive right after SUBACK
    sub.close()
    return {m.topic: m for m in sub.messages if m.retain}
