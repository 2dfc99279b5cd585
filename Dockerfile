# The agentdesk bot service: `docker build -t agentdesk .` then `docker run ... agentdesk` (= `agentdesk serve`).
# The sandbox image the bot starts for agents' code is separate: agents/sandbox/Dockerfile, built on the
# Docker engine the bot uses with `agentdesk sandbox build`. How the bot reaches that engine, and what each
# way costs in security, is in docs/deploy.md. No secret is baked in: configuration comes from the
# environment at run time (`--env-file .env`).
#
# Without a registry (no python:3.11-slim to pull): scripts/bot_image.sh builds it FROM the Debian bookworm
# base `agentdesk sandbox build` makes with debootstrap, with every wheel downloaded on the host into
# .wheels/ first, so the build itself needs no network.
ARG PYTHON_IMAGE=python:3.11-slim

# -- builder: agentdesk and every dependency in a venv the runtime copies whole -------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . ./
RUN python3 -m venv /opt/agentdesk \
 && if ls .wheels/*.whl >/dev/null 2>&1; then \
      /opt/agentdesk/bin/pip install --no-index --find-links=.wheels . ; \
    else \
      /opt/agentdesk/bin/pip install . ; \
    fi

# -- runtime --------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=3978 \
    AGENTDESK_DATA_DIR=/var/lib/agentdesk \
    MPLCONFIGDIR=/tmp/matplotlib \
    PATH=/opt/agentdesk/bin:$PATH
RUN groupadd --system --gid 10001 agentdesk \
 && useradd --system --uid 10001 --gid agentdesk --create-home --home-dir /home/agentdesk \
      --shell /usr/sbin/nologin agentdesk \
 && mkdir -p /var/lib/agentdesk \
 && chown agentdesk:agentdesk /var/lib/agentdesk
COPY --from=builder /opt/agentdesk /opt/agentdesk
WORKDIR /home/agentdesk
USER agentdesk:agentdesk
EXPOSE 3978
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3978'), timeout=3)"]
ENTRYPOINT ["agentdesk"]
CMD ["serve"]
