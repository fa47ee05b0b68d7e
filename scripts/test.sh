#!/usr/bin/env bash
# Install everything the test suite needs on a bare Debian/Ubuntu machine, then run it.
# The README's test command. Safe to re-run: installs are skipped when already there, and pip
# reuses its cached llama-cpp-python wheel (the first build takes ~10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(build-essential cmake git pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins
              espeak-ng sox libsox-fmt-mp3 systemd)  # systemd: systemd-analyze checks the service units
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "== apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
echo "== pip install -e .[demo,voice,serve,camera,dev]"
python -m pip install -q --upgrade pip
python -m pip install -q -e '.[demo,voice,serve,camera,dev]'

echo "== audio: PulseAudio with a null sink"
bash scripts/start_test_audio.sh

echo "== ruff (one style: lint + format)"
python -m ruff check .
python -m ruff format --check .

echo "== pytest"
python -m pytest "$@"
