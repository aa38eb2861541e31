"""The vgg16 worker service: Celery tasks that embed with VGG16 and search the vgg16 index.

Start:  python -m services.vgg16 search index   (see shared.runtime.worker.run_worker)
"""

import logging

from shared import keys
from shared.celery_app import make_celery
from shared.logs import configure_logging
from shared.runtime.worker import Embedder, MethodService, register_method_tasks

from .settings import Vgg16Settings

log = logging.getLogger(__name__)


class Vgg16Service(MethodService):
    method = "vgg16"

    def __init__(self, settings: Vgg16Settings) -> None:
        super().__init__(settings, batch_size=settings.vgg16_batch_size)
        self.vgg16_settings = settings
        self._embedder = None

    def load(self) -> None:
        if self._embedder is None:
            from .model import Vgg16Embedder  # TensorFlow only after the process started

            embedder = Vgg16Embedder(self.vgg16_settings)
            embedder.load()
            self._embedder = embedder
            # The fixed model's version becomes the active index for searches and /stats.
            self.redis.set(keys.active_version(self.method), embedder.version)

    def search_embedder(self) -> Embedder:
        self.load()
        self._claim_active_version()
        return self._embedder

    def index_embedders(self) -> list[Embedder]:
        self.load()
        self._claim_active_version()
        return [self._embedder]

    def _claim_active_version(self) -> None:
        # Set again if Redis lost its data since load(): /stats reads the index size there.
        self.redis.set(keys.active_version(self.method), self._embedder.version, nx=True)


settings = Vgg16Settings()
configure_logging(settings.log_level, service="vgg16")
app = make_celery(settings, "vgg16")
service = Vgg16Service(settings)
register_method_tasks(app, service)
