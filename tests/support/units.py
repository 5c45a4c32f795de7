"""Reading the shipped systemd unit files in tests."""

from __future__ import annotations

from pathlib import Path


def service_settings(unit: Path) -> dict[str, list[str]]:
    """A unit file's [Service] settings: name -> every value given, in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif line and not line.startswith("#") and section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings
