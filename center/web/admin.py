"""Pages for staff: nodes and cameras, the month report, the roster and users, the evidence export."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
