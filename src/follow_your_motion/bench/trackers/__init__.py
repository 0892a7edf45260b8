"""Point trackers for the benchmark, looked up by name so a run config can pick one."""

from __future__ import annotations

from collections.abc import Callable

from ...errors import InputError
from .cotracker import track_grid_cotracker
from .klt import Tracks, track_grid

TRACKERS: dict[str, Callable[..., Tracks]] = {"klt": track_grid, "cotracker": track_grid_cotracker}


def get_tracker(name: str) -> Callable[..., Tracks]:
    """The grid-tracking function called ``name`` ("klt" or "cotracker")."""
    try:
        return TRACKERS[name]
    except KeyError:
        raise InputError(f"unknown tracker {name!r}; valid trackers: {', '.join(sorted(TRACKERS))}") from None


__all__ = ["TRACKERS", "Tracks", "get_tracker", "track_grid", "track_grid_cotracker"]
