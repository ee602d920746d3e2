#!/usr/bin/env bash
# Install, upgrade or remove hotspotd as a systemd service (Raspberry Pi OS / Debian bookworm or newer).
#
#   sudo scripts/install.sh                        install or upgrade from this checkout, enable, (re)start
#   sudo scripts/install.sh --uninstall            remove the program and the unit; keep config, data, user
#   sudo scripts/install.sh --uninstall --purge    ... and the config, the database and the user too
#
# Options:
#   --root DIR     install into DIR instead of / (tests): the unit is enabled offline, not started; the
#                  venv's scripts name DIR/opt/... (for an image, run this script chrooted into it)
#   --source DIR   the hotspotd checkout to install (default: the one holding this script)
#   --no-enable    do not enable or start the service
#
# What goes where: the user and group hotspotd (system, no login); /opt/hotspotd/venv (a symlink to
# the current virtual environment, the previous one kept for a rollback); /etc/hotspotd/hotspotd.toml
# (mode 0600, owned by hotspotd; never replaced: an upgrade writes the new default beside it as
# hotspotd.toml.dist); /var/lib/hotspotd (mode 0750, the database); the unit
# /etc/systemd/system/hotspotd.service. Running it twice changes nothing. An upgrade builds the new
# environment beside the old one and switches only once it accepts the existing config; the restart
# runs the database migrations, each in one transaction.
set -euo pipefail

NAME=hotspotd
ROOT=/
SOURCE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
action=install
purge=0
enable=1

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --root=*) ROOT=${1#*=} ;;
        --source) SOURCE=${2:?--source needs a directory}; shift ;;
        --source=*) SOURCE=${1#*=} ;;
        --uninstall) action=uninstall ;;
        --purge) purge=1 ;;
        --no-enable) enable=0 ;;
        -h|--help) usage 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage 2 >&2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || die "run as root (sudo $0 $*): it creates a user and writes to /etc and /opt"
[ $purge = 0 ] || [ $action = uninstall ] || die "--purge goes with --uninstall"
[ -d "$ROOT" ] || die "--root $ROOT: no such directory"
ROOT=$(cd "$ROOT" && pwd)
R=${ROOT%/}                       # prefix for every path: "" when installing into /
OPT=$R/opt/$NAME
ETC=$R/etc/$NAME
STATE=$R/var/lib/$NAME
UNIT=$R/etc/systemd/system/$NAME.service
# a running systemd (sd_booted): only then can the service be started here
booted=0
[ -z "$R" ] && [ -d /run/systemd/system ] && booted=1

root_args=()
[ -n "$R" ] && root_args=(--root "$ROOT")

user_exists() {
    if [ -z "$R" ]; then getent passwd "$NAME" >/dev/null; else grep -q "^$NAME:" "$R/etc/passwd"; fi
}

id_of() {   # id_of passwd|group → the numeric id of $NAME inside the root
    if [ -z "$R" ]; then
        getent "$1" "$NAME" | cut -d: -f3
    else
        awk -F: -v n="$NAME" '$1 == n { print $3 }' "$R/etc/$1"
    fi
}

systemctl_enable() {   # systemctl_enable enable|disable
    if [ -n "$R" ]; then
        systemctl --root="$ROOT" "$1" "$NAME.service" >/dev/null 2>&1 || true
    elif command -v systemctl >/dev/null 2>&1; then
        systemctl "$1" "$NAME.service" 2>&1 | grep -v '^Created symlink\|^Removed' || true
    fi
}

do_uninstall() {
    if [ $booted = 1 ]; then
        systemctl disable --now "$NAME.service" >/dev/null 2>&1 || true
    fi
    if [ -e "$UNIT" ]; then systemctl_enable disable; fi
    rm -f "$UNIT"
    rm -rf "$OPT"
    if [ $booted = 1 ]; then systemctl daemon-reload; fi
    if [ $purge = 1 ]; then
        rm -rf "$ETC" "$STATE"
        if user_exists; then
            userdel "${root_args[@]}" "$NAME"
        fi
        say "removed hotspotd, its configuration, its database and the user $NAME"
    else
        say "removed hotspotd; kept $ETC, $STATE and the user $NAME (--uninstall --purge removes them)"
    fi
}

apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

check_python() {
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        [ -z "$R" ] || die "$PYTHON cannot make virtual environments; apt-get install python3-venv"
        apt_install python3 python3-venv
    fi
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "hotspotd needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1)); Debian bookworm or newer has it"
}

create_user() {
    if ! user_exists; then
        # --root: useradd chroots into ROOT and edits its passwd, group, shadow and gshadow
        useradd "${root_args[@]}" --system --user-group --home-dir "/var/lib/$NAME" --no-create-home \
            --shell /usr/sbin/nologin --comment "hotspotd Wi-Fi controller" "$NAME" 2> >(grep -v "missing or non-executable shell" >&2)
        say "created the system user $NAME"
    fi
    uid=$(id_of passwd)
    gid=$(id_of group)
    if [ -z "$uid" ] || [ -z "$gid" ]; then die "cannot find the user $NAME in ${R}/etc/passwd"; fi
}

