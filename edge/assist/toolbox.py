"""The voice loop's own tools, for a speaker with no Home Assistant: the time and date, timers,
a calculator, and a camera to look through. Each is a ToolSpec the model sees and a function that
answers its call.

Timers run on the audio stream's clock (seconds of sound heard), so a file read faster than real
time rings them as a microphone would have, and a test need not wait. The loop asks `due()` between
audio blocks and speaks what rang, even in the middle of a conversation.
"""

from __future__ import annotations

import ast
import datetime
import math
import operator
import threading
from collections.abc import Callable
from dataclasses import dataclass

from edge.errors import ImageError, UsageError
from edge.model.tool_calls import ToolCall, ToolSpec

MAX_TIMER_SECONDS = 24 * 3600


@dataclass
class Timer:
    name: str
    seconds: float
    ends_at: float  # stream seconds


class TimerBoard:
    """Named timers; several may run at once. Thread-safe: the turn worker starts them, the loop rings them."""

    def __init__(self) -> None:
        self._timers: list[Timer] = []
        self._lock = threading.Lock()

    def start(self, seconds: float, name: str, now: float) -> Timer:
        name = name.strip() or self._next_name()
        timer = Timer(name, seconds, now + seconds)
        with self._lock:
            self._timers = [t for t in self._timers if t.name != name] + [timer]
        return timer

    def cancel(self, name: str) -> list[Timer]:
        """Timers matching `name` ('' or 'all': every timer)."""
        with self._lock:
            gone = [t for t in self._timers if name in ("", "all") or t.name == name.strip()]
            self._timers = [t for t in self._timers if t not in gone]
        return gone

    def running(self) -> list[Timer]:
        with self._lock:
            return sorted(self._timers, key=lambda t: t.ends_at)

    def due(self, now: float) -> list[Timer]:
        """The timers that have rung by `now`, removed."""
        with self._lock:
            rung = [t for t in self._timers if t.ends_at <= now]
            self._timers = [t for t in self._timers if t.ends_at > now]
        return rung

    def _next_name(self) -> str:
        names = {t.name for t in self._timers}
        return next(f"timer {i}" for i in range(1, len(names) + 2) if f"timer {i}" not in names)


