#!/usr/bin/env bash
# Installs what is missing, builds the daemon alone (no test targets),
# starts a local mosquitto on 127.0.0.1:1883 when no broker answers there
# (stopped again when the bridge exits), and runs the bridge.
# Arguments go to comfy2mqtt (default: --comfyui http://127.0.0.1:8188).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build -DC2M_TESTS=OFF
. scripts/broker.sh
start_local_broker "${C2M_MQTT_PORT:-1883}"
trap 'stop_local_broker' EXIT
trap 'kill -TERM "$bridge" 2>/dev/null' INT TERM HUP
build/comfy2mqtt "$@" &
bridge=$!
rc=0
while kill -0 "$bridge" 2>/dev/null; do
	wait "$bridge" && rc=0 || rc=$?
done
exit "$rc"
