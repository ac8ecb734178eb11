#!/bin/sh
# HEALTHCHECK of the comfy2mqtt image. Healthy = the daemon (PID 1 in the
# container) is running, not a zombie or stopped, AND it holds an
# ESTABLISHED TCP connection to the MQTT broker's port.
#
# Why this and not "PID 1 exists": the daemon never exits on a broker or
# ComfyUI outage (it retries for ever, contract §1), so a live process says
# nothing. Its one job is to keep the broker link; ComfyUI's link is
# reported on MQTT (upstream/state), where a dashboard can see it, and a
# ComfyUI that is off for the night must not mark the bridge unhealthy.
# The socket is matched by inode against the daemon's own file descriptors,
# so no other process's connection can make it look healthy. Needs only
# /bin/sh, awk, readlink and tr (all in debian:12-slim).
#
# The broker URL is taken like the daemon takes it: --mqtt URL (or
# --mqtt=URL) on its command line, else COMFY2MQTT_MQTT, else the default
# mqtt://127.0.0.1:1883. (A broker set only in a --config file is not
# seen: set COMFY2MQTT_MQTT as well.) C2M_HEALTH_PID overrides the PID
# (tests).
set -u
pid=${C2M_HEALTH_PID:-1}

comm=$(cat "/proc/$pid/comm" 2>/dev/null) || {
	echo "unhealthy: no process $pid"
	exit 1
}
if [ "$comm" != comfy2mqtt ]; then
	echo "unhealthy: process $pid is $comm, not comfy2mqtt"
	exit 1
fi
# field 3 of stat is the state; comm (field 2) is "(comfy2mqtt)": no spaces
state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)
case $state in
R | S | D | I) ;;
*)
	echo "unhealthy: comfy2mqtt is in state ${state:-unknown}"
	exit 1
	;;
esac

url=$(tr '\0' '\n' <"/proc/$pid/cmdline" | awk '
	want { print; found = 1; exit }
	$0 == "--mqtt" { want = 1; next }
	/^--mqtt=/ { sub(/^--mqtt=/, ""); print; found = 1; exit }
')
[ -n "$url" ] || url=${COMFY2MQTT_MQTT:-mqtt://127.0.0.1:1883}

scheme=${url%%://*}
hostport=${url#*://}
hostport=${hostport%%/*}
hostport=${hostport##*@}
case $hostport in
\[*\]:*) port=${hostport##*\]:} ;;
\[*\]) port= ;;
*:*) port=${hostport##*:} ;;
*) port= ;;
esac
if [ -z "$port" ]; then
	if [ "$scheme" = mqtts ]; then port=8883; else port=1883; fi
fi
case $port in
'' | *[!0-9]*)
	echo "unhealthy: cannot read a port from the broker URL"
	exit 1
	;;
esac

# the daemon's sockets, by inode
inodes=
for fd in "/proc/$pid/fd/"*; do
	link=$(readlink "$fd" 2>/dev/null) || continue
	case $link in
	socket:\[*\]) inodes="$inodes ${link#socket:[}" ;;
	esac
done
inodes=$(echo "$inodes" | tr -d ']')

# /proc/PID/net/tcp{,6}: field 3 is the remote address as HEXIP:HEXPORT,
# field 4 the state (01 = ESTABLISHED), field 10 the inode
if cat "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6" 2>/dev/null | awk \
	-v port="$(printf '%04X' "$port")" -v inodes="$inodes" '
	BEGIN { n = split(inodes, list, " "); for (i = 1; i <= n; i++) mine[list[i]] = 1 }
	$4 == "01" && mine[$10] { split($3, rem, ":"); if (rem[2] == port) { ok = 1; exit } }
	END { exit ok ? 0 : 1 }'; then
	echo "healthy: connected to the broker port $port"
	exit 0
fi
echo "unhealthy: no established connection to the broker port $port"
exit 1
