#!/usr/bin/env bash
# For anyone without a ComfyUI at hand: runs the project's ComfyUI
# simulator on 127.0.0.1:18188, the bridge against it (with --print), and
# replays a recorded run (default: a_normal_txt2img; any name from
# tests/data/traces). The demo subscribes to comfyui/demo/# itself and
# prints every MQTT message ("mqtt> topic payload"); the replay starts only
# once that subscription holds the bridge's retained state, so nothing is
# missed. A local mosquitto is started on 127.0.0.1:1883 when none answers
# and stopped with the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
trace=${1:-a_normal_txt2img}
port=${C2M_MQTT_PORT:-1883}
scripts/deps.sh --test
scripts/build.sh build -DC2M_TESTS=OFF
. scripts/broker.sh
start_local_broker "$port"
work=$(mktemp -d /tmp/comfy2mqtt-demo.XXXXXX)
pids=()
cleanup() {
	kill "${pids[@]}" 2>/dev/null || true
	wait 2>/dev/null || true
	stop_local_broker
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# an earlier demo still running would take the replay's events
if (exec 3<>/dev/tcp/127.0.0.1/18188) 2>/dev/null; then
	echo "127.0.0.1:18188 is in use (an earlier demo still running?): stop it first" >&2
	exit 1
fi
/usr/bin/python3 tests/sim/comfyui_sim.py --port 18188 >"$work/sim.log" 2>&1 &
pids+=($!)
build/comfy2mqtt --comfyui http://127.0.0.1:18188 --client-id comfy2mqtt-demo \
	--mqtt "mqtt://127.0.0.1:$port" --instance demo --print &
pids+=($!)
mosquitto_sub -h 127.0.0.1 -p "$port" -t 'comfyui/demo/#' -v >"$work/mqtt.log" &
pids+=($!)
tail -n +1 -f "$work/mqtt.log" | sed -u 's/^/mqtt> /' &
pids+=($!)

ready=
for _ in $(seq 100); do
	if grep -q '^comfyui/demo/bridge/state online' "$work/mqtt.log" &&
		curl -fs http://127.0.0.1:18188/_sim/clients | grep -q '"comfy2mqtt-demo"'; then
		ready=1
		break
	fi
	sleep 0.1
done
if [ -z "$ready" ]; then
	echo "the bridge did not come online within 10 s; simulator log: $work/sim.log" >&2
	exit 1
fi
curl -fs -X POST http://127.0.0.1:18188/_sim/replay \
	-d "{\"trace\": \"$trace\", \"client_id\": \"comfy2mqtt-demo\", \"interval_ms\": 20}" >/dev/null
echo "replaying $trace; Ctrl-C to stop"
wait "${pids[1]}"
