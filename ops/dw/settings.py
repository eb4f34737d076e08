"""Where ``dw`` finds its server, namespace and credentials: flags, then the environment
(``DW_SERVER``, ``DW_NAMESPACE``, ``DW_TOKEN``, ``DW_SIGNATURE_KEY``), then a config file
(``--config``, ``DW_CONFIG``, or ``~/.config/dw/config.toml``), then the defaults.

The config file is TOML with optional profiles::

    server = "http://127.0.0.1:8080"
    namespace = "default"
    token = "..."            # or signature_key = "..."

    [profiles.prod]
    server = "https://dw.internal:8080"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8080"
KEYS = ("server", "namespace", "token", "signature_key")


class SettingsError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    server: str
    namespace: str
    token: str | None
    signature_key: str | None
    output: str  # table | json


def _config_file(path: str | None) -> dict[str, Any]:
    explicit = path or os.environ.get("DW_CONFIG")
    candidate = Path(explicit) if explicit else Path.home() / ".config" / "dw" / "config.toml"
    if not candidate.exists():
        if explicit:
            raise SettingsError(f"config file {candidate} does not exist")
        return {}
    try:
        return tomllib.loads(candidate.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"config file {candidate} cannot be read: {exc}") from None


def resolve(flags: dict[str, str | None], config: str | None, profile: str | None, output: str) -> Settings:
    data = _config_file(config)
    section: dict[str, Any] = dict(data)
    if profile:
        profiles = data.get("profiles") or {}
        if profile not in profiles:
            raise SettingsError(f"profile {profile!r} is not in the config file (it has: {', '.join(sorted(profiles)) or 'none'})")
        section.update(profiles[profile])
    values: dict[str, str | None] = {}
    for key in KEYS:
        env = os.environ.get(f"DW_{key.upper()}")
        values[key] = flags.get(key) or env or (str(section[key]) if section.get(key) is not None else None)
    if values["token"] and values["signature_key"]:
        raise SettingsError("give a token or a signature key, not both")
    return Settings(
        server=(values["server"] or DEFAULT_SERVER).rstrip("/"), namespace=values["namespace"] or "default",
        token=values["token"], signature_key=values["signature_key"], output=output,
    )
