"""Read the Grafana dashboard's PromQL: walk panels and targets, resolve variables (through Prometheus' API) and macros."""
import json
import re
import time
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent.parent / "grafana" / "dashboards" / "pve-datastores.json"

# Grafana's global macros, with values that suit a Prometheus scraping every second (tests).
TEST_MACROS = {
    "__rate_interval": "10s",
    "__interval_ms": "2000",
    "__interval": "2s",
    "__range_ms": "60000",
    "__range_s": "60",
    "__range": "1m",
}
_REGEX_SPECIAL = set("\\^$*+?.()|[]{}")
_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),)?\s*(\w+)\s*\)\s*$", re.DOTALL)


def load(path=DASHBOARD):
    """The dashboard as a dict."""
    return json.loads(Path(path).read_text())


def iter_panels(dashboard):
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def iter_targets(dashboard):
    """(panel, target) for every query target of every panel."""
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def variables(dashboard):
    """The template variables, in order."""
    return dashboard.get("templating", {}).get("list", [])


def variable_query(variable):
    """A query variable's query string (Grafana stores it as a string or as an object)."""
    query = variable.get("query")
    return query.get("query", "") if isinstance(query, dict) else (query or "")


def parse_label_values(query):
    """`label_values(selector, label)` -> (selector or None, label)."""
    match = _LABEL_VALUES.match(query)
    if not match:
        raise ValueError(f"not a label_values() query: {query!r}")
    return (match.group(1) or "").strip() or None, match.group(2)


def regex_value(values):
    """Format values as Grafana's Prometheus data source does for a multi-value variable in =~."""
    escaped = ["".join("\\\\" + c if c in _REGEX_SPECIAL else c for c in v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr, values, macros=TEST_MACROS):
    """Replace $var, ${var}, ${var:fmt}, [[var]] and Grafana's $__macros in an expression."""
    scope = {**values, **macros}

    def repl(match):
        name = match.group(1) or match.group(3) or match.group(4)
        if name not in scope:
            raise KeyError(f"unknown variable ${name} in {expr!r}")
        return scope[name]

    return _VAR.sub(repl, expr)


def label_values(prometheus, query, at=None):
    """Resolve a `label_values(...)` variable query the way Grafana does, through the HTTP API.

    `at`: the Unix time the dashboard looks at (default now); the series of its last 5 minutes count.
    """
    selector, label = parse_label_values(query)
    if selector is None:
        return sorted(prometheus.api(f"label/{label}/values"))
    end = time.time() if at is None else at
    series = prometheus.api("series", **{"match[]": selector, "start": end - 300, "end": end})
    return sorted({s[label] for s in series if label in s})


def resolve_variables(prometheus, dashboard, all_value=None, at=None):
    """Variable values in dashboard order; multi-value ones get every value (or `all_value`)."""
    values = {}
    for variable in variables(dashboard):
        if variable["type"] == "datasource":
            values[variable["name"]] = "prometheus"
            continue
        found = label_values(prometheus, substitute(variable_query(variable), values), at)
        if not found:
            raise LookupError(f"variable ${variable['name']} has no values")
        if not variable.get("multi"):
            values[variable["name"]] = regex_value(found[:1])
        else:
            values[variable["name"]] = all_value or regex_value(found)
    return values
