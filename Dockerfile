# The trio_wsproxy relay as a container image.
#
#   docker build -t trio-wsproxy .
#   docker run --rm -p 8765:8765 trio-wsproxy
#   docker run --rm -p 8765:8765 trio-wsproxy serve --host 0.0.0.0 --log-level info
#
# The entry point is the `trio-wsproxy` command; the default command is
# `serve --host 0.0.0.0`. Arguments given to `docker run` (or a compose `command:`)
# replace that default, so a run with flags starts with `serve --host 0.0.0.0` too.
# `trio-wsproxy token ...` works the same way.
#
# Two stages: the first builds the project into a virtualenv, the second copies only
# that virtualenv onto a clean base, so the image holds no source tree, build backend or
# pip cache. Both stages use the same base image: the virtualenv's interpreter is the
# base's.
#
# This file is linted by hadolint and checked against the package by tests/test_docker.py
# (which also runs the health check's command against a real relay); the image itself has
# not been built or run: no Docker engine was available.

FROM python:3.12.12-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/trio-wsproxy

WORKDIR /build
# What setuptools needs to build the project: pyproject.toml, the readme it names, the
# license, setup.py and build_backend/ (the build backend, which builds the pure-Python
# hot path unless TRIO_WSPROXY_COMPILE=1 asks for the compiled one), and src/ (the
# package and the pytest plugin module beside it).
COPY pyproject.toml README.md LICENSE setup.py ./
COPY build_backend/ build_backend/
COPY src/ src/
# The project and its runtime dependencies only; no extras (test, docs, dev).
RUN /opt/trio-wsproxy/bin/pip install --no-cache-dir .


FROM python:3.12.12-slim-bookworm

# A system user with a fixed, high uid/gid, so that Kubernetes' runAsNonRoot can check it
# and files mounted for it (certificates, the token secret) can be given to it.
RUN groupadd --system --gid 10001 trio-wsproxy \
    && useradd --system --no-log-init --uid 10001 --gid trio-wsproxy \
        --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin trio-wsproxy

COPY --from=build /opt/trio-wsproxy /opt/trio-wsproxy

# HEALTHCHECK_PORT is read by the health check below only (the relay takes its port from
# --port): change both together, or keep the container port at 8765 and map it instead.
ENV PATH=/opt/trio-wsproxy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HEALTHCHECK_PORT=8765

USER 10001:10001

# The relay's default port (trio_wsproxy.DEFAULT_PORT).
EXPOSE 8765

# Liveness: GET /livez answers 200 while the relay process serves at all, a Redis outage
# included (/healthz is readiness: 503 while the relay cannot admit members, and an
# orchestrator that replaces unhealthy containers would restart every relay of a
# cluster whose Redis is down, which helps nothing). urlopen raises on a refused
# connection, a timeout and any status of 400 or more, so the exit status is 0 only for
# a live relay. Python's standard library: slim images have no curl. It assumes plain
# ws:// on 127.0.0.1 and the default --livez-path; with --certfile/--keyfile or another
# path, override the health check. Point a load balancer's readiness at /healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['HEALTHCHECK_PORT'] + '/livez', timeout=3)"]

# SIGTERM (Docker's default stop signal) closes every member with 1001 and exits 0 within
# --close-timeout (3 s by default), well inside Docker's 10 s grace period.
ENTRYPOINT ["trio-wsproxy"]
CMD ["serve", "--host", "0.0.0.0"]
