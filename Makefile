# Everything a newcomer needs: `make run` starts the system, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WEIGHTS := var/weights/vgg16_imagenet_notop.weights.h5

.PHONY: run test lint weights install clean

run: $(STAMP) $(WEIGHTS)
	$(BIN)/python -m deploy.launcher

test: $(STAMP) $(WEIGHTS)
	$(BIN)/python -m pytest -q

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
