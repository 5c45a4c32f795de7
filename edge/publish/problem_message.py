"""The camera problem message as a node sends it (docs/schemas/camera-problem.schema.json), validated on
receipt: the community center and `edge listen` read it through this one model."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from edge.detect.tamper import Problem, ProblemState
from edge.publish.mqtt import valid_id


def _an_id(value: str) -> str:
    if not valid_id(value):
        raise ValueError("not an id (letters, digits, . _ -; no '..')")
    return value


Id = Annotated[str, StringConstraints(max_length=128), AfterValidator(_an_id)]
Text = Annotated[str, StringConstraints(max_length=500)]
MAX_DETAIL_KEYS = 16  # the node sends at most 7 (moved); more is not a node of ours


class ProblemMessage(BaseModel):
    """A camera problem message as the node sends it; anything else is refused (hostile until validated)."""

    model_config = ConfigDict(extra="ignore")
    v: int = Field(ge=1, le=1)
    msg_id: Id
    id: Id
    node: Id
    camera: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    problem: Problem
    state: ProblemState
    at_s: float
    at_utc: Annotated[str, StringConstraints(max_length=40)] | None = None
    score: float | None = None
    threshold: float | None = None
    reason: Text
    detail: dict[Annotated[str, StringConstraints(max_length=40)], float | int | Text] = Field(
        default_factory=dict, max_length=MAX_DETAIL_KEYS
    )
    active: list[Problem] = Field(max_length=len(Problem))


def parse_problem(body: dict, node: str, camera: str) -> ProblemMessage | None:
    """The validated message, or None when it is not one (or names another node or camera than its topic)."""
    try:
        msg = ProblemMessage.model_validate(body)
    except ValidationError:
        return None
    return msg if (msg.node, msg.camera) == (node, camera) else None
