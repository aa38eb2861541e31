# Stand-in for python:3.11-slim where no container registry answers (make images, see
# Makefile): Debian bookworm's Python 3.11 on the base deploy/local-base.sh bootstrapped.
ARG DEBIAN_BASE=imgsearch-local/debian:bookworm
FROM ${DEBIAN_BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python
# pip, requests and Python's ssl use the system bundle, which holds the host's extra CA
# certificates (deploy/local-base.sh): pip trusts what the host trusts, proxy or not.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