stage_source() {   # a clean copy of the checkout (no venv, build leftovers or caches) and its hash
    if [ ! -f "$SOURCE/setup.cfg" ] || [ ! -d "$SOURCE/hotspotd" ]; then die "--source $SOURCE is not a hotspotd checkout"; fi
    stage=$(mktemp -d /tmp/hotspotd-install.XXXXXX)
    tar -C "$SOURCE" -cf - --exclude-vcs --exclude=./.venv --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=.hypothesis --exclude=.pytest_cache \
        --exclude=./test-artifacts --exclude=./var . | tar -C "$stage" -xf -
    source_hash=$(cd "$stage" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
}

build_venv() {   # sets $venv (to run) and $changed: a new one, or the current one when it is this source and works
    local current=$OPT/venv
    changed=0
    if [ "$(cat "$current/.source-sha256" 2>/dev/null)" = "$source_hash" ] &&
            "$current/bin/hotspotd" --help >/dev/null 2>&1; then
        venv=$(readlink -f "$current")
        say "hotspotd from this source is already installed ($venv)"
        return 0
    fi
    changed=1
    venv=$OPT/venv-$(date +%Y%m%d%H%M%S)-${source_hash:0:8}
    rm -rf "$venv"
    building=$venv
    say "building $venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location "$stage" ||
        die "pip could not install hotspotd (network? see above); nothing was changed"
    echo "$source_hash" > "$venv/.source-sha256"
}

install_config() {
    local config=$ETC/$NAME.toml default=$stage/config/$NAME.toml
    grep -q '^url = "sqlite:////var/lib/hotspotd/hotspotd.db"' "$default" ||
        die "$default: [database] url is not the state directory's database"
    if [ ! -e "$config" ]; then
        install -m 0600 -o "$uid" -g "$gid" "$default" "$config"
        rm -f "$config.dist"
        say "wrote ${config} (edit it, then: systemctl reload $NAME)"
    elif cmp -s "$default" "$config"; then
        rm -f "$config.dist"
    else
        # the owner's file is theirs: never replaced; the new default (new keys, comments) beside it
        install -m 0640 -o 0 -g "$gid" "$default" "$config.dist"
        say "kept your ${config}; the new default is ${config}.dist"
    fi
}

check_config() {   # the new program must accept the existing config (read as the service user, when it can)
    local as=()
    [ -z "$R" ] && as=(runuser -u "$NAME" --)
    if ! "${as[@]}" "$venv/bin/python" -c '
import sys
from hotspotd import config
try:
    errors = config.permission_problems(sys.argv[1], config.load(sys.argv[1]))[0]
except config.ConfigError as exc:
    errors = [str(exc)]
sys.exit("; ".join(errors) or None)' "$ETC/$NAME.toml"; then
        die "the new version does not accept ${ETC}/$NAME.toml (above); fix it and run again (nothing was switched)"
    fi
}

switch_venv() {   # atomic: the unit's /opt/hotspotd/venv/bin/hotspotd is old or new, never half
    local previous
    previous=$(readlink -f "$OPT/venv" 2>/dev/null || true)
    ln -sfn "$(basename "$venv")" "$OPT/venv.new"
    mv -T "$OPT/venv.new" "$OPT/venv"
    building=
    for dir in "$OPT"/venv-*; do   # keep the current and the previous one (a rollback is one ln -sfn)
        [ "$dir" = "$venv" ] || [ "$dir" = "$previous" ] || rm -rf "$dir"
    done
}

cleanup() {
    [ -n "${stage:-}" ] && rm -rf "$stage"
    [ -n "${building:-}" ] && rm -rf "$building"
    return 0
}

do_install() {
    if [ -z "$R" ] && ! grep -qsE '^(ID|ID_LIKE)=.*(debian|raspbian)' /etc/os-release; then
        say "warning: not Debian or Raspberry Pi OS; carrying on"
    fi
    check_python
    create_user
    install -d -m 0755 -o 0 -g 0 "$OPT" "$R/etc/systemd/system"
    install -d -m 0750 -o 0 -g "$gid" "$ETC"
    install -d -m 0750 -o "$uid" -g "$gid" "$STATE"
    trap cleanup EXIT
    stage_source
    install_config
    build_venv
    check_config
    if [ $changed = 1 ]; then switch_venv; fi
    install -m 0644 -o 0 -g 0 "$stage/README.md" "$OPT/README.md"
    local unit_changed=1
    if cmp -s "$stage/systemd/$NAME.service" "$UNIT"; then unit_changed=0; fi
    install -m 0644 -o 0 -g 0 "$stage/systemd/$NAME.service" "$UNIT"
    if [ $enable = 0 ]; then
        say "installed; not enabled (--no-enable)"
        return 0
    fi
    if [ $booted = 0 ]; then
        systemctl_enable enable
        say "installed and enabled; systemd is not running here, so it starts at the next boot"
        return 0
    fi
    systemctl daemon-reload
    systemctl_enable enable
    if systemctl is-active --quiet "$NAME.service"; then
        if [ $changed = 1 ] || [ $unit_changed = 1 ]; then
            say "restarting $NAME (database migrations run at start)"
            systemctl restart "$NAME.service" || { journalctl -u "$NAME" -n 30 --no-pager >&2; die "$NAME did not restart"; }
        fi
    else
        systemctl start "$NAME.service" || { journalctl -u "$NAME" -n 30 --no-pager >&2; die "$NAME did not start"; }
    fi
    say "$NAME is running: systemctl status $NAME; logs: journalctl -u $NAME; checks: /opt/$NAME/venv/bin/$NAME --config /etc/$NAME/$NAME.toml check"
}

"do_$action"
