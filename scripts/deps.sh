#!/usr/bin/env bash
# Installs the Debian 12 packages comfy2mqtt needs, when some are missing.
#   scripts/deps.sh          build + run dependencies
#   scripts/deps.sh --test   also everything the test suite uses
set -euo pipefail

pkgs=(build-essential cmake pkg-config libssl-dev libwebsockets-dev libmosquitto-dev
	libjsmn-dev mosquitto mosquitto-clients)
if [ "${1:-}" = "--test" ]; then
	pkgs+=(python3 python3-aiohttp python3-paho-mqtt python3-jsonschema
		python3-pytest python3-yaml python3-pil clang clang-format libclang-rt-14-dev
		openssl procps iproute2 curl)
fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "missing packages: ${missing[*]}" >&2
	echo "run as root, or: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
