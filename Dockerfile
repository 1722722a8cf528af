# nodepool_ng container image: launcher, builder, admin CLI and simcloud in one image.
# Run one daemon per container, e.g.
#   docker run -v /etc/nodepool:/etc/nodepool -v /etc/openstack:/etc/openstack nodepool-ng \
#       nodepool-launcher -f -c /etc/nodepool/nodepool.yaml
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# qemu-utils converts images for the builder; openssh-client for host-key tooling.
RUN apt-get update \
    && apt-get install -y --no-install-recommends qemu-utils openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/nodepool --create-home nodepool
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER nodepool
ENV OS_CLIENT_CONFIG_FILE=/etc/openstack/clouds.yaml
CMD ["nodepool-launcher", "-f", "-c", "/etc/nodepool/nodepool.yaml"]
