#!/usr/bin/env bash
# Install everything the test suite needs on a bare Debian/Ubuntu machine, then run it.
# The README's test command. Safe to re-run: installs are skipped when already there, and pip
# reuses its cached llama-cpp-python wheel (the first build takes ~10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(build-essential cmake git pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins
              espeak-ng sox libsox-fmt-mp3 systemd iproute2)
# systemd: systemd-analyze checks the service units; iproute2: network namespaces stand in for boards on a LAN
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
# llama.cpp's RPC backend (edge-gemma worker, --workers) is a build option, as in the README's install.
export CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_RPC=ON"
python -m pip install -q -e '.[demo,voice,serve,camera,dev]'
if ! python -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_rpc() else 1)"; then
  # pip's wheel cache is keyed by the source archive, not CMAKE_ARGS: a wheel built without RPC is
  # reused silently. Drop it and build once more; the new wheel is the one cached from then on.
  echo "== llama-cpp-python was built without RPC: rebuilding it (about 10 minutes on two cores)"
  python -m pip cache remove llama_cpp_python >/dev/null 2>&1 || true
  python -m pip install -q --force-reinstall --no-deps llama-cpp-python==0.3.36
fi

echo "== audio: PulseAudio with a null sink"
bash scripts/start_test_audio.sh

echo "== ruff (one style: lint + format)"
python -m ruff check .
python -m ruff format --check .

echo "== pytest"
python -m pytest "$@"
