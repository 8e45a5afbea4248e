"""Stages: vectorised steps between a source and a sink. Register a new one in STAGES."""

from etl.stages.base import ROW, STAGE_REJECT_SCHEMA, Stage, StageContext, StageResult, no_rejects, rejects_where
from etl.stages.builtin import Case, Replace, Required

STAGES: dict[str, type[Stage]] = {s.type: s for s in (Required, Replace, Case)}

from etl.stages.geocode import DadataAddress  # noqa: E402

STAGES[DadataAddress.type] = DadataAddress

from etl.stages.clean import CLEAN_STAGES  # noqa: E402  (name, phone, email, inn, kpp, ogrn)

STAGES.update({s.type: s for s in CLEAN_STAGES})

__all__ = ["ROW", "STAGES", "STAGE_REJECT_SCHEMA", "Stage", "StageContext", "StageResult", "no_rejects", "rejects_where"]
