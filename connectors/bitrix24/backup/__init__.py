"""Read the CRM straight out of a Bitrix24 / 1C-Bitrix backup (CBackup archives and MySQL dumps), no restore.

Layers, each its own module: ``volumes`` (multi-volume, multi-member gzip), ``crypto`` (encrypted ``.enc``),
``tar`` (Bitrix's CTar variant and standard tar), ``archive`` (the dump members of an archive, or plain ``.sql``
files, as one stream), ``dump`` (the streaming SQL parser into Arrow), ``phpser`` (safe PHP unserialize) and
``sources`` (ready-made Sources for companies, contacts, deals, smart-process items and list elements).
"""

from connectors.bitrix24.backup.archive import BackupDump
from connectors.bitrix24.backup.sources import (
    BackupCompanySource, BackupContactSource, BackupDealSource, BackupListElementSource, BackupSmartProcessSource,
    BackupTableSource, make_backup_source,
)

__all__ = [
    "BackupCompanySource", "BackupContactSource", "BackupDealSource", "BackupDump", "BackupListElementSource",
    "BackupSmartProcessSource", "BackupTableSource", "make_backup_source",
]
