"""The base of every settings section and its shared numeric types (a leaf: config.py and its section modules use it)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors and values are read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)
