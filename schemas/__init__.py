"""The canonical entities: the contract between pipelines (etl/) and the systems we load into (connectors/)."""

from schemas.entities import ENTITIES, Entity, EntityField, Link, get_entity

__all__ = ["ENTITIES", "Entity", "EntityField", "Link", "get_entity"]
