#!/usr/bin/env bash
# Installs what is missing, builds, starts a local mosquitto on
# 127.0.0.1:1883 when no broker answers there, and runs the bridge.
# Arguments go to comfy2mqtt (default: --comfyui http://127.0.0.1:8188).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 1883; then
	echo "no MQTT broker answers on 127.0.0.1:1883: starting mosquitto"
	conf=$(mktemp /tmp/comfy2mqtt-mosquitto.XXXXXX.conf)
	printf 'listener 1883 127.0.0.1\nallow_anonymous true\nuser root\n' >"$conf"
	mosquitto -d -c "$conf"
	for _ in $(seq 50); do port_open 1883 && break; sleep 0.1; done
fi
exec build/comfy2mqtt "$@"
