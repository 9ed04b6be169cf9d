"""Where the extender's current ``ClusterState`` lives: written by the sync (refresh.py), a snapshot
(snapshot_mode.py) or a test, read once per request by the decision (judge.py). It knows neither,
and touches nothing of the process (the live sync tells ``linstor_scheduler.gcpolicy`` itself)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .state import EMPTY_STATE, ClusterState


@dataclass
class StateHolder:
    """Where the current ``ClusterState`` lives; swapped whole by the sync, read by requests."""

    state: ClusterState = EMPTY_STATE
    ready: bool = False
    static: bool = False  # snapshot mode: the state never ages
    last_error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def swap(self, state: ClusterState) -> bool:
        """``state`` in, with one reference assignment (atomic for readers); True when its content is
        new (another generation), False when it re-stamps the one held."""
        new_content = state.generation != self.state.generation
        self.state = state
        return new_content
