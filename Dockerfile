# The bus's image: `bus serve` (the gateways of docker-compose.yml) and `bus mock-axis`, as an
# unprivileged user. Build: docker build -t truc-lien-thong .
#
# No secret enters the image: agencies' secrets, passwords and the node's key come at run time from the
# environment (BUS_<SECTION>__<KEY>) and from a mounted volume (/var/lib/bus/pki). The settings files
# of config/ are the examples and /app/config/compose-province.toml, which docker-compose.yml uses.

# -- build: the project and its dependencies into a virtualenv ----------------------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/bus

WORKDIR /src
# What the wheel is built from (pyproject.toml: the four packages, and schemas/ placed into the package
# as bus/_schemas, where bus.schema finds it; README.md is the package's description).
COPY pyproject.toml README.md ./
COPY bus/ bus/
COPY adapters/ adapters/
COPY entrypoints/ entrypoints/
COPY mock_axis/ mock_axis/
COPY schemas/ schemas/
RUN /opt/bus/bin/pip install .

# -- run ----------------------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/bus/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The user the bus runs as: no login, no shell, its home the only directory it may write to (the pki
# and mock-axis volumes of docker-compose.yml start as copies of what is under it, owner included).
RUN groupadd --system --gid 10001 bus \
    && useradd --system --uid 10001 --gid bus --home-dir /var/lib/bus --no-create-home \
       --shell /usr/sbin/nologin bus \
    && mkdir -p /var/lib/bus/pki /var/lib/bus/mock-axis \
    && chown -R bus:bus /var/lib/bus \
    && chmod 0700 /var/lib/bus/pki

COPY --from=build /opt/bus /opt/bus

WORKDIR /app
# The settings files: `--config /app/config/...`. Owned by root: the bus reads them, cannot change them.
COPY config/ /app/config/

# The image is not built if the installed package does not carry its schemas (bus/_schemas) or they do
# not compile: an element that is no envelope must come back with schema problems. (Run from /app,
# where no source tree shadows the installed package.)
RUN python -c "from lxml import etree; from bus.schema import schema_dir, schema_problems; \
d = schema_dir(); assert d.name == '_schemas', d; t = etree.ElementTree(etree.fromstring('<x/>')); \
assert schema_problems(t, 'document') and schema_problems(t, 'status'); print('schemas:', d)"

USER bus

# The HTTP API (agencies), /healthz, /readyz, /metrics and /dashboard/ ([http] port).
EXPOSE 8080

# Ready: the database answers and the RabbitMQ connection is open (docs/operations.md). urllib raises on
# a 503, so the check fails then; the slim image has no curl. The port follows BUS_HTTP__PORT.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('BUS_HTTP__PORT', '8080'), timeout=3)"]

# bus serve stops on SIGTERM (/readyz fails at once, the API drains for http.drain_s); as PID 1 it
# receives the signal itself.
CMD ["bus", "serve", "--config", "/app/config/compose-province.toml", "--json-logs"]
