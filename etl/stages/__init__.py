"""Stages: vectorised steps between a source and a sink. Register a new one in STAGES."""

from etl.stages.base import ROW, STAGE_REJECT_SCHEMA, Stage, StageResult, no_rejects, rejects_where
from etl.stages.builtin import Case, Replace, Required

STAGES: dict[str, type[Stage]] = {s.type: s for s in (Required, Replace, Case)}

__all__ = ["ROW", "STAGES", "STAGE_REJECT_SCHEMA", "Stage", "StageResult", "no_rejects", "rejects_where"]
