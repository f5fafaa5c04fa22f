#!/usr/bin/env bash
# Installs the edge agent on a Debian-family Pi (Raspberry Pi OS): a service user, a virtual
# environment under /opt with the agent and paho-mqtt only, and the systemd unit.
# Usage: sudo deploy/edge/install.sh [path to the project checkout or wheel]
set -euo pipefail

source="${1:-$(cd "$(dirname "$0")/../.." && pwd)}"
prefix=/opt/smartcity-edge

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root (sudo $0)" >&2
    exit 1
fi
apt-get install -y -q python3-venv >/dev/null
id smartcity-edge >/dev/null 2>&1 || useradd --system --home-dir /nonexistent \
    --shell /usr/sbin/nologin --groups dialout,i2c smartcity-edge 2>/dev/null \
    || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin smartcity-edge
python3 -m venv "$prefix"
"$prefix/bin/pip" install -q --upgrade pip
"$prefix/bin/pip" install -q "${source}[edge]"
install -m 0644 "$(dirname "$0")/smartcity-edge.service" /etc/systemd/system/smartcity-edge.service
install -d -m 0750 -o root -g smartcity-edge /etc/smartcity-edge
install -d -m 0644 /usr/share/doc/smartcity-edge
if [ -f "$source/docs/technician.md" ]; then
    install -m 0644 "$source/docs/technician.md" /usr/share/doc/smartcity-edge/technician.md
fi
systemctl daemon-reload
echo "installed. next: smartcity-edge provision ... --output-dir /etc/smartcity-edge, then"
echo "  $prefix/bin/smartcity-edge doctor && systemctl enable --now smartcity-edge"
