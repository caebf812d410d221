"""Output schemas for structured replies (a workflow file names them: ``output: answer_confidence``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AnswerConfidence(BaseModel):
    """An answer with the model's confidence in it and a short rationale."""

    model_config = ConfigDict(extra="ignore")

    answer: str
    confidence: float = Field(ge=0.0, le=1.0)
    rationale: str = ""
