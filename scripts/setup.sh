#!/usr/bin/env bash
# Set up emotrack in ./.venv: system packages (Debian/Ubuntu), then the Python package.
#   scripts/setup.sh          runtime and the report extra (replay, stream, predict, separate,
#                             features, record, view, report)
#   scripts/setup.sh --test   plus the training and test extras (TensorFlow, pytest)
set -euo pipefail
cd "$(dirname "$0")/.."

extras="[report]"
[ "${1:-}" = "--test" ] && extras="[report,training,test]"

apt_pkgs="ffmpeg libsndfile1 libportaudio2"
[ "${1:-}" = "--test" ] && apt_pkgs="$apt_pkgs fluidsynth chromium chromium-driver pulseaudio libasound2-plugins"
missing=""
for p in $apt_pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing system packages:$missing" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: please install these system packages yourself:$missing" >&2
  fi
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "emotrack needs Python 3.11 (the TensorFlow/Spleeter stack pins it)"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extras}"
[ "${1:-}" = "--test" ] && .venv/bin/python -m pip install -q --no-deps musicnn==0.1.0  # MSD_musicnn checkpoint (ISC); pins an old numpy, so no deps
echo "setup: ready (.venv/bin/emotrack)" >&2
