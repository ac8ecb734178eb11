# Sourced by run.sh and demo.sh: start_local_broker starts a mosquitto on
# 127.0.0.1:$1 when nothing answers there, says so, and stops it when the
# calling script exits. It runs as Debian's mosquitto user (no "user root"
# line), so mosquitto has no reason to warn about root.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_local_broker() {
	local port=$1 conf
	port_open "$port" && return 0
	conf=$(mktemp /tmp/comfy2mqtt-mosquitto.XXXXXX.conf)
	chmod 644 "$conf"
	printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$conf"
	mosquitto -c "$conf" >/tmp/comfy2mqtt-mosquitto.log 2>&1 &
	C2M_BROKER_PID=$!
	for _ in $(seq 50); do port_open "$port" && break; sleep 0.1; done
	if ! port_open "$port"; then
		echo "mosquitto did not start on 127.0.0.1:$port:" >&2
		cat /tmp/comfy2mqtt-mosquitto.log >&2
		exit 1
	fi
	echo "no MQTT broker answered on 127.0.0.1:$port: started mosquitto" \
		"(pid $C2M_BROKER_PID, log /tmp/comfy2mqtt-mosquitto.log);" \
		"it stops when this script ends"
}

stop_local_broker() {
	[ -n "${C2M_BROKER_PID:-}" ] || return 0
	kill "$C2M_BROKER_PID" 2>/dev/null || true
	wait "$C2M_BROKER_PID" 2>/dev/null || true
}
