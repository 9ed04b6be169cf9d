# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
# The container image: `make image` builds it with podman, `make image-test` runs it as deploy/ does.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean image image-test image-lock

# The image as deploy/ names it. BASE: the Dockerfile's own default (ARG BASE), pulled, or a stand-in
# built from Debian's bookworm where no registry answers (image/base.sh). The host's CA bundle is
# mounted for the build only (pip trusts what this host trusts; on CI that is more than Debian's
# bundle), never copied into a layer (image/tests/test_image.py checks).
IMAGE ?= ghcr.io/linstor-scheduler/linstor-scheduler:0.1.0
BASE := $(shell sed -n 's/^ARG BASE=//p' Dockerfile)
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
PODMAN := image/podman

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/linstor-scheduler demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/extender_bench.py
	$(BIN)/python bench/fencing_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

image:
	image/base.sh $(BASE)
	$(PODMAN) build --pull=never --network host --layers \
	  $(if $(wildcard $(CA_BUNDLE)),--volume $(CA_BUNDLE):/etc/ssl/certs/ca-certificates.crt:ro) \
	  --tag $(IMAGE) .

# The image, run as each manifest of `kubectl kustomize deploy/` runs it (image/tests/).
image-test: $(STAMP) image
	LINSTOR_SCHEDULER_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q -p no:cacheprovider image/tests

# Re-pins image/requirements.txt after a change of dependencies in pyproject.toml.
image-lock:
	image/lock.sh
