"""Home Assistant's built-in intents, offered to Gemma 4 as tools.

A call the model makes becomes a Wyoming `intent` event (name + entities), which Home Assistant
executes against the entities it knows; the model never needs the house's entity ids. Slots and
their meanings follow HA's built-in intent documentation (developers.home-assistant.io, "Built-in
intents"); only the commonly spoken ones are offered, to keep the prompt short on a small board.
"""

from __future__ import annotations

from typing import Any

from edge.model.tool_calls import ToolCall, ToolSpec

# Slot names say what they are, and every description is prompt to evaluate (all 14 intents: 1571
# tokens with one per slot, 1103 without): only slots whose meaning is not obvious carry one.
_TARGET = {
    "name": {"type": "string"},
    "area": {"type": "string"},
    "floor": {"type": "string"},
    "domain": {"type": "string", "description": "light, fan, cover, switch..."},
}
_MEDIA = {k: _TARGET[k] for k in ("name", "area", "floor")}


def _intent(name: str, description: str, properties: dict, required: tuple[str, ...] = ()) -> ToolSpec:
    return ToolSpec(name, description, {"type": "object", "properties": properties, "required": list(required)})


HA_INTENTS: tuple[ToolSpec, ...] = (
    _intent("HassTurnOn", "Turn on a device, or every device of a kind in an area", _TARGET),
    _intent("HassTurnOff", "Turn off a device, or every device of a kind in an area", _TARGET),
    _intent("HassToggle", "Toggle a device on or off", _TARGET),
    _intent(
        "HassGetState",
        "Ask whether a device is on, off, open, closed...",
        {**_TARGET, "state": {"type": "string", "description": "The state asked about, e.g. on, open"}},
    ),
    _intent(
        "HassLightSet",
        "Set a light's brightness or colour",
        {
            **_MEDIA,
            "brightness": {"type": "integer", "minimum": 0, "maximum": 100, "description": "Percent"},
            "color": {"type": "string", "description": "A colour name, e.g. red"},
        },
    ),
    _intent(
        "HassSetPosition",
        "Open or close a cover, blind or valve to a position",
        {**_TARGET, "position": {"type": "integer", "minimum": 0, "maximum": 100, "description": "Percent open"}},
        ("position",),
    ),
    _intent(
        "HassClimateSetTemperature",
        "Set the thermostat's target temperature",
        {**_MEDIA, "temperature": {"type": "number", "description": "Degrees, in the home's unit"}},
        ("temperature",),
    ),
    _intent(
        "HassStartTimer",
        "Start a timer",
        {
            "hours": {"type": "integer", "minimum": 0, "maximum": 23},
            "minutes": {"type": "integer", "minimum": 0, "maximum": 59},
            "seconds": {"type": "integer", "minimum": 0, "maximum": 59},
            "name": {"type": "string", "description": "What the timer is for, e.g. pasta"},
        },
    ),
    _intent("HassCancelTimer", "Cancel a timer", {"name": {"type": "string", "description": "The timer's name"}}),
    _intent("HassMediaPause", "Pause the music or video", _MEDIA),
    _intent("HassMediaUnpause", "Resume the music or video", _MEDIA),
    _intent("HassMediaNext", "Skip to the next track", _MEDIA),
    _intent(
        "HassSetVolume",
        "Set a media player's volume",
        {**_MEDIA, "volume_level": {"type": "integer", "minimum": 0, "maximum": 100, "description": "Percent"}},
        ("volume_level",),
    ),
    _intent(
        "HassListAddItem",
        "Add an item to a list, e.g. the shopping list",
        {
            "item": {"type": "string", "description": "What to add"},
            "name": {"type": "string", "description": "The list's name, e.g. shopping list"},
        },
        ("item", "name"),
    ),
)
SYSTEM_PROMPT = (
    "You are a voice assistant in a home. To control a device, set a timer or add to a list, call the "
    "matching tool with the names the user said; Home Assistant carries it out. Otherwise answer "
    "briefly, in plain spoken sentences: no lists, no markdown, no emoji."
)


def intent_entities(call: ToolCall) -> list[tuple[str, Any]]:
    """The call's arguments as HA slot entities (name, value), empty ones left out."""
    return [(k, v) for k, v in sorted(call.arguments.items()) if v not in (None, "")]
