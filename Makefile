# megatron-operator: the two entry points are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

TORCH_ENV   := eval "$$(scripts/torch-env)"
CLUSTER_ENV := source e2e/.cluster/env
CRD_FILE    := crds/megatron.dev_megatronfinetunes.yaml

.PHONY: help prereqs python-env cluster-install cluster-up cluster-down build images crd test lint demo

help:
	@echo "make demo    - build everything, start the local cluster (real node), helm install the operator, run the CPU fine-tune"
	@echo "make test    - every test (starts the local cluster and pushes the images first)"
	@echo "make lint    - cargo fmt --check and clippy -D warnings"
	@echo "make crd     - regenerate $(CRD_FILE) (and the chart's copy) from the Rust types"
	@echo "make images  - build the operator and CPU trainer images and push them to the local registry"
	@echo "make cluster-up / cluster-down - the local cluster (control plane, S3, registry, real node)"

prereqs:
	@scripts/check-prereqs

python-env: prereqs
	@scripts/python-env >/dev/null

cluster-install: prereqs
	e2e/cluster/install

cluster-up: cluster-install
	e2e/cluster/up

cluster-down:
	e2e/cluster/down

build: python-env
	$(TORCH_ENV); cargo build --workspace --locked

crd: python-env
	$(TORCH_ENV); cargo run --locked -q -p crds --bin crdgen > $(CRD_FILE).tmp
	mv $(CRD_FILE).tmp $(CRD_FILE); cp $(CRD_FILE) charts/megatron-operator/crds/

lint: python-env
	$(TORCH_ENV); cargo fmt --all --check; cargo clippy --workspace --all-targets --locked -- -D warnings

# The e2e cluster's images come from the debug build the tests use (scripts/images --profile release
# for images to publish).
images: python-env cluster-up
	$(TORCH_ENV); $(CLUSTER_ENV); cargo build --locked -q -p megatron-operator -p megatron-trainer \
	  --bin megatron-operator --bin megatron-trainer; scripts/images

test: python-env cluster-up images
	$(TORCH_ENV); $(CLUSTER_ENV); cargo test --workspace --locked --no-fail-fast

demo: python-env cluster-up
	$(TORCH_ENV); $(CLUSTER_ENV); scripts/demo

# The device bundle for scripts/gpu-check (docs/gpu.md): release gpu_check + scripts in .gpu/.
.PHONY: gpu-bundle
gpu-bundle: python-env
	scripts/gpu-bundle
