"""What a request's code reaches through the app: settings, Redis, the catalogue, Celery."""

import redis
from celery import Celery
from flask import current_app

from shared.catalog import Catalog

from .settings import GatewaySettings


def settings() -> GatewaySettings:
    return current_app.extensions["settings"]


def redis_client() -> redis.Redis:
    return current_app.extensions["redis"]


def catalog() -> Catalog:
    return current_app.extensions["catalog"]


def celery() -> Celery:
    return current_app.extensions["celery"]
