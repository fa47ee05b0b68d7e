"""systemd units for running `serve`, `voice` or `worker` headless on a board: written, enabled, removed.

A system unit (/etc/systemd/system, needs root) runs as the invoking user, so the model and config
that user's `setup` installed are the ones used; a `--user` unit runs in that user's own systemd
(the one PipeWire/PulseAudio live in, which suits voice; `loginctl enable-linger` starts it at boot).
Where systemd does not run (a container, a build machine) the unit and the commands are printed.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError, UsageError

KINDS = {
    "serve": "an OpenAI-compatible Gemma 4 server",
    "voice": "an offline Gemma 4 voice assistant",
    "worker": "an RPC worker lending this board's memory to another board's model",
}
NETWORKED = ("serve", "worker")  # started after the network is up
SERVICE_WAKE_WORD = "hey_jarvis"  # bundled with openWakeWord; heard reliably in our tests (docs: wake words)
# Flags whose values are secrets: they go to a 0600 environment file the unit loads, never into
# ExecStart, which every local user can read (`ps`, `systemctl cat`).
SECRET_FLAGS = {"--api-key": "EDGE_GEMMA_API_KEY"}
# systemd's usual sandboxing, where it costs nothing: the model and config in $HOME stay writable.
HARDENING = (
    "NoNewPrivileges=yes",
    "PrivateTmp=yes",
    "ProtectSystem=full",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
)


@dataclass(frozen=True)
class ServiceUnit:
    kind: str
    name: str  # edge-gemma-serve.service
    path: Path
    text: str
    user_mode: bool
    env_path: Path  # the secrets file the unit loads (written 0600 only when there are secrets)
    secrets: tuple[tuple[str, str], ...] = ()

    def systemctl(self, *args: str) -> list[str]:
        return ["systemctl", *(["--user"] if self.user_mode else []), *args]


def unit_for(kind: str, *, user_mode: bool, args: tuple[str, ...] = (), executable: Path | None = None) -> ServiceUnit:
    if kind not in KINDS:
        raise UsageError(f"there is no {kind!r} service; choose one of: {', '.join(KINDS)}")
    exe = executable or _edge_gemma_executable()
    user = getpass.getuser()
    name = f"edge-gemma-{kind}.service"
    args, secrets = split_secrets(args)
    if kind == "voice" and not any(a.split("=")[0] == "--wake-word" for a in args):
        # On a shelf it must answer its name only, not the television: `-- --wake-word none` opts out.
        args = (*args, "--wake-word", SERVICE_WAKE_WORD)
    env_dir = Path.home() / ".config/edge-gemma" if user_mode else Path("/etc/edge-gemma")
    env_path = env_dir / f"{kind}.env"
    service = [
        "Type=simple",
        f"ExecStart={shlex.join([str(exe), kind, *args])}",
        f"EnvironmentFile=-{env_path}",
        "Restart=on-failure",
        "RestartSec=5",
        "Environment=PYTHONUNBUFFERED=1",
        "StandardOutput=journal",
        "StandardError=journal",
    ]
    if not user_mode:
        service += [f"User={user}", f"WorkingDirectory={Path.home()}"]
        if kind == "voice":
            # The sound devices, and the user's audio server (PipeWire/PulseAudio) socket.
            service += ["SupplementaryGroups=audio", f"Environment=XDG_RUNTIME_DIR=/run/user/{os.getuid()}"]
        service += HARDENING
    else:
        service += ["NoNewPrivileges=yes"]  # the rest needs privileges a user manager may not have
    after = "network-online.target" if kind in NETWORKED else "sound.target"
    text = "\n".join(
        [
            "[Unit]",
            f"Description=edge-gemma {kind}: {KINDS[kind]}",
            f"After={after}",
            *(["Wants=network-online.target"] if kind in NETWORKED else []),
            # A crash loop (a broken model file, say) stops after 5 tries in 10 minutes instead of spinning.
            "StartLimitIntervalSec=600",
            "StartLimitBurst=5",
            "",
            "[Service]",
            *service,
            "",
            "[Install]",
            f"WantedBy={'default.target' if user_mode else 'multi-user.target'}",
            "",
        ]
    )
    base = Path.home() / ".config/systemd/user" if user_mode else Path("/etc/systemd/system")
    return ServiceUnit(kind, name, base / name, text, user_mode, env_path, secrets)


def split_secrets(args: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(the arguments without secret flags, (ENV_NAME, value) for each secret found)."""
    kept: list[str] = []
    secrets: list[tuple[str, str]] = []
    items = iter(args)
    for arg in items:
        flag, eq, value = arg.partition("=")
        if flag in SECRET_FLAGS:
            value = value if eq else next(items, "")
            if not value:
                raise UsageError(f"{flag} needs a value")
            secrets.append((SECRET_FLAGS[flag], value))
        else:
            kept.append(arg)
    return tuple(kept), tuple(secrets)


