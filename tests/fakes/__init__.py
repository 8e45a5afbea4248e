"""Local servers that speak real protocols, for tests: DaData's clean API (dadata_fake)."""

from tests.fakes.dadata_fake import FakeDadata, standardise

__all__ = ["FakeDadata", "standardise"]
