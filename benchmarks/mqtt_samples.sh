#!/usr/bin/env bash
# One real message of each MQTT topic fer-device publishes, as mosquitto_sub prints them (docs/mqtt.md).
#
#   bash benchmarks/mqtt_samples.sh                 # writes benchmarks/results/mqtt_samples.txt
#   bash benchmarks/mqtt_samples.sh /tmp/samples.txt
#
# Starts its own Mosquitto on a free 127.0.0.1 port (temporary config), subscribes with
# mosquitto_sub -v to fer-edge/# and homeassistant/#, runs 3 s of the demo clip with
# --mqtt --mqtt-device-id kitchen-pi, then stops both. Needs: apt-get install mosquitto mosquitto-clients.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/mqtt_samples.txt}
venv=${VENV:-.venv}
broker=$(command -v mosquitto || echo /usr/sbin/mosquitto)
tmp=$(mktemp -d)
port=$("$venv/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nuser %s\n' \
    "$port" "$(id -un)" > "$tmp/mosquitto.conf"
"$broker" -c "$tmp/mosquitto.conf" & broker_pid=$!
mosquitto_sub -h 127.0.0.1 -p "$port" -t 'fer-edge/#' -t 'homeassistant/#' -v > "$tmp/all.txt" & sub_pid=$!
cleanup() { kill "$sub_pid" "$broker_pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
sleep 1
"$venv/bin/fer-device" run --source demo --headless --threads 1 --resolution 640x480 --fps 15 --duration 3 \
    --mqtt "mqtt://127.0.0.1:$port" --mqtt-device-id kitchen-pi --log "$tmp/run.jsonl" 2> "$tmp/stderr.txt"
sleep 1
# every topic once (its first message), plus the last availability message (offline)
awk '!seen[$1]++' "$tmp/all.txt" > "$out"
grep '^fer-edge/kitchen-pi/availability ' "$tmp/all.txt" | tail -1 >> "$out"
grep '^fer-edge/kitchen-pi/summary {"type":"end"' "$tmp/all.txt" | tail -1 >> "$out"
echo "$(wc -l < "$tmp/all.txt") messages in all; one of each topic written to $out" >&2
grep "^fer-device: mqtt:" "$tmp/stderr.txt" >&2 || true
