#!/usr/bin/env bash
# Creates the project's virtual environment and installs the project with the given extras.
# Usage: scripts/venv.sh VENV_DIR EXTRAS   (EXTRAS like "server" or "dev")
# Reinstalls only when pyproject.toml changed since the last install of those extras.
set -euo pipefail

venv="$1"
extras="$2"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
marker="$venv/.installed-$extras"

log() { printf '[venv] %s\n' "$*"; }

if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv with $("$python" --version)"
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        # Debian ships venv support separately from the interpreter.
        if command -v apt-get >/dev/null; then
            log "installing python3-venv (Debian keeps venv support in its own package)"
            if [ "$(id -u)" -eq 0 ]; then sudo_cmd=(); else sudo_cmd=(sudo); fi
            "${sudo_cmd[@]}" apt-get update -q
            "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
        fi
        "$python" -m venv "$venv"
    fi
fi

if [ ! -f "$marker" ] || [ pyproject.toml -nt "$marker" ]; then
    log "installing .[$extras]"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e ".[$extras]"
    touch "$marker"
fi
