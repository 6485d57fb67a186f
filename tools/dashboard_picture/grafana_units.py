"""Grafana's unit formatters, value mappings and threshold colours (dark theme)."""

from __future__ import annotations

import math

# Grafana's named colours (dark theme) and its classic series palette.
NAMED_COLORS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a",
                "blue": "#5794f2", "purple": "#b877d9", "text": "#ccccdc", "transparent": "transparent"}
CLASSIC = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a6", "#705da0",
           "#508642", "#cca300", "#447ebc", "#c15c17", "#890f02", "#0a437c", "#6d1f62", "#584477"]


def color(name: str | None) -> str:
    """A Grafana colour name (or CSS colour) as CSS."""
    return NAMED_COLORS.get(name or "text", name or NAMED_COLORS["text"])


def _fixed(number: float, decimals: int | None) -> str:
    if decimals is None:  # Grafana's "auto", roughly
        magnitude = abs(number)
        whole = abs(number - round(number)) < 1e-9 * max(1.0, magnitude)
        decimals = 0 if magnitude >= 100 or whole else 1 if magnitude >= 10 else 2
    return f"{number:.{decimals}f}"


def _scaled(value: float, base: int, units: tuple[str, ...], decimals: int | None) -> str:
    magnitude, index = abs(value), 0
    while magnitude >= base and index < len(units) - 1:
        magnitude, index = magnitude / base, index + 1
    return f"{_fixed(math.copysign(magnitude, value), decimals)}{units[index]}"


def _seconds(value: float, decimals: int | None) -> str:
    magnitude = abs(value)
    if magnitude == 0:
        return "0 s"
    for limit, divisor, unit in ((1e-3, 1e-6, "µs"), (1, 1e-3, "ms"), (60, 1, "s"), (3600, 60, "min"),
                                 (86400, 3600, "hour"), (604800, 86400, "day"), (31536000, 604800, "week")):
        if magnitude < limit:
            return f"{_fixed(value / divisor, decimals)} {unit}"
    return f"{_fixed(value / 31536000, decimals)} year"


def format_value(value: float | None, unit: str | None = None, decimals: int | None = None) -> str:
    """A value as Grafana's unit formatters show it: bytes/binBps in IEC, percentunit, s, short."""
    if value is None:
        return "No data"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "bytes":
        return _scaled(value, 1024, (" B", " KiB", " MiB", " GiB", " TiB", " PiB", " EiB"), decimals)
    if unit == "binBps":
        return _scaled(value, 1024, (" B/s", " KiB/s", " MiB/s", " GiB/s", " TiB/s", " PiB/s"), decimals)
    if unit == "percentunit":
        return f"{_fixed(value * 100, decimals)}%"
    if unit == "percent":
        return f"{_fixed(value, decimals)}%"
    if unit == "s":
        return _seconds(value, decimals)
    if unit in (None, "", "none", "short"):
        return _scaled(value, 1000, ("", " K", " Mil", " Bil", " Tri"), decimals)
    if unit.startswith("suffix:"):  # Grafana's custom unit: the number, then the text as it is
        return f"{_fixed(value, decimals)}{unit.removeprefix('suffix:')}"
    return f"{_fixed(value, decimals)} {unit}"


def map_value(value: float | None, mappings: list) -> tuple[str, str | None] | None:
    """(text, colour) of the first value/range mapping that matches, as Grafana applies them."""
    for mapping in mappings or []:
        options = mapping.get("options", {})
        if mapping.get("type") == "value" and value is not None:
            for key, result in options.items():
                try:
                    if float(key) == value:
                        return result.get("text", key), result.get("color")
                except ValueError:
                    continue
        elif mapping.get("type") == "range" and value is not None:
            low, high = options.get("from"), options.get("to")
            if (low is None or value >= low) and (high is None or value <= high):
                return options["result"].get("text", ""), options["result"].get("color")
    return None


def value_color(value: float | None, config: dict) -> str:
    """The colour Grafana gives a value: a fixed colour, or the threshold step it falls in."""
    mode = config.get("color", {}).get("mode", "thresholds")
    if mode == "fixed":
        return color(config["color"].get("fixedColor"))
    steps = config.get("thresholds", {}).get("steps") or [{"color": "green", "value": None}]
    chosen = steps[0]["color"]
    for step in steps:
        if step.get("value") is None or (value is not None and not math.isnan(value) and value >= step["value"]):
            chosen = step["color"]
    return color(chosen)


def display(value: float | None, config: dict) -> tuple[str, str]:
    """(text, colour) of a value: value mappings first, then the unit's formatter."""
    mapped = map_value(value, config.get("mappings", []))
    if mapped:
        return mapped[0], color(mapped[1]) if mapped[1] else value_color(value, config)
    return format_value(value, config.get("unit"), config.get("decimals")), value_color(value, config)


def field_defaults(panel: dict) -> dict:
    """The panel's fieldConfig defaults: unit, decimals, thresholds, mappings, min/max."""
    return panel.get("fieldConfig", {}).get("defaults", {})
