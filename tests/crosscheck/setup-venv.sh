#!/usr/bin/env bash
# Creates the Python virtual environment of the cross-check under
# ${CARGO_TARGET_DIR:-target}/crosscheck-venv with the packages of requirements.txt.
# Idempotent: returns at once when the environment already has those requirements.
#
# Needs python3 with the venv module, and a C++ compiler and the Python headers
# (channelattribution is built from source). Run as root on Debian or Ubuntu, it installs
# what is missing with apt-get.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${CROSSCHECK_VENV:-${CARGO_TARGET_DIR:-$root/target}/crosscheck-venv}
requirements=$here/requirements.txt

if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/requirements.installed"; then
    exit 0
fi

missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
python3 -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
    2>/dev/null || missing+=(python3-dev)
command -v g++ >/dev/null || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "setup-venv.sh: install ${missing[*]} (or the equivalent packages) first" >&2
        exit 1
    fi
    # python3-venv alone is not always enough: Debian splits ensurepip by minor version.
    version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [[ " ${missing[*]} " == *" python3-venv "* ]]; then missing+=("python$version-venv"); fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
cp "$requirements" "$venv/requirements.installed"
echo "setup-venv.sh: $("$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null |
    grep -iE '^(channelattribution|marketing.attribution.models) ' | tr -s ' ' | paste -sd ' ')"
