# Everything a newcomer needs: `make run` starts the system, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEIGHTS := var/weights/vgg16_imagenet_notop.weights.h5

.PHONY: run test test-fast test-deploy images lint weights install clean bench bench-search bench-redis-bytes bench-scale eval export import reshard

run: $(STAMP) $(WEIGHTS)
	$(BIN)/python -m deploy.launcher

# Every tier: tests/fast, tests/models (real VGG16 weights, Keras training), tests/integration
# (real Redis, Celery workers, gateway, Chromium) and tests/deploy. README.md, "Development".
test: $(STAMP) $(WEIGHTS)
	$(BIN)/python -m pytest -q

# The fast tier alone (tests/fast): pure functions, the index file format, the vector index and
# the gateway through Flask's test client against a real Redis; no TensorFlow model is loaded.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/fast

# Every image docker-compose.yml uses: official bases where a registry answers, else bases
# bootstrapped from the Debian mirror apt uses (LOCAL_BASE=1 forces them, LOCAL_BASE=0 the
# official ones; PYTHON_BASE and REDIS_BASE pick others). See deploy/images.sh.
images:
	deploy/images.sh

# Only the deployment test (tests/deploy: builds the images, runs the compose stack). It is
# part of `make test` too, skipped with its reason where no Docker engine answers.
test-deploy: $(STAMP)
	$(BIN)/python -m pytest -q tests/deploy

# make bench DATA=<folder of images>: throughput, latency, search scaling (var/bench/results.*)
bench: $(STAMP) $(WEIGHTS)
	@test -n "$(DATA)" || (echo "usage: make bench DATA=<folder of images>" && exit 2)
	$(BIN)/python -m bench.run "$(DATA)"

# make bench-search [DATA=<folder>]: vgg16 searches at 1-16 clients, batching off vs on
# (var/bench/batching.*); the sample catalogue by default. A few minutes.
bench-search: $(STAMP) $(WEIGHTS)
	$(BIN)/python -m bench.run --search-batching "$(or $(DATA),samples/grocery-store/images)"

# make bench-scale [VECTORS=1000000] [SHARDS_LIST=1,2,4]: one index split into 1, 2 and 4
# shards, one replica process per shard: memory per replica, search p50/p95, recall@10
# against exact (var/bench/scale.*). About 10 minutes and 10 GB of memory at 1M vectors.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale --vectors $(or $(VECTORS),1000000) --shards $(or $(SHARDS_LIST),1,2,4)

# make reshard TO=<shards> [FROM=<shards>]: copy every index from INDEX_SHARDS (or FROM) shards
# to TO beside them, nothing embedded again; then restart with INDEX_SHARDS=TO, run it again,
# and `python -m tools.reshard --to TO --drop-source` (README.md, "Re-sharding").
reshard: $(STAMP)
	$(BIN)/python -m tools.reshard --to $(TO) $(if $(FROM),--from $(FROM))

# make bench-redis-bytes [IMAGES=10000]: Redis bytes per catalogue image with both methods
# indexed, JPEGs in Redis (the release before the blob store) vs in the blob store, on a
# private redis-server (var/bench/redis_bytes.*). About 5 minutes (a file write each blob).
bench-redis-bytes: $(STAMP)
	$(BIN)/python -m bench.redis_bytes --images $(or $(IMAGES),10000)

# make eval CATALOGUE=<dir> QUERIES=<dir>: P@1, P@5, mAP@10 per method against the running
# service (make run); class = each image's parent folder. Trains the autoencoder on CATALOGUE.
# CATALOG= is the name earlier releases documented, still read.
CATALOGUE ?= $(CATALOG)
eval: $(STAMP)
	@test -n "$(CATALOGUE)" -a -n "$(QUERIES)" || (echo "usage: make eval CATALOGUE=<dir> QUERIES=<dir>" && exit 2)
	API_KEY=$${API_KEY:-$$(cat var/api_key 2>/dev/null)} $(BIN)/imgsearch eval --train \
		"$(CATALOGUE)" "$(QUERIES)" --json-out var/eval.json

# make export METHOD=vgg16|autoencoder OUT=<file.npz> [VERSION=<version>]: one method's index,
# its catalogue images (and the autoencoder's model) in a .npz file; make import IN=<file.npz>
# adds one to the deployment at REDIS_URL. README.md, "Moving an index".
export: $(STAMP)
	@test -n "$(METHOD)" -a -n "$(OUT)" || (echo "usage: make export METHOD=vgg16|autoencoder OUT=<file.npz> [VERSION=<version>]" && exit 2)
	$(BIN)/python -m tools.index_transfer export "$(METHOD)" "$(OUT)" $(if $(VERSION),--version "$(VERSION)")

import: $(STAMP)
	@test -n "$(IN)" || (echo "usage: make import IN=<file.npz>" && exit 2)
	$(BIN)/python -m tools.index_transfer import "$(IN)"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

install: $(STAMP)

weights: $(WEIGHTS)

# One lock file (constraints.txt) pins every package; the gateway alone would install
# without the "worker" extra and so without TensorFlow.
$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[worker,local,dev]'
	touch $(STAMP)

# Real ImageNet VGG16 weights, obtained offline (see tools/vgg16_weights.py).
$(WEIGHTS): | $(STAMP)
	$(BIN)/python -m tools.vgg16_weights fetch --dest var/weights

clean:
	rm -rf $(VENV) var/logs
