"""The stories scenarios play: steady, growth, churn, storm, outage, hostile."""

from __future__ import annotations

from typing import Final

from smartlic.simulator.stories.base import Expectation, Run, Story
from smartlic.simulator.stories.churn import Churn
from smartlic.simulator.stories.growth import Growth
from smartlic.simulator.stories.hostile import Hostile
from smartlic.simulator.stories.steady import Outage, Steady, Storm

STORY_CLASSES: Final[dict[str, type[Story]]] = {
    story.name: story for story in (Steady, Growth, Churn, Storm, Outage, Hostile)
}

__all__ = ["STORY_CLASSES", "Expectation", "Run", "Story"]
