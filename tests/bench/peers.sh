#!/bin/bash
# comfy2mqtt peer rows (README.md, "Peer rows"): comfy2mqtt, a Node.js
# peer bridge (node_peer/peer.js) and mosquitto_pub -l of comfy2mqtt's own
# messages carry one workload, one after another, against one fresh
# mosquitto per repetition; then comfy2mqtt alone against mosquitto's
# default configuration. Prints one table of medians with ratios.
#
#   peers.sh [--reps N] [--frames N] [--default-runs N] [--no-node]
#            [--window N] [--bridge PATH] [--driver PATH]
#
# --window N: closed loop (at most N frames of prompts whose lifecycle
# events are not all in) instead of as fast as each bridge reads.
#
# Exit status 1 when a lifecycle event (or a direct message) went missing.
set -u

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${C2M_BUILD_DIR:-$src/build-bench}
bridge=${C2M_BRIDGE:-$build/comfy2mqtt}
driver=$build/tests/bench/c2m_bench_peers
trace=$src/tests/data/traces/a_normal_txt2img.jsonl
reps=3 frames=100000 default_runs=1 node=1 window=0

while [ $# -gt 0 ]; do
	case $1 in
	--reps) reps=$2; shift ;;
	--frames) frames=$2; shift ;;
	--default-runs) default_runs=$2; shift ;;
	--window) window=$2; shift ;;
	--no-node) node=0 ;;
	--bridge) bridge=$2; shift ;;
	--driver) driver=$2; shift ;;
	*) echo "peers.sh: unknown option $1" >&2; exit 64 ;;
	esac
	shift
done
for f in "$bridge" "$driver" "$trace"; do
	[ -e "$f" ] || { echo "peers.sh: missing $f (build c2m_bench_peers first)" >&2; exit 1; }
done

# The Node peer installs its pinned packages (package-lock.json) into the
# ignored node_peer/node_modules on first use.
node_args=() node_note=
if [ $node = 0 ]; then
	node_note="Node.js peer: skipped (--no-node)"
elif ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	node_note="Node.js peer: skipped (node or npm not found)"
elif [ ! -d "$here/node_peer/node_modules" ] &&
	! npm ci --prefix "$here/node_peer" --no-audit --no-fund >&2; then
	node_note="Node.js peer: skipped (npm ci failed in $here/node_peer)"
else
	node_args=(--node-peer "$here/node_peer/peer.js" --node "$(command -v node)")
fi
direct_args=() direct_note=
if command -v mosquitto_pub >/dev/null; then
	direct_args=(--mosquitto-pub "$(command -v mosquitto_pub)" --direct-one-topic)
else
	direct_note="direct publish: skipped (mosquitto_pub not found)"
fi

work=$(mktemp -d /tmp/c2m-peers.XXXXXX)
. "$here/broker.sh"
trap 'stop_broker; rm -rf "$work"' EXIT

# The two broker configurations. "tuned": no receive maximum, no queue
# limit, no Nagle delay (as run.sh); "default": mosquitto's defaults
# (a receive maximum of 20) but for the queue limit, which would drop
# messages on the way to the benchmark's own subscriber when it falls
# behind, i.e. measure the subscriber (README).
tuned='set_tcp_nodelay true
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0'
default='max_queued_messages 0
max_queued_bytes 0'

failed=0
: >"$work/results"
: >"$work/default"
for rep in $(seq "$reps"); do
	start_broker "$tuned" || exit 1
	line=$("$driver" --bridge "$bridge" --trace "$trace" --broker-port "$broker_port" \
		--frames "$frames" --window "$window" --workdir "$work" --tag $((RANDOM * 4 + rep * 65536)) \
		"${node_args[@]}" "${direct_args[@]}")
	[ $? -eq 0 ] || failed=1
	stop_broker
	echo "rep $rep: $line" >&2
	echo "$line" >>"$work/results"
done
for rep in $(seq "$default_runs"); do
	start_broker "$default" || exit 1
	line=$("$driver" --bridge "$bridge" --trace "$trace" --broker-port "$broker_port" \
		--frames "$frames" --window "$window" --workdir "$work" --tag $((RANDOM * 4 + rep * 65536)))
	[ $? -eq 0 ] || failed=1
	stop_broker
	echo "default broker, rep $rep: $line" >&2
	echo "$line" >>"$work/default"
done

