#!/bin/sh
# Install the Debian packages bftree needs, when they are missing.
# Usage: scripts/install-deps.sh [extra-package ...]
# Runs apt-get only when something is missing and we are root; otherwise it
# says what is missing and exits non-zero.
set -e
need=""
check() { # header-or-command package
  case "$1" in
    /*) [ -e "$1" ] || need="$need $2" ;;
    *) command -v "$1" >/dev/null 2>&1 || need="$need $2" ;;
  esac
}
check /usr/include/liburing.h liburing-dev
check /usr/include/cmocka.h libcmocka-dev
check /usr/include/sqlite3.h libsqlite3-dev
check sqlite3 sqlite3
check cc gcc
check make make
check pkg-config pkg-config
for p in "$@"; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing Debian packages:$need (run as root, or apt-get install them)" >&2
  exit 1
fi
echo "install-deps: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
