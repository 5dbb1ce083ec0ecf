#!/bin/sh
# Installs the Debian packages alrd builds and tests with (run as root).
set -eu
pkgs="build-essential libopenblas-dev liblapacke-dev libcjson-dev libcmocka-dev zlib1g-dev pkgconf python3 python3-pip clang libclang-rt-14-dev"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
echo "deps: ok"
