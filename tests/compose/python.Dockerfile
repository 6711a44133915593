# Stand-in for python:3.11-slim-bookworm (tests/compose/setup.sh): Debian bookworm's python3
# (3.11) with a venv first on PATH, so that `python` and `pip` are what the project's
# Dockerfile expects. This machine's CA bundle goes in here (never into Dockerfile.gpu), so
# that pip in the image build trusts what this machine's pip trusts.
FROM trainhub-standin/bookworm:minbase
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/python
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/opt/python/bin:$PATH \
    LANG=C.UTF-8 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
