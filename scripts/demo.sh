#!/usr/bin/env bash
# For anyone without a ComfyUI at hand: runs the project's ComfyUI
# simulator on 127.0.0.1:18188, the bridge against it (with --print), and
# replays a recorded run (default: a_normal_txt2img; any name from
# tests/data/traces). Watch MQTT in another terminal with:
#   mosquitto_sub -h 127.0.0.1 -t 'comfyui/#' -v
set -euo pipefail
cd "$(dirname "$0")/.."
trace=${1:-a_normal_txt2img}
scripts/deps.sh --test
scripts/build.sh build

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! port_open 1883; then
	conf=$(mktemp /tmp/comfy2mqtt-mosquitto.XXXXXX.conf)
	printf 'listener 1883 127.0.0.1\nallow_anonymous true\nuser root\n' >"$conf"
	mosquitto -d -c "$conf"
fi
/usr/bin/python3 tests/sim/comfyui_sim.py --port 18188 >/tmp/comfy2mqtt-sim.log 2>&1 &
sim=$!
build/comfy2mqtt --comfyui http://127.0.0.1:18188 --client-id comfy2mqtt-demo \
	--instance demo --print &
bridge=$!
trap 'kill $bridge $sim 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do
	curl -fs http://127.0.0.1:18188/_sim/clients | grep -q '"comfy2mqtt-demo"' && break
	sleep 0.1
done
curl -fs -X POST http://127.0.0.1:18188/_sim/replay \
	-d "{\"trace\": \"$trace\", \"client_id\": \"comfy2mqtt-demo\", \"interval_ms\": 20}" >/dev/null
echo "replayed $trace; the retained state stays on comfyui/demo/...; Ctrl-C to stop"
wait $bridge
