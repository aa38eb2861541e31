"""What a request's code reaches through the app: settings, Redis, the catalogue, Celery."""

import redis
from celery import Celery
from flask import current_app

from shared.catalogue import Catalogue
from shared.index_store import IndexStore

from .settings import GatewaySettings


def settings() -> GatewaySettings:
    return current_app.extensions["settings"]


def redis_client() -> redis.Redis:
    return current_app.extensions["redis"]


def broker_redis() -> redis.Redis:
    """The Redis at REDIS_URL: Celery's queues and task results."""
    return current_app.extensions["broker_redis"]


def catalogue() -> Catalogue:
    return current_app.extensions["catalogue"]


def celery() -> Celery:
    return current_app.extensions["celery"]


def index_store() -> IndexStore:
    """The vector indexes, split into the INDEX_SHARDS shards the workers write."""
    return IndexStore(redis_client(), settings().index_shards)
