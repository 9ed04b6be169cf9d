#!/usr/bin/env bash
# Makes the Dockerfile's base image available to podman: BASE (the name in the Dockerfile's
# `ARG BASE`) if it is already there or can be pulled; otherwise a stand-in built from Debian's
# mirror and tagged with that name, so that `podman build --pull=never` builds the Dockerfile as it is.
#
# The stand-in: Debian bookworm (minbase) with bookworm's Python 3.11 (python3, python3-venv),
# ca-certificates, netbase and tzdata, which is what python:3.11-slim-bookworm adds to
# debian:bookworm-slim (its Dockerfile in docker-library/python). The differences that matter to
# the Dockerfile: Python is /usr/bin/python3 (not /usr/local/bin), and there is no `pip` outside a
# virtualenv; our Dockerfile needs neither (it only runs `python3 -m venv`).
set -euo pipefail
base=${1:?usage: image/base.sh BASE}
podman=$(dirname "$0")/podman
if "$podman" image exists "$base"; then
    exit 0
fi
if "$podman" pull -q "$base" >/dev/null 2>&1; then
    echo "pulled $base"
    exit 0
fi
command -v mmdebstrap >/dev/null || { echo "$base cannot be pulled and mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
echo "$base cannot be pulled: building a stand-in from Debian bookworm with mmdebstrap"
tar=$(mktemp --suffix=.tar)
trap 'rm -f "$tar"' EXIT
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# As in the slim images: no documentation, manuals or translations.
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates,netbase,tzdata \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$tar" "$mirror" "deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} bookworm-security main"
"$podman" import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tar" "$base" >/dev/null
echo "tagged the stand-in as $base"
