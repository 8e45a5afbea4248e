"""Cleaning stages: names (ФИО), phones, e-mails, INN/KPP/OGRN. Each is vectorised over Arrow batches; per-value
Python runs only over the distinct values (or distinct words) a batch holds. See common.py for the options they
share (columns, into, on_error, flag)."""

from etl.stages.clean.emails import EmailStage
from etl.stages.clean.inn import InnStage, KppStage, OgrnStage
from etl.stages.clean.names import NameStage
from etl.stages.clean.phones import PhoneStage

CLEAN_STAGES = (NameStage, PhoneStage, EmailStage, InnStage, KppStage, OgrnStage)

__all__ = ["CLEAN_STAGES", "EmailStage", "InnStage", "KppStage", "NameStage", "OgrnStage", "PhoneStage"]