def _write_secrets(unit: ServiceUnit) -> None:
    """KEY=value lines, created 0600 so no other user reads them (not even for an instant)."""
    unit.env_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(unit.env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as env:
        os.fchmod(env.fileno(), 0o600)  # an older file may have had looser bits
        env.writelines(f"{key}={shlex.quote(value)}\n" for key, value in unit.secrets)


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def install(unit: ServiceUnit) -> list[str]:
    """Write the unit; enable and start it where systemd runs. Returns what to tell the user."""
    if not unit.user_mode and os.geteuid() != 0:
        raise UsageError("a system service needs root: run it with sudo, or use --user for your own systemd")
    try:
        if unit.secrets:
            _write_secrets(unit)
        unit.path.parent.mkdir(parents=True, exist_ok=True)
        unit.path.write_text(unit.text)
    except OSError as exc:
        raise EdgeError(f"cannot write {unit.path} ({exc.strerror or exc}); check permissions") from exc
    commands = [unit.systemctl("daemon-reload"), unit.systemctl("enable", "--now", unit.name)]
    lines = [f"wrote {unit.path}"] + ([f"wrote {unit.env_path} (mode 0600: the API key)"] if unit.secrets else [])
    if not systemd_running():
        return lines + ["systemd is not running here; on the board run:"] + [f"  {shlex.join(c)}" for c in commands]
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise EdgeError(f"`{shlex.join(command)}` failed: {done.stderr.strip()[:200]}")
    lines.append(
        f"enabled and started {unit.name}; logs: journalctl {'--user ' if unit.user_mode else ''}-u {unit.name} -f"
    )
    if unit.user_mode:
        lines.append(f"to start it at boot without logging in: sudo loginctl enable-linger {getpass.getuser()}")
    return lines


def status(unit: ServiceUnit) -> str:
    if not unit.path.exists():
        return f"{unit.name} is not installed ({unit.path} does not exist)"
    if not systemd_running():
        return f"{unit.name} is installed at {unit.path}; systemd is not running here"
    done = subprocess.run(unit.systemctl("status", "--no-pager", unit.name), capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()


def uninstall(unit: ServiceUnit) -> list[str]:
    if not unit.path.exists():
        return [f"{unit.name} is not installed"]
    lines = []
    if systemd_running():
        subprocess.run(unit.systemctl("disable", "--now", unit.name), capture_output=True)
    try:
        unit.path.unlink()
        unit.env_path.unlink(missing_ok=True)
    except OSError as exc:
        raise EdgeError(f"cannot remove {unit.path} ({exc.strerror or exc}); run with sudo for a system unit") from exc
    lines.append(f"removed {unit.path}")
    if systemd_running():
        subprocess.run(unit.systemctl("daemon-reload"), capture_output=True)
    return lines


def _edge_gemma_executable() -> Path:
    """The edge-gemma command of this installation (its venv), so the service runs the same one."""
    beside = Path(sys.executable).with_name("edge-gemma")
    found = beside if beside.exists() else shutil.which("edge-gemma")
    if not found:
        raise EdgeError("cannot find the edge-gemma command of this installation; install it with pip first")
    return Path(found)
