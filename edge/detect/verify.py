"""The learned second look: how the verifier's score moves the level physics gave a track."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edge.config import VerifierConfig
from edge.detect.types import AlertLevel


class Verifier(Protocol):
    """Scores one sample (edge.detect.sample) from 0 (not a falling object) to 1 (a falling object)."""

    def score(self, sample: np.ndarray) -> float: ...


def second_look(level: AlertLevel | None, score: float, cfg: VerifierConfig) -> AlertLevel | None:
    """The level after the verifier: it vetoes or lowers a fall it does not believe, confirms one it does.

    Physics keeps the first word: a track physics does not report stays unreported whatever the model says,
    so the model can never add an alert on a path that is no fall. A suspected fall scored below
    `veto_below` is dropped and a confirmed one lowered to suspected (a person still looks); a suspected
    fall scored at least `confirm_above` is confirmed.
    """
    if level is None:
        return None
    if score < cfg.veto_below:
        return None if level == AlertLevel.SUSPECTED else AlertLevel.SUSPECTED
    if level == AlertLevel.SUSPECTED and score >= cfg.confirm_above:
        return AlertLevel.CONFIRMED
    return level
