# syntax=docker/dockerfile:1
# nodepool_ng container images (doc/install.md). Two targets:
#
#   docker build --target launcher -t nodepool-launcher .   # also the default target
#   docker build --target builder  -t nodepool-builder .
#
# launcher: nodepool-launcher, the `nodepool` CLI and nodepool-simcloud; runs as the
#   unprivileged user nodepool (uid 10001). HEALTHCHECK: GET /health/ready on the web app
#   (webapp.port, default 8005; NODEPOOL_HEALTH_URL overrides the URL): 200 once the pools
#   are registered and while no main loop is stuck.
#   docker run -v /etc/nodepool:/etc/nodepool:ro -v /etc/openstack:/etc/openstack:ro \
#       -p 8005:8005 nodepool-launcher
# builder: the same plus diskimage-builder and the host tools it runs (qemu-utils,
#   debootstrap, kpartx, ...). nodepool-builder runs as nodepool; diskimage-builder uses
#   sudo (passwordless for nodepool) for chroot, mount and loop devices, so the container
#   needs --privileged (or at least CAP_SYS_ADMIN and the loop devices). HEALTHCHECK: the
#   age of the watchdog's heartbeat file, refreshed while the builder's loops make progress.
#   docker run --privileged -v /etc/nodepool:/etc/nodepool:ro \
#       -v /etc/openstack:/etc/openstack:ro -v nodepool-images:/var/lib/nodepool \
#       nodepool-builder
#
# The Python install is doc/install.md's: a virtualenv in /opt/nodepool-ng and
# `pip install nodepool-ng` (`nodepool-ng[dib]` for the builder), here from wheels built in
# the first stage.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- wheels of nodepool_ng and every dependency (including the dib extra) ----------------------
FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY nodepool_ng ./nodepool_ng
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[dib]"

# -- what both images share: the nodepool user and its directories ----------------------------
FROM ${PYTHON_IMAGE} AS base
RUN groupadd --system --gid 10001 nodepool \
    && useradd --system --uid 10001 --gid nodepool --home-dir /var/lib/nodepool \
        --create-home --shell /usr/sbin/nologin nodepool \
    && install -d -o nodepool -g nodepool -m 0750 /var/log/nodepool \
    && install -d -m 0755 /etc/nodepool /etc/openstack
ENV PATH=/opt/nodepool-ng/bin:$PATH \
    OS_CLIENT_CONFIG_FILE=/etc/openstack/clouds.yaml \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/nodepool

# -- the builder image -------------------------------------------------------------------------
FROM base AS builder
# diskimage-builder's host tools (doc/builder.md): image tools, partitioning, file systems,
# debootstrap and the archive keys for Debian-family images, sudo for its root steps.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        qemu-utils debootstrap kpartx gdisk parted dosfstools e2fsprogs xfsprogs \
        squashfs-tools uuid-runtime util-linux procps sudo curl ca-certificates gnupg \
        debian-archive-keyring xz-utils bzip2 zstd git lsb-release openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && printf '%s\n' \
        'Defaults:nodepool secure_path="/opt/nodepool-ng/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"' \
        'nodepool ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/nodepool \
    && chmod 0440 /etc/sudoers.d/nodepool \
    && visudo -cf /etc/sudoers.d/nodepool
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python3 -m venv /opt/nodepool-ng \
    && /opt/nodepool-ng/bin/pip install --no-cache-dir --no-index --find-links /wheels \
        "nodepool-ng[dib]"
# The watchdog (nodepool_ng.runtime.watchdog) without systemd: a loop stuck in one pass for
# NODEPOOL_WATCHDOG_SEC stops the heartbeat; the health check fails once it is that old.
ENV NODEPOOL_WATCHDOG_SEC=600 \
    NODEPOOL_HEARTBEAT_FILE=/tmp/nodepool-builder.heartbeat
USER nodepool
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, sys, time; f = os.environ['NODEPOOL_HEARTBEAT_FILE']; sys.exit(0 if os.path.exists(f) and time.time() - os.stat(f).st_mtime < float(os.environ['NODEPOOL_WATCHDOG_SEC']) else 1)"]
CMD ["nodepool-builder", "-f", "-c", "/etc/nodepool/nodepool.yaml"]

# -- the launcher image (the default target: last) ---------------------------------------------
FROM base AS launcher
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openssh-client \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python3 -m venv /opt/nodepool-ng \
    && /opt/nodepool-ng/bin/pip install --no-cache-dir --no-index --find-links /wheels \
        nodepool-ng
# /health/ready says 503 while a main loop is stuck in one pass for NODEPOOL_WATCHDOG_SEC
# (nodepool_ng.runtime.watchdog), as well as before the pools are registered.
ENV NODEPOOL_WATCHDOG_SEC=300
USER nodepool
EXPOSE 8005
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('NODEPOOL_HEALTH_URL', 'http://127.0.0.1:8005/health/ready'), timeout=4)"]
CMD ["nodepool-launcher", "-f", "-c", "/etc/nodepool/nodepool.yaml"]
