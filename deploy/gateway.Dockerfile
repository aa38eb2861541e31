# The gateway: Flask + Celery client served by waitress. No TensorFlow (the "worker" extra is
# not installed). PYTHON_BASE: python:3.11-slim, or the local stand-in (make images).
ARG PYTHON_BASE=python:3.11-slim
FROM ${PYTHON_BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv && useradd --create-home --uid 10001 app
WORKDIR /app

# Dependencies from pyproject.toml and the lock file alone: a code change reuses this layer.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt setuptools==84.2.1 \
 && rm /tmp/requirements.txt

# The source last, installed without dependencies (seconds). shared/'s modules but not
# shared/runtime/, which only workers import (tests/fast/test_layering.py).
COPY shared/*.py /tmp/src/shared/
COPY services/__init__.py /tmp/src/services/
COPY services/gateway/ /tmp/src/services/gateway/
COPY client/ /tmp/src/client/
# The blob volume's mount point, owned by app: a new named volume takes its owner.
RUN cp pyproject.toml /tmp/src/ \
 && pip install --no-deps --no-build-isolation /tmp/src \
 && rm -rf /tmp/src \
 && mkdir -p /app/var/blobs && chown app:app /app/var/blobs

USER app
ENV GATEWAY_HOST=0.0.0.0 GATEWAY_PORT=8000
EXPOSE 8000
# /health answers without the key (only the verdict when READS_REQUIRE_KEY is on).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"GATEWAY_PORT\"]}/api/v1/health', timeout=4)"
CMD ["python", "-m", "services.gateway"]
