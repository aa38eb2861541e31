# The gateway: Flask + Celery client. No TensorFlow (the "worker" extra is not installed).
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --create-home --uid 10001 app
COPY pyproject.toml constraints.txt ./
COPY shared/ shared/
COPY services/__init__.py services/
COPY services/gateway/ services/gateway/
RUN pip install -c constraints.txt .
USER app
ENV GATEWAY_HOST=0.0.0.0 GATEWAY_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"GATEWAY_PORT\"]}/api/v1/health', timeout=2)"
CMD ["python", "-m", "services.gateway"]
