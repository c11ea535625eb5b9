# Cluster side: stage images and manifests (included from the Makefile).
#   make images   [REGISTRY=...] [TAG=...] [CONTAINER=docker|podman] [ROCM_TF_TAG=...]
#   make push     [REGISTRY=...] [TAG=...]
#   make manifests          re-render manifests/ from components/ (scripts/render_manifests.py)
# Image names come from components/images.py, the one setting shared with the KFP components and the
# manifests; REGISTRY and TAG given here override its defaults the same way for all three.
CONTAINER ?= $(shell command -v docker >/dev/null 2>&1 && echo docker || echo podman)
# ROCM_TF_TAG unset: the default of docker/Dockerfile.base (one place for it).
ROCM_TF_TAG ?=
CLUSTER_PY ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)
IMAGE_STAGES := base data pretrain finetune evaluate launcher
# REGISTRY/TAG reach components/images.py through its environment (empty: its defaults).
IMAGES_ENV = REGISTRY='$(REGISTRY)' TAG='$(TAG)'
image_of = $(shell $(IMAGES_ENV) $(CLUSTER_PY) -m components.images $(1))

.PHONY: images push manifests $(addprefix image-,$(IMAGE_STAGES))

images: $(addprefix image-,$(IMAGE_STAGES))

image-base:
	$(CONTAINER) build -f docker/Dockerfile.base $(if $(ROCM_TF_TAG),--build-arg ROCM_TF_TAG=$(ROCM_TF_TAG)) \
	  -t $(call image_of,base) .

# pretrain and finetune build FROM the base just built.
image-pretrain image-finetune: image-%: image-base
	$(CONTAINER) build -f docker/Dockerfile.$* --build-arg BASE_IMAGE=$(call image_of,base) \
	  -t $(call image_of,$*) .

image-data image-evaluate image-launcher: image-%:
	$(CONTAINER) build -f docker/Dockerfile.$* -t $(call image_of,$*) .

push: images
	@for stage in $(IMAGE_STAGES); do \
	  ref=$$($(IMAGES_ENV) $(CLUSTER_PY) -m components.images $$stage) && echo "pushing $$ref" && $(CONTAINER) push "$$ref" || exit 1; \
	done

manifests:
	$(IMAGES_ENV) $(CLUSTER_PY) scripts/render_manifests.py
