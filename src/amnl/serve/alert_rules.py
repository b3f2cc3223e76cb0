"""Alert rules with hysteresis, and the lifecycle of one alert per asset and rule.

Anchored on ThingsBoard's alarms: an alert is raised when its rule has held for
``raise_after`` consecutive cycles, and cleared when it has not held for ``clear_after``
consecutive cycles. Its states::

    active_unacknowledged --ack--> active_acknowledged
            |                               |
            +-----------> cleared <---------+      (cleared_unacknowledged / cleared_acknowledged)

There is at most one open (not cleared) alert per asset and rule; once cleared, the next
raise opens a new one. Every transition (raised, acknowledged, cleared) is an event with its
time and cycle, stored in the transaction of the prediction (or the request) that caused it,
and delivered to the webhooks (:mod:`amnl.serve.webhooks`).

Rules see a prediction's calibrated lower bound (``rul_lower``, the prediction itself when the
model has no calibration) and its health probabilities. The defaults: RUL lower bound under 30
cycles (critical), and health ``critical`` with probability over 0.5 (major), each raised after
3 consecutive cycles and cleared after 3.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amnl.errors import ConfigError

#: What a rule can look at.
RULE_KINDS = ("rul_lower_below", "p_critical_above", "p_degrading_above", "rul_below")
SEVERITIES = ("critical", "major", "minor", "warning")
#: The states of an alert.
STATES = ("active_unacknowledged", "active_acknowledged", "cleared_unacknowledged",
          "cleared_acknowledged")
OPEN_STATES = STATES[:2]


@dataclass(frozen=True)
class AlertRule:
    """One rule of the fleet.

    Attributes:
        name: its id (letters, digits, ``_``); one open alert per asset and name.
        kind: what it compares (:data:`RULE_KINDS`).
        threshold: the line.
        severity: one of :data:`SEVERITIES`.
        raise_after: consecutive cycles the rule must hold before the alert is raised.
        clear_after: consecutive cycles it must not hold before the alert is cleared.
    """

    name: str
    kind: str
    threshold: float
    severity: str = "major"
    raise_after: int = 3
    clear_after: int = 3

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").isalnum():
            raise ConfigError(f"alert rule name {self.name!r}: letters, digits and _ only")
        if self.kind not in RULE_KINDS:
            raise ConfigError(f"alert rule {self.name}: kind must be one of "
                              f"{', '.join(RULE_KINDS)}, got {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ConfigError(f"alert rule {self.name}: severity must be one of "
                              f"{', '.join(SEVERITIES)}, got {self.severity!r}")
        if self.raise_after < 1 or self.clear_after < 1:
            raise ConfigError(f"alert rule {self.name}: raise_after and clear_after must be >= 1")

    def holds(self, p: dict) -> bool:
        """Whether the rule holds for a prediction row (rul, rul_lower, p_*)."""
        if self.kind == "rul_lower_below":
            lower = p.get("rul_lower")
            return (p["rul"] if lower is None else lower) < self.threshold
        if self.kind == "rul_below":
            return p["rul"] < self.threshold
        if self.kind == "p_critical_above":
            return p["p_critical"] > self.threshold
        return p["p_degrading"] > self.threshold

    def describe(self) -> str:
        what = {"rul_lower_below": "RUL lower bound <", "rul_below": "RUL <",
                "p_critical_above": "P(critical) >", "p_degrading_above": "P(degrading) >"}
        return (f"{what[self.kind]} {self.threshold:g} for {self.raise_after} cycles "
                f"(clears after {self.clear_after})")


DEFAULT_RULES = (
    AlertRule("low_rul", "rul_lower_below", 30.0, "critical", 3, 3),
    AlertRule("critical_health", "p_critical_above", 0.5, "major", 3, 3),
)


def load_rules(path: str | Path | None) -> tuple[AlertRule, ...]:
    """Rules from a JSON file (a list of :class:`AlertRule` fields), or the defaults.

    Raises:
        ConfigError: a file that is not such a list, or duplicate names.
    """
    if path is None:
        return DEFAULT_RULES
    try:
        items = json.loads(Path(path).read_text())
        rules = tuple(AlertRule(**item) for item in items)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a list of alert rules ({exc})") from None
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: alert rule names must be unique")
    return rules


@dataclass
class Streak:
    """Hysteresis state of one (asset, rule): persisted with the asset."""

    held: int = 0
    released: int = 0
    open_id: int | None = None


@dataclass
class AssetAlerts:
    """Hysteresis state of one asset: the last cycle evaluated and a streak per rule."""

    cycle: int = 0
    streaks: dict[str, Streak] = field(default_factory=dict)

    def copy(self) -> AssetAlerts:
        return AssetAlerts(self.cycle, {k: Streak(v.held, v.released, v.open_id)
                                        for k, v in self.streaks.items()})

    def to_json(self) -> str:
        return json.dumps({"cycle": self.cycle,
                           "streaks": {k: asdict(v) for k, v in self.streaks.items()}})

    @classmethod
    def from_json(cls, text: str | None) -> AssetAlerts:
        if not text:
            return cls()
        d = json.loads(text)
        return cls(int(d["cycle"]), {k: Streak(**v) for k, v in d["streaks"].items()})


@dataclass
class Transition:
    """An alert changed: ``raised`` (a new alert), ``cleared`` or ``acknowledged``."""

    kind: str
    asset_id: str
    rule: AlertRule
    cycle: int
    value: float
    alert_id: int | None = None


def evaluate(rules: tuple[AlertRule, ...], state: AssetAlerts, asset_id: str,
             prediction: dict) -> list[Transition]:
    """Advance ``state`` by one prediction (the cycle after ``state.cycle``); the transitions
    it causes (``alert_id`` of a raise is filled in when the alert row is written)."""
    out = []
    cycle = int(prediction["cycle"])
    for rule in rules:
        s = state.streaks.setdefault(rule.name, Streak())
        value = _value(rule, prediction)
        if rule.holds(prediction):
            s.held, s.released = s.held + 1, 0
            if s.open_id is None and s.held >= rule.raise_after:
                out.append(Transition("raised", asset_id, rule, cycle, value))
        else:
            s.held, s.released = 0, s.released + 1
            if s.open_id is not None and s.released >= rule.clear_after:
                out.append(Transition("cleared", asset_id, rule, cycle, value, s.open_id))
                s.open_id = None
    state.cycle = cycle
    return out


def _value(rule: AlertRule, p: dict) -> float:
    if rule.kind == "rul_lower_below":
        return float(p["rul"] if p.get("rul_lower") is None else p["rul_lower"])
    if rule.kind == "rul_below":
        return float(p["rul"])
    return float(p["p_critical"] if rule.kind == "p_critical_above" else p["p_degrading"])
