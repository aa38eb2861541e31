# Everything a newcomer needs: `make run` starts the system, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEIGHTS := var/weights/vgg16_imagenet_notop.weights.h5

.PHONY: run test lint weights install clean bench eval

run: $(STAMP) $(WEIGHTS)
	$(BIN)/python -m deploy.launcher

test: $(STAMP) $(WEIGHTS)
	$(BIN)/python -m pytest -q

# make bench DATA=<folder of images>: throughput, latency, search scaling (bench/results.*)
bench: $(STAMP) $(WEIGHTS)
	@test -n "$(DATA)" || (echo "usage: make bench DATA=<folder of images>" && exit 2)
	$(BIN)/python -m bench.run "$(DATA)"

# make eval CATALOG=<dir> QUERIES=<dir>: P@1, P@5, mAP@10 per method against the running
# service (make run); class = each image's parent folder. Trains the autoencoder on CATALOG.
eval: $(STAMP)
	@test -n "$(CATALOG)" -a -n "$(QUERIES)" || (echo "usage: make eval CATALOG=<dir> QUERIES=<dir>" && exit 2)
	API_KEY=$${API_KEY:-$$(cat var/api_key 2>/dev/null)} $(BIN)/imgsearch eval --train \
		"$(CATALOG)" "$(QUERIES)" --json-out var/eval.json

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

# Real ImageNet VGG16 weights, obtained offline (see services/vgg16/weights.py).
$(WEIGHTS): | $(STAMP)
	$(BIN)/python -m services.vgg16.weights fetch --dest var/weights

clean:
	rm -rf $(VENV) var/logs
