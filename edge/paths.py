"""Where edge-gemma keeps its files. Honours XDG_* and EDGE_GEMMA_HOME (one root for everything)."""

import os
from pathlib import Path


def _base(kind: str, xdg_var: str, home_fallback: str) -> Path:
    root = os.environ.get("EDGE_GEMMA_HOME")
    if root:
        return Path(root) / kind
    xdg = os.environ.get(xdg_var)
    return (Path(xdg) if xdg else Path.home() / home_fallback) / "edge-gemma"


def config_dir() -> Path:
    """User settings: device config, tuned threads, user profiles."""
    return _base("config", "XDG_CONFIG_HOME", ".config")


def data_dir() -> Path:
    """Models and saved benchmark results."""
    return _base("data", "XDG_DATA_HOME", ".local/share")


def models_dir() -> Path:
    """EDGE_GEMMA_MODELS moves the (large) model files elsewhere, e.g. onto an SSD."""
    override = os.environ.get("EDGE_GEMMA_MODELS")
    return Path(override) if override else data_dir() / "models"


def user_profiles_dir() -> Path:
    """Profiles here add to or override the built-in ones (same file name = override)."""
    return config_dir() / "profiles"


def cache_dir() -> Path:
    """Facts worth remembering but safe to lose: the CPU backend probe's verdict."""
    return _base("cache", "XDG_CACHE_HOME", ".cache")
