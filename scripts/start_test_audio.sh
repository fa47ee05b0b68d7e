#!/usr/bin/env bash
# Start a PulseAudio daemon with a null sink whose monitor is the default capture source, so that
# PortAudio (through ALSA's 'pulse' device) records whatever is played into the sink. For tests and
# CI on machines with no sound card; safe to run again (it only adds what is missing).
#
# Works as root in a bare container (no dbus, no systemd, no XDG_RUNTIME_DIR). Besides the usual
# per-user socket it serves an anonymous socket at /var/run/pulse/native, the system-wide path
# every libpulse client tries by itself, so tests find the daemon even when they point HOME or
# XDG_CONFIG_HOME somewhere else. A script cannot export into its caller, so nothing is exported.
#
# Needs (Debian): pulseaudio pulseaudio-utils libasound2-plugins libportaudio2
set -euo pipefail

SINK="${EDGE_TEST_SINK:-edge_test_sink}"
SYSTEM_SOCKET_DIR=/var/run/pulse
LOG="${TMPDIR:-/tmp}/edge-gemma-pulseaudio.log"

say() { echo "start_test_audio: $*"; }

for tool in pulseaudio pactl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "error: '$tool' not found; install it: apt-get install pulseaudio pulseaudio-utils" >&2
        exit 1
    fi
done

# 1. The daemon. -n skips default.pa (udev, dbus and idle-suspend modules have nothing to do here);
# --exit-idle-time=-1 keeps it alive between test runs; real-time/high priority (granted to root,
# ignored otherwise) keep the null sink's clock steady on a busy CI machine.
if pactl info >/dev/null 2>&1; then
    say "PulseAudio is already running"
else
    pulseaudio --daemonize=yes --system=false -n \
        --exit-idle-time=-1 --disallow-exit \
        --realtime=true --high-priority=true \
        --log-target="file:$LOG" \
        -L module-native-protocol-unix
    for _ in $(seq 1 50); do
        pactl info >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! pactl info >/dev/null 2>&1; then
        say "error: PulseAudio did not come up; see $LOG" >&2
        exit 1
    fi
    say "started PulseAudio (log: $LOG)"
fi

loaded_modules() { pactl list short modules 2>/dev/null; }

# 2. The system-wide anonymous socket (only where we may create it).
if loaded_modules | grep -q "socket=$SYSTEM_SOCKET_DIR/native"; then
    say "socket $SYSTEM_SOCKET_DIR/native already served"
elif mkdir -p "$SYSTEM_SOCKET_DIR" 2>/dev/null && [ -w "$SYSTEM_SOCKET_DIR" ]; then
    rm -f "$SYSTEM_SOCKET_DIR/native"  # a stale socket from a daemon that died
    pactl load-module module-native-protocol-unix \
        "socket=$SYSTEM_SOCKET_DIR/native" auth-anonymous=1 >/dev/null
    say "serving $SYSTEM_SOCKET_DIR/native (any client in this machine finds it)"
else
    say "note: cannot write $SYSTEM_SOCKET_DIR; clients must use the per-user socket"
fi

# 3. The null sink and the defaults.
if pactl list short sinks | awk '{print $2}' | grep -qx "$SINK"; then
    say "null sink '$SINK' already loaded"
else
    pactl load-module module-null-sink "sink_name=$SINK" \
        "sink_properties=device.description=edge-gemma-test-sink" >/dev/null
    say "loaded null sink '$SINK'"
fi
pactl set-default-sink "$SINK"
pactl set-default-source "$SINK.monitor"
say "default sink: $SINK; default source: $SINK.monitor (records what is played into the sink)"