# "median (min-max)" of key $1 over the lines of file $2
vals() { tr ' ' '\n' <"$2" | sed -n "s/^$1=//p" | sort -g; }
stat() {
	vals "$1" "$2" | awk -v d="${3:-0}" '{v[NR]=$1} END {
		if (NR == 0) { print "-"; exit }
		m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		f = "%." d "f"
		if (NR == 1) printf f "\n", m
		else printf f " (" f "-" f ")\n", m, v[1], v[NR] }'
}
first() { vals "$1" "$2" | head -1; }
pairs() { # "a/b" per run, in run order
	paste -d/ <(tr ' ' '\n' <"$3" | sed -n "s/^$1=//p") \
		<(tr ' ' '\n' <"$3" | sed -n "s/^$2=//p") | tr '\n' ' '
}
row() { # label key: what arrived is the lifecycle events, for the
	# direct rows every message (one of them has no lifecycle topic)
	local r=$work/results arrived
	[ "$(first "${2}_ran" "$r")" = 1 ] || return
	arrived=$(first "${2}_msgs" "$r")
	if [ -n "$arrived" ]; then
		arrived="messages $arrived"
	else
		arrived="lifecycle $(first "${2}_lifecycle" "$r"), frames relayed $(
			awk -v e="$(first "${2}_events" "$r")" -v f="$(first "${2}_frames" "$r")" \
				'BEGIN {printf "%.0f%%", 100 * e / f}')"
	fi
	printf '%-38s %-20s %-18s %-24s %s\n' "$1" "$(stat "${2}_eps" "$r")" \
		"$(stat "${2}_cpu_us" "$r" 1)" "$(stat "${2}_rss_kib" "$r")" "$arrived"
}

r=$work/results
echo
echo "peer rows: $reps run(s), $(first prompts "$r") prompts x $(first frames_per_prompt "$r") frames" \
	"(fresh prompt id each), $([ "$window" = 0 ] && echo "as fast as each bridge reads" || echo "window $window frames")," \
	"one mosquitto without receive maximum or queue limit;" \
	"medians (min-max)"
printf '%-38s %-20s %-18s %-24s %s\n' row events/s "CPU us per event" "peak RSS KiB" "arrived (run 1)"
row "comfy2mqtt" c2m
row "Node.js peer (ws + mqtt.js)" node
row "direct: mosquitto_pub -l, per topic" direct
row "direct: mosquitto_pub -l, one topic" direct1
[ -n "$node_note" ] && echo "$node_note"
[ -n "$direct_note" ] && echo "$direct_note"
echo "  direct rows: $(first direct_procs "$r") processes per topic / 1; CPU and RSS are sums over the processes"
echo "  comfy2mqtt progress coalesced: $(stat c2m_coalesced "$r") of $(first c2m_frames "$r") frames;" \
	"messages published / arrived, per run: $(pairs c2m_published c2m_received "$r")"
echo "ratios, each from one run: median (min-max)"
printf '  %-36s %-22s %s\n' "comfy2mqtt / node, events/s" "$(stat eps_c2m_node "$r" 3)" "(target >= 1)"
printf '  %-36s %-22s %s\n' "comfy2mqtt / direct per topic, ev/s" "$(stat eps_c2m_direct "$r" 3)" "(target >= 0.7)"
printf '  %-36s %-22s %s\n' "comfy2mqtt / direct one topic, ev/s" "$(stat eps_c2m_direct1 "$r" 3)" ""
printf '  %-36s %-22s %s\n' "comfy2mqtt / node, CPU per event" "$(stat cpu_c2m_node "$r" 3)" "(target <= 0.6)"
if [ "$default_runs" -gt 0 ]; then
	d=$work/default
	echo "mosquitto's default configuration (receive maximum 20; queue limit lifted), comfy2mqtt alone, $default_runs run(s):"
	echo "  events/s $(stat c2m_eps "$d"), CPU us per event $(stat c2m_cpu_us "$d" 1)"
	echo "  lifecycle events in (per run): $(vals c2m_lifecycle "$d" | tr '\n' ' ')"
	echo "  frames not relayed (progress coalesced), per run: $(vals c2m_coalesced "$d" | tr '\n' ' ')"
	echo "  messages comfy2mqtt published (its bridge/health) / that arrived, per run:" \
		"$(pairs c2m_published c2m_received "$d")"
fi
if [ $failed -ne 0 ]; then
	echo "FAILED: a lifecycle event or a direct message went missing (see the lines above)" >&2
	exit 1
fi
echo "every lifecycle event delivered in every run"
