#!/usr/bin/env bash
# Installs the system services the test suite runs for real: Mosquitto, PostgreSQL 15 with the
# TimescaleDB extension (built from Debian 13's source package, which Debian 12 lacks), Patroni
# and etcd for the replicated database, and
# Chromium with its driver and axe-core for the dashboard's browser tests. Idempotent: a second
# run installs and builds nothing.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
TSDB_SUITE="${TSDB_SUITE:-trixie}"
CACHE_DIR="${SMARTCITY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smartcity}"
PACKAGES=(mosquitto "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" cmake gcc make xz-utils systemd
          chromium chromium-driver openssl docker-compose patroni etcd-server)

log() { printf '[install-test-deps] %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || printf '%s\n' "$pkg"
    done
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        log "system packages present"
        return
    fi
    log "installing ${missing[*]}"
    as_root apt-get update -q
    # postgresql-common would otherwise create and start a system cluster we never use.
    as_root mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" \
        | as_root tee /etc/postgresql-common/createcluster.d/smartcity-no-main.conf >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
    # The tests start their own broker and etcd; the packaged ones must not hold their ports.
    local unit
    for unit in mosquitto etcd; do
        if command -v systemctl >/dev/null && systemctl is-active --quiet "$unit" 2>/dev/null; then
            as_root systemctl disable --now "$unit" || true
        fi
    done
}

# The mirror this system already uses, read from its deb822 or one-line sources.
debian_mirror() {
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
          | grep -v security | head -n 1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security \
              | head -n 1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

timescaledb_installed() {
    local sharedir
    sharedir=$("/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" --sharedir)
    [ -f "$sharedir/extension/timescaledb.control" ]
}

build_timescaledb() {
    if timescaledb_installed; then
        log "timescaledb present for PostgreSQL $PG_MAJOR"
        return
    fi
    local apt_dir="$CACHE_DIR/apt" src_dir="$CACHE_DIR/timescaledb-src"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$src_dir"
    # A private apt configuration: the system's own sources are never touched.
    echo "deb-src $(debian_mirror) $TSDB_SUITE main" >"$apt_dir/sources.list"
    local apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=-"
                    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
                    -o "APT::Sandbox::User=root")
    log "fetching timescaledb source from $TSDB_SUITE"
    apt-get "${apt_opts[@]}" update -q
    (cd "$src_dir" && apt-get "${apt_opts[@]}" source --download-only timescaledb)
    local orig
    orig=$(ls -1 "$src_dir"/timescaledb_*.orig.tar.* | sort -V | tail -n 1)
    local build_dir="$src_dir/build"
    rm -rf "$build_dir" && mkdir -p "$build_dir"
    tar -xf "$orig" -C "$build_dir" --strip-components=1
    log "building $(basename "$orig") (Apache-2 edition)"
    local build_log="$src_dir/build.log"
    if ! (
        cd "$build_dir"
        cmake -S . -B out -DPG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" \
            -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
            -DSEND_TELEMETRY_DEFAULT=OFF -DUSE_TELEMETRY=OFF -DWARNINGS_AS_ERRORS=OFF \
            -DCMAKE_BUILD_TYPE=Release
        make -C out -j"$(nproc)"
        as_root make -C out install
    ) >"$build_log" 2>&1; then
        tail -n 40 "$build_log"
        log "timescaledb build failed; full log in $build_log"
        exit 1
    fi
    timescaledb_installed || { log "timescaledb build did not install"; exit 1; }
    log "timescaledb installed"
}

# axe-core, the accessibility engine the browser tests run in Chromium, from the npm registry:
# a pinned version, checked against the registry's published SHA-512 before it is kept.
AXE_VERSION="4.14.1"
AXE_INTEGRITY="sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="

fetch_axe() {
    local target="$CACHE_DIR/axe-$AXE_VERSION.min.js"
    if [ -s "$target" ]; then
        log "axe-core $AXE_VERSION present"
        return
    fi
    mkdir -p "$CACHE_DIR"
    python3 - "$AXE_VERSION" "$AXE_INTEGRITY" "$target" <<'PY'
import base64, hashlib, io, sys, tarfile, urllib.request
version, integrity, target = sys.argv[1:]
url = f"https://registry.npmjs.org/axe-core/-/axe-core-{version}.tgz"
data = urllib.request.urlopen(url, timeout=120).read()
if "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode() != integrity:
    sys.exit(f"axe-core {version}: the download does not match its published SHA-512")
with tarfile.open(fileobj=io.BytesIO(data)) as archive:
    script = archive.extractfile("package/axe.min.js").read()
with open(target + ".part", "wb") as out:
    out.write(script)
PY
    mv "$target.part" "$target"
    log "axe-core $AXE_VERSION fetched"
}

install_packages
build_timescaledb
fetch_axe
