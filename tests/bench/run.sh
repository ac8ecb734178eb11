#!/bin/bash
# comfy2mqtt benchmark runner: starts a fresh mosquitto per repetition,
# runs c2m_bench (bridge, then baseline, side by side against that broker)
# and prints the table of medians. See README.md.
#
#   run.sh [--quick] [--reps N] [--prompts N] [--lat-events N]
#          [--window N] [--soak-events N] [--broker-inflight N]
#          [--bridge PATH] [--driver PATH] [--shim PATH] [--core PATH]
#
# --quick: one short repetition (about 10 s); it fails only when an event
# went missing, never on a time.
set -u

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${C2M_BUILD_DIR:-$src/build-bench}
bridge=${C2M_BRIDGE:-$build/comfy2mqtt}
driver=$build/tests/bench/c2m_bench
shim=$build/tests/bench/libc2m_bench_alloc.so
core=$build/tests/bench/c2m_bench_core
trace=$src/tests/data/traces/a_normal_txt2img.jsonl
reps=5 prompts=5000 lat_events=5000 window=200 soak=0 quick=0
core_prompts=5000 core_reps=3 broker_inflight=0

while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 reps=1 prompts=100 lat_events=1000 core_prompts=200 core_reps=1 ;;
	--reps) reps=$2; shift ;;
	--prompts) prompts=$2; shift ;;
	--lat-events) lat_events=$2; shift ;;
	--window) window=$2; shift ;;
	--soak-events) soak=$2; shift ;;
	--broker-inflight) broker_inflight=$2; shift ;;
	--bridge) bridge=$2; shift ;;
	--driver) driver=$2; shift ;;
	--shim) shim=$2; shift ;;
	--core) core=$2; shift ;;
	*) echo "run.sh: unknown option $1" >&2; exit 64 ;;
	esac
	shift
done
# --shim none: no allocation counting (sanitizer builds, whose runtime
# must be the first preloaded library)
# A sanitizer build is detected and counts no allocations.
if ldd "$bridge" 2>/dev/null | grep -q libasan; then
	shim=none
fi
shim_arg=(--shim "$shim")
if [ "$shim" = none ]; then
	shim_arg=()
	shim=$trace
