"""``GET /api/v1/whoami``: the caller's token name, role and region.

The page asks it first: a crew token gets a page built from what it may read (its region's
fill levels, alerts and plan) instead of panels that would all answer 403.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ingest.api.auth import OPEN, Caller

router = APIRouter(tags=["access"])


class WhoAmI(BaseModel):
    name: str = Field(description="the token's name (`anonymous` when the API has no tokens)")
    role: str = Field(description="operator or crew")
    region: str | None = Field(description="a crew token's region; null for an operator")


@router.get("/whoami", response_model=WhoAmI)
async def whoami(request: Request) -> WhoAmI:
    """Who this token is: without a tokens file every caller is an anonymous operator."""
    caller: Caller = getattr(request.state, "caller", OPEN)
    return WhoAmI(name=caller.name, role=caller.role.value, region=caller.region)
