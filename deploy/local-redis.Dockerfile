# Stand-in for redis:7 where no container registry answers (make images, see Makefile):
# Debian bookworm's redis-server 7.0 on the base deploy/local-base.sh bootstrapped, laid out
# like the official image (user redis, data in /data).
ARG DEBIAN_BASE=imgsearch-local/debian:bookworm
FROM ${DEBIAN_BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
