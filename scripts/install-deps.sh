#!/usr/bin/env bash
# Installs the Debian packages fsstack's lab, tests and benchmarks use.
# Safe to run again: it installs only what is missing.
set -euo pipefail

pkgs=(iproute2 iputils-ping curl ethtool gcc make libc6-dev python3 procps)
# Real servers and clients for the shim's tests and benchmarks.
pkgs+=(nginx-light wrk redis-server redis-tools memcached haproxy lighttpd)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "fsstack: missing packages: ${missing[*]}; run as root or install them with apt-get" >&2
	exit 1
fi
echo "fsstack: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# The packaged services must not hold ports or CPU on a test machine.
for svc in nginx redis-server memcached haproxy lighttpd; do
	if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
	if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
