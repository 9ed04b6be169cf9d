# linstor-scheduler: one image for every subcommand (extender, webhook, sync-node, sync-classes, fencing,
# locality-exporter).
# Build: docker build -t ghcr.io/linstor-scheduler/linstor-scheduler:0.1.0 .   (or `make image`, podman)
#
# The base is Python 3.11 on Debian bookworm: the Python that `make image-test` runs the image with
# (where no registry answers, image/base.sh builds a stand-in of this name from Debian's bookworm)
# and the one image/requirements.txt was resolved for (its binary wheels are per Python version).
ARG BASE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A virtualenv of the dependencies, copied whole into the final stage: no wheels layer that a later
# `rm` cannot shrink. Every dependency pinned (image/lock.sh writes the file); --no-deps: nothing
# unpinned comes in. It changes only with the pins, so its layer (most of the image) stays the same
# from one release to the next and is pulled once.
# Our code goes to /opt/app (below); the .pth file puts it on the virtualenv's path.
RUN python3 -m venv /opt/venv \
 && echo /opt/app > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/app.pth"
COPY image/requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-deps -r /tmp/requirements.txt

# Our code on its own layer (/opt/app): a release that changes only our code ships a few MB. Built
# with the pinned setuptools (no build isolation, which would fetch the newest); `pip check` fails
# the build if the pins do not satisfy every requirement of ours.
FROM deps AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY linstor_scheduler ./linstor_scheduler
COPY scheduler_extender ./scheduler_extender
COPY storage_sync ./storage_sync
COPY fencing ./fencing
COPY admission ./admission
COPY locality ./locality
# devkit (test doubles, demo) stays out of the image (.dockerignore too): no `demo` subcommand there.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --target /opt/app . \
 && /opt/venv/bin/pip check

# What runs: pip and setuptools only build. kubernetes >= 37 carries a second, asyncio copy of its
# whole client (kubernetes.aio, 68 MB with its bytecode) that nothing imports: ours use the
# synchronous client (linstor_scheduler/kube).
FROM deps AS runtime
RUN /opt/venv/bin/pip uninstall -q -y pip setuptools \
 && rm -rf /opt/venv/lib/python3*/site-packages/kubernetes/aio

FROM ${BASE}
# lvm2: the node agent (sync-node) reads volume groups and thin pools with the LVM tools. apt's
# caches and downloaded packages go too (Debian's own images are set up not to keep them; a base
# without that setting would keep 79 MB of them in this layer).
# The user 65532 (as distroless "nonroot") gets a passwd entry, so that HOME is /home/nonroot, not /.
RUN apt-get update \
 && apt-get install -y --no-install-recommends lvm2 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/apt /var/log/dpkg.log \
 && groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-log-init --create-home --home-dir /home/nonroot --shell /usr/sbin/nologin nonroot
COPY --from=runtime /opt/venv /opt/venv
COPY --from=build /opt/app /opt/app
ENV PATH=/opt/app/bin:/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
RUN linstor-scheduler --version
# Non-root by default; the node agent's DaemonSet runs as root explicitly (runAsUser: 0), since LVM
# needs it.
USER 65532:65532
ENTRYPOINT ["linstor-scheduler"]
CMD ["--help"]
