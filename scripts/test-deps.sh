#!/usr/bin/env bash
# Installs the Debian packages the tests use, if they are missing and we may (root + apt-get).
# Without root the namespace tests skip (with a printed reason), except under CI=true, where
# they fail: CI must run everything.
set -u
pkgs=(procps util-linux iproute2 nftables curl python3-pyftpdlib dnsmasq-base chromium libglib2.0-bin gsettings-desktop-schemas systemd)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "test-deps: missing Debian packages: ${missing[*]} (not root or no apt-get: tests that need them will skip)" >&2
  exit 0
fi
echo "test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