def spoken_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    parts = [(seconds // 3600, "hour"), (seconds % 3600 // 60, "minute"), (seconds % 60, "second")]
    words = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n]
    return " and ".join(words) or "0 seconds"


# -- the calculator: arithmetic only, never eval ---------------------------------------------------

_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_FUNCTIONS = {"sqrt": math.sqrt, "round": round, "abs": abs}


def calculate(expression: str) -> float:
    """+ - * / // % ** and parentheses over numbers, sqrt/round/abs; anything else is refused."""
    text = expression.replace("^", "**").replace("×", "*").replace("÷", "/").strip()
    if not text or len(text) > 200:
        raise ValueError("give an arithmetic expression of at most 200 characters")
    return float(_evaluate(ast.parse(text, mode="eval").body))


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 100:
            raise ValueError("exponent too large")
        return _OPERATORS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        return _FUNCTIONS[node.func.id](*[_evaluate(a) for a in node.args])
    raise ValueError("only numbers, + - * / % ** and parentheses are understood")


# -- the toolbox -------------------------------------------------------------------------------------

_SPECS = {
    "time": [ToolSpec("get_time", "The current time, weekday and date here", {"type": "object", "properties": {}})],
    "timers": [
        ToolSpec(
            "start_timer",
            "Start a named timer; it is announced aloud when it rings",
            {
                "type": "object",
                "properties": {
                    "hours": {"type": "integer", "minimum": 0, "maximum": 23},
                    "minutes": {"type": "integer", "minimum": 0, "maximum": 59},
                    "seconds": {"type": "integer", "minimum": 0, "maximum": 59},
                    "name": {"type": "string", "description": "What the timer is for, e.g. pasta"},
                },
            },
        ),
        ToolSpec("list_timers", "The timers running and the time left on each", {"type": "object", "properties": {}}),
        ToolSpec(
            "cancel_timer",
            "Cancel a timer by name, or every timer with 'all'",
            {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        ),
    ],
    "calculator": [
        ToolSpec(
            "calculate",
            "Work out an arithmetic expression, e.g. 17.5 * 3 + 2",
            {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
        )
    ],
    "camera": [
        ToolSpec(
            "look",
            "Take one picture with the camera and look at it: for what the user is holding or showing, "
            "or what is in front of you",
            {"type": "object", "properties": {}},
        )
    ],
}
TOOL_GROUPS = tuple(_SPECS)


class Toolbox:
    """The offline tools chosen with `--tools` (a comma list of TOOL_GROUPS, 'all' or 'none')."""

    def __init__(self, groups: str = "all", *, clock: Callable[[], float] = lambda: 0.0, camera: str | None = None):
        """`camera`: the source `look` opens for each picture (vision/camera.py); without one, "all"
        leaves the camera out and asking for it is an error."""
        chosen = _parse_groups(groups)
        if camera is None and "camera" in chosen:
            if groups.strip() != "all":
                raise UsageError("the camera tool needs a camera: pass --camera SOURCE (an index, picamera2, ...)")
            chosen.remove("camera")
        self.specs: tuple[ToolSpec, ...] = tuple(spec for group in chosen for spec in _SPECS[group])
        self.timers = TimerBoard()
        self.clock = clock  # stream seconds now (set by the voice loop)
        self.camera = camera

    def __bool__(self) -> bool:
        return bool(self.specs)

    def run(self, call: ToolCall) -> dict:
        """The result the model reads back; a bad call is an error it can explain, never a crash."""
        handler = getattr(self, f"_{call.name}", None)
        if handler is None or call.name not in {s.name for s in self.specs}:
            return {"error": f"there is no tool named {call.name}"}
        try:
            return handler(**call.arguments)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, ImageError) as exc:
            return {"error": str(exc) or type(exc).__name__}

    def _look(self) -> dict:
        """One frame, the camera open only while it is taken: never watching in between."""
        from edge.vision.camera import open_camera

        with open_camera(self.camera) as camera:
            return {"picture": camera.capture()}

    def _get_time(self) -> dict:
        now = datetime.datetime.now().astimezone()
        return {"time": now.strftime("%H:%M"), "weekday": now.strftime("%A"), "date": now.strftime("%d %B %Y")}

    def _start_timer(self, hours: int = 0, minutes: int = 0, seconds: int = 0, name: str = "") -> dict:
        total = hours * 3600 + minutes * 60 + seconds
        if not 0 < total <= MAX_TIMER_SECONDS:
            raise ValueError("a timer needs a duration between one second and a day")
        timer = self.timers.start(total, name, self.clock())
        return {"started": timer.name, "duration": spoken_duration(total)}

    def _list_timers(self) -> dict:
        now = self.clock()
        return {"timers": [{"name": t.name, "left": spoken_duration(t.ends_at - now)} for t in self.timers.running()]}

    def _cancel_timer(self, name: str) -> dict:
        gone = self.timers.cancel(name)
        return {"cancelled": [t.name for t in gone]} if gone else {"error": f"no timer named {name}"}

    def _calculate(self, expression: str) -> dict:
        value = calculate(expression)
        return {"result": int(value) if value.is_integer() and abs(value) < 1e15 else round(value, 10)}


def _parse_groups(groups: str) -> list[str]:
    names = [g.strip() for g in groups.split(",") if g.strip()]
    if names in (["all"], []):
        return list(TOOL_GROUPS) if names else []
    if names == ["none"]:
        return []
    unknown = [g for g in names if g not in TOOL_GROUPS]
    if unknown:
        raise UsageError(f"unknown tools {', '.join(unknown)}; choose from {', '.join(TOOL_GROUPS)}, all or none")
    return names
