# Sourced by run.sh and peers.sh: a fresh private mosquitto per
# repetition on a free loopback port. Needs $work (a scratch folder).
#   start_broker CONF_LINES  sets broker_pid and broker_port
#   stop_broker
broker_pid=
stop_broker() {
	if [ -n "$broker_pid" ]; then
		kill "$broker_pid" 2>/dev/null
		wait "$broker_pid" 2>/dev/null
		broker_pid=
	fi
}

start_broker() {
	local try i port
	for try in 1 2 3 4 5 6 7 8 9 10; do
		port=$((20000 + (RANDOM % 30000)))
		printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n%s\n' \
			"$port" "$1" >"$work/mosquitto.conf"
		mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
		broker_pid=$!
		for i in $(seq 50); do
			kill -0 "$broker_pid" 2>/dev/null || break
			if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
				broker_port=$port
				return 0
			fi
			sleep 0.1
		done
		stop_broker
	done
	echo "$(basename "$0"): cannot start mosquitto" >&2
	return 1
}
