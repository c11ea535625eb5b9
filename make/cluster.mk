# Cluster side: stage images and manifests (included from the Makefile).
#   make images   [FLAVOUR=rocm|cpu] [BUILDER=docker|buildah|podman] [REGISTRY=...] [TAG=...] [ROCM_TF_TAG=...]
#                 [PYTHON_IMAGE=...] [PIP_CONF=pip.conf] [PIP_CA=ca.pem] [HOST_PIP=1]
#   make push     [REGISTRY=...] [TAG=...]
#   make manifests          re-render manifests/ from components/ (scripts/render_manifests.py)
#   make test-images        build the CPU flavour here and run the pipeline's own commands in it (slow)
# Image names come from components/images.py, the one setting shared with the KFP components and the
# manifests; REGISTRY and TAG given here override its defaults the same way for all three.
# scripts/build_images.py picks the builder (docker when its daemon answers, else buildah or podman),
# the base of the flavour (docker/Dockerfile.base or Dockerfile.base-cpu; the CPU tag is <version>-cpu)
# and rebuilds an image only when its inputs change.
FLAVOUR ?= rocm
BUILDER ?=
# push: the BUILDER if given, else docker when installed, else podman.
CONTAINER ?= $(or $(BUILDER),$(shell command -v docker >/dev/null 2>&1 && echo docker || echo podman))
# ROCM_TF_TAG / PYTHON_IMAGE unset: the defaults of the Dockerfiles (one place for each).
ROCM_TF_TAG ?=
PYTHON_IMAGE ?=
PIP_CONF ?=
PIP_CA ?=
HOST_PIP ?=
CLUSTER_PY ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)
IMAGE_STAGES := base data pretrain finetune evaluate launcher
# REGISTRY/TAG reach components/images.py through its environment (empty: its defaults).
IMAGES_ENV = REGISTRY='$(REGISTRY)' TAG='$(TAG)'
BUILD_IMAGES_ARGS = --flavour $(FLAVOUR) $(if $(BUILDER),--builder $(BUILDER)) \
  $(if $(ROCM_TF_TAG),--rocm-tf-tag $(ROCM_TF_TAG)) $(if $(PYTHON_IMAGE),--python-image $(PYTHON_IMAGE)) \
  $(if $(PIP_CONF),--pip-config $(PIP_CONF)) $(if $(PIP_CA),--pip-ca $(PIP_CA)) $(if $(HOST_PIP),--host-pip)

.PHONY: images push manifests test-images $(addprefix image-,$(IMAGE_STAGES))

images:
	$(IMAGES_ENV) nice -n 10 $(CLUSTER_PY) scripts/build_images.py $(BUILD_IMAGES_ARGS)

# One stage (and nothing else: pretrain/finetune need the base built first).
$(addprefix image-,$(IMAGE_STAGES)): image-%:
	$(IMAGES_ENV) nice -n 10 $(CLUSTER_PY) scripts/build_images.py $(BUILD_IMAGES_ARGS) $*

# Slow (tens of minutes the first time, on 2 cores): not part of `make test`. Needs root, buildah,
# podman, debootstrap; the project's environment (kfp) compiles the pipeline and builds executor inputs.
test-images: setup
	nice -n 10 $(PY) scripts/test_images.py

push: images
	@for stage in $(IMAGE_STAGES); do \
	  ref=$$($(IMAGES_ENV) $(CLUSTER_PY) -m components.images $$stage) && echo "pushing $$ref" && $(CONTAINER) push "$$ref" || exit 1; \
	done

manifests:
	$(IMAGES_ENV) $(CLUSTER_PY) scripts/render_manifests.py
