# Redis for the compose stack: the official image (or deploy/local-redis.Dockerfile's
# stand-in) run as its redis user with append-only persistence in /data (a named volume).
ARG REDIS_BASE=redis:7
FROM ${REDIS_BASE}
USER redis
WORKDIR /data
# Append-only, fsync every second: the catalogue, indexes and models survive a restart losing
# at most a second of writes. No RDB snapshots (the AOF is the one copy). Protected mode off:
# the server listens only on the compose network, which holds nothing but this stack.
CMD ["redis-server", "--dir", "/data", "--appendonly", "yes", "--appendfsync", "everysec", \
     "--save", "", "--protected-mode", "no"]
HEALTHCHECK --interval=5s --timeout=3s --retries=10 CMD redis-cli ping | grep -q PONG