fi
for f in "$bridge" "$driver" "$shim" "$trace" "$core"; do
	[ -e "$f" ] || { echo "run.sh: missing $f (build first)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/c2m-bench.XXXXXX)
. "$(dirname "$0")/broker.sh"
trap 'stop_broker; rm -rf "$work"' EXIT

# A fresh broker per repetition (retained state of earlier runs would
# otherwise pile up). set_tcp_nodelay: the broker adds no Nagle delay of
# its own; max_queued_messages 0 / max_queued_bytes 0: no limit, so a
# subscriber that falls behind loses nothing (QoS 0 included: the
# benchmark checks every event arrived). max_inflight_messages: 0 (no
# receive maximum announced) unless --broker-inflight; mosquitto's own
# default is 20, which MQTT 5 clients see as a receive maximum of 20.
tuned_broker() {
	start_broker "set_tcp_nodelay true
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages $broker_inflight"
}

failed=0
: >"$work/results"
for rep in $(seq "$reps"); do
	tuned_broker || exit 1
	# the raw writer does no flow control: not against a receive maximum
	raw_arg=()
	[ "$broker_inflight" = 0 ] || raw_arg=(--no-raw)
	line=$("$driver" --bridge "$bridge" "${shim_arg[@]}" "${raw_arg[@]}" --trace "$trace" \
		--broker-port "$broker_port" --prompts "$prompts" \
		--lat-events "$lat_events" --window "$window" \
		--soak-events "$soak" --tag $((RANDOM * 4 + rep * 65536)))
	rc=$?
	stop_broker
	[ $rc -eq 0 ] || failed=1
	echo "rep $rep: $line" >&2
	echo "$line" >>"$work/results"
done

# the bridge's own work per event without sockets, next to jsmn alone
# (c2m_bench_core: fastest of its repetitions, one process)
core_line=$("$core" --trace "$trace" --prompts "$core_prompts" --reps "$core_reps")
[ $? -eq 0 ] || { failed=1; echo "c2m_bench_core failed: $core_line" >&2; }
echo "core: $core_line" >&2
echo "$core_line" >>"$work/results"

# medians over the repetitions, one column per key
median() {
	tr ' ' '\n' <"$work/results" | sed -n "s/^$1=//p" | sort -g |
		awk '{v[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'
}
first() {
	tr ' ' '\n' <"$work/results" | sed -n "s/^$1=//p" | head -1
}

echo
echo "comfy2mqtt benchmark: $reps run(s), $prompts prompts x $(first frames_per_prompt) frames, window $window events, latency at 1000 events/s over $lat_events events (medians)"
printf '%-34s %14s %14s %s\n' metric bridge baseline "ratio / target"
printf '%-34s %14s %14s %s\n' "events/s (throughput)" "$(median bridge_eps)" "$(median base_eps)" "$(median ratio)  (>= 0.9)"
if [ "$broker_inflight" = 0 ]; then
	printf '%-34s %14s %14s %s\n' "  raw MQTT writer (bench only)" "" "$(median raw_eps)" "$(median raw_ratio)  (bridge / raw)"
else
	printf '%-34s %14s %14s\n' "  raw MQTT writer (bench only)" "" "skipped"
fi
printf '%-34s %14s %14s\n' "other msgs per event (state...)" "$(median bridge_other_per_event)" "$(median base_other_per_event)"
printf '%-34s %14s %14s %s\n' "CPU us per event" "$(median cpu_us_per_event)" "$(median base_cpu_us_per_event)" "$(median cpu_ratio)  (bridge <= 2)"
for k in user sys main_thread other_threads; do
	printf '%-34s %14s\n' "  $k us per event" "$(median ${k}_us_per_event)"
done
[ "$broker_inflight" = 0 ] &&
	printf '%-34s %14s %14s\n' "  raw MQTT writer (bench only)" "" "$(median raw_cpu_us_per_event)"
printf '%-34s %14s %14s\n' "  baseline: publish / net thread" "" "$(median base_publish_thread_us_per_event) / $(median base_net_thread_us_per_event)"
printf '%-34s %14s\n' "  context switches per event" "$(median ctxsw_per_event)"
printf '%-34s %14s\n' "  libwebsockets alone (receive)" "$(median ws_floor_cpu_us_per_event)"
printf '%-34s %14s\n' "    user / sys" "$(median ws_floor_user_us_per_event) / $(median ws_floor_sys_us_per_event)"
printf '%-34s %14s\n' "  lws RAW + wsframe (ws:// path)" "$(median ws_raw_floor_cpu_us_per_event)"
printf '%-34s %14s\n' "    user / sys" "$(median ws_raw_floor_user_us_per_event) / $(median ws_raw_floor_sys_us_per_event)"
printf '%-34s %14s\n' "  core alone (no sockets)" "$(median core_us_per_event)"
printf '%-34s %14s\n' "    json_parse / jsmn_parse alone" "$(median json_parse_us_per_event) / $(median jsmn_us_per_event)"
printf '%-34s %14s %14s %s\n' "bridge RSS KiB before the first event" "$(median rss_start_kib)" "-"
printf '%-34s %14s %14s %s\n' "bridge peak RSS KiB" "$(median rss_peak_kib)" "-" "(<= 8192)"
if [ ${#shim_arg[@]} -eq 0 ]; then
	printf '%-34s %14s\n' "allocations per event" "not counted (--shim none)"
else
printf '%-34s %14s %14s %s\n' "allocations per event (all)" "$(median allocs_per_event)" "-" "(0 outside libmosquitto's copy)"
for k in main_exe main_mosq main_lws main_libc main_other thr_exe thr_mosq thr_lws thr_libc thr_other; do
	printf '%-34s %14s\n' "  allocs per event, $k" "$(median allocs_$k)"
done
fi
printf '%-34s %14s %14s %s\n' "latency p50 us (1000 ev/s)" "$(median bridge_lat_p50_us)" "$(median base_lat_p50_us)"
printf '%-34s %14s %14s %s\n' "latency p99 us (1000 ev/s)" "$(median bridge_lat_p99_us)" "$(median base_lat_p99_us)" "(bridge <= 1000)"
printf '%-34s %14s %14s\n' "latency max us" "$(median bridge_lat_max_us)" "$(median base_lat_max_us)"
if [ "$soak" -gt 0 ]; then
	echo "soak: $(tr ' ' '\n' <"$work/results" | grep -E '^soak_')"
fi
if [ $failed -ne 0 ]; then
	echo "FAILED: a run lost events or failed (see the lines above)" >&2
	exit 1
fi
echo "every event delivered in every run"
