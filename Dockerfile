# segur-sim in a container. Not built or run on the project's machines (no Docker there):
# see docs/web.md, "Docker and compose", for what was and was not checked.
#
#   docker build -t segur-sim .
#   docker run --rm --network host -v segur-sim-data:/data segur-sim
#
# segur-sim binds loopback only (it has no login: tokens, keys and mail are open to
# whoever reaches it). Inside a container, loopback is the container's own, so
# `-p 10443:10443` publishes nothing that answers. Two safe ways to use the image:
#   1. --network host (Linux): the simulator binds the host's 127.0.0.1, reachable from
#      the host only, exactly as if run there;
#   2. run your clients inside the same container (or the same network namespace:
#      `docker run --network container:NAME ...`), e.g. `docker run ... segur-sim
#      segur-sim mss run ...`.
# We deliberately offer no 0.0.0.0 mode.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEGUR_SIM_DATA_DIR=/data

# openssl: `openssl cms -verify` of proof bundles; curl: handy for the REST API.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssl curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# The test catalogues (testcases/) go into the wheel as simulators._testcases (setup.py).
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY simulators ./simulators
COPY testcases ./testcases
RUN python -m pip install . && cd / && rm -rf /src

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin segur \
    && mkdir -p /data && chown segur:segur /data
USER segur
WORKDIR /home/segur
VOLUME ["/data"]

# Ports (--port-base 10000): SMTP 10587/10465, IMAP 10143/10993, HTTP 10080, HTTPS 10443.
EXPOSE 10587 10465 10143 10993 10080 10443

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:10080/healthz', timeout=2)"

CMD ["segur-sim", "serve", "--data-dir", "/data"]
