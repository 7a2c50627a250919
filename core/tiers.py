"""Referral tiers: the one owner of their order, wording, time frames and colours.

The tiers follow the common OCT triage of De Fauw et al., Nature Medicine 2018 (urgent,
semi-urgent, routine, observation), with two outcomes of our own: "review advised" (the model
could neither refer nor rule out disease) and "rescan" (too few gradable B-scans). A model card
may reword any tier (its ``thresholds.tiers``; a site adapts the time frames to its own pathways);
what is not reworded comes from :data:`DEFAULT_TIERS`. The GUI, the PDF report and the CSV/JSON
all take tier names and colours from here (colour is never the only carrier: the name is shown too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Tier", "DEFAULT_TIERS", "TIER_ORDER", "resolve_tiers", "tier_colours", "CLASS_COLOURS", "class_colour"]


@dataclass(frozen=True)
class Tier:
    """One outcome of the per-eye decision."""

    id: str  # urgent | soon | routine | none | review | rescan
    name: str  # shown on badges and in the report, e.g. "Urgent referral"
    action: str  # what to do ("Refer to a medical retina clinic")
    time_frame: str  # by when ("within 2 weeks"); the report writes "<action> <time frame>."
    colour: str  # badge background (hex)
    text_colour: str  # badge text (hex)
    refers: bool = False  # a referral tier

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Most urgent first; ``ExamResult.worst`` and summaries use this order.
TIER_ORDER = ("urgent", "soon", "routine", "review", "rescan", "none")

DEFAULT_TIERS: dict[str, Tier] = {
    t.id: t
    for t in [
        Tier(
            "urgent",
            "Urgent referral",
            "Refer to a medical retina clinic",
            "within 2 weeks",
            "#c62828",
            "#ffffff",
            True,
        ),
        Tier(
            "soon",
            "Soon referral (semi-urgent)",
            "Refer to a medical retina clinic",
            "within 4-6 weeks",
            "#e65100",
            "#ffffff",
            True,
        ),
        Tier(
            "routine",
            "Routine referral",
            "Refer to an ophthalmologist",
            "within 3-4 months",
            "#f2a900",
            "#1f1f1f",
            True,
        ),
        Tier(
            "review",
            "Review advised",
            "A clinician reviews the B-scans",
            "before the patient leaves",
            "#7c3aed",
            "#ffffff",
        ),
        Tier("rescan", "Rescan: image quality insufficient", "Repeat the scan", "at this visit", "#6b7280", "#ffffff"),
        Tier(
            "none",
            "No referral (observation)",
            "No referral; usual screening interval",
            "next routine screening",
            "#2e7d32",
            "#ffffff",
        ),
    ]
}


def resolve_tiers(overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Tier]:
    """:data:`DEFAULT_TIERS` with a card's rewording applied (unknown tier ids or fields are refused)."""
    out = dict(DEFAULT_TIERS)
    fields = {f.name for f in dataclasses.fields(Tier)} - {"id", "refers"}
    for tid, change in (overrides or {}).items():
        if tid not in out:
            raise ValueError(f"unknown tier '{tid}' (known: {', '.join(TIER_ORDER)})")
        if not isinstance(change, Mapping):
            raise ValueError(f"tier '{tid}' must be an object of {', '.join(sorted(fields))}")
        bad = set(change) - fields
        if bad:
            raise ValueError(f"tier '{tid}': unknown field(s) {', '.join(sorted(bad))}")
        words: dict[str, Any] = {k: str(v) for k, v in change.items()}
        out[tid] = dataclasses.replace(out[tid], **words)
    return out


def tier_colours() -> dict[str, tuple[str, str]]:
    """tier id -> (background, text) of the default tiers."""
    return {t.id: (t.colour, t.text_colour) for t in DEFAULT_TIERS.values()}


#: Class colours of charts and legends (GUI and report alike); other classes cycle through the rest.
CLASS_COLOURS: dict[str, str] = {"normal": "#2e7d32", "drusen": "#d08c00", "cnv": "#c62828", "dme": "#6a1b9a"}
OTHER_COLOURS = ["#1565c0", "#00838f", "#6d4c41", "#ad1457", "#558b2f"]


def class_colour(name: str, index: int = 0) -> str:
    """The hex colour of a class (stable per class name)."""
    return CLASS_COLOURS.get(name.lower(), OTHER_COLOURS[index % len(OTHER_COLOURS)])
