# Flower, Celery's monitor, with the project's pinned Celery and Redis client. Its web page
# shows task arguments and results and can revoke tasks: compose publishes it on 127.0.0.1
# only, behind basic auth, in the "monitoring" profile.
ARG PYTHON_BASE=python:3.11-slim
FROM ${PYTHON_BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv && useradd --create-home --uid 10001 flower
COPY constraints.txt /tmp/
RUN pip install -c /tmp/constraints.txt 'celery[redis]' redis \
      flower==2.0.1 tornado==6.6.1 humanize==4.17.0 pytz==2026.6
USER flower
EXPOSE 5555
# /healthcheck is the one page Flower serves without authentication.
HEALTHCHECK --interval=10s --timeout=5s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5555/healthcheck', timeout=4)"
# Refuse to start without credentials rather than serve the page to anyone.
CMD ["sh", "-c", "test -n \"$FLOWER_BASIC_AUTH\" || { echo 'set FLOWER_BASIC_AUTH=user:password' >&2; exit 1; }; exec celery --broker=\"$REDIS_URL\" flower --port=5555"]
