# linstor-scheduler: one image for every subcommand (extender, webhook, sync-node, sync-classes, fencing).
# Build: docker build -t ghcr.io/linstor-scheduler/linstor-scheduler:0.1.0 .
FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY linstor_scheduler ./linstor_scheduler
COPY scheduler_extender ./scheduler_extender
COPY storage_sync ./storage_sync
COPY fencing ./fencing
COPY admission ./admission
COPY locality ./locality
# devkit (test doubles, demo) stays out of the image (.dockerignore too): no `demo` subcommand there.
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim-bookworm
# lvm2: the node agent (sync-node) reads volume groups and thin pools with the LVM tools.
RUN apt-get update \
 && apt-get install -y --no-install-recommends lvm2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels linstor-scheduler && rm -rf /wheels \
 && linstor-scheduler --version
# Non-root by default (65532, as distroless "nonroot"); the node agent's DaemonSet runs as root
# explicitly, since LVM needs it.
USER 65532:65532
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["linstor-scheduler"]
CMD ["--help"]
