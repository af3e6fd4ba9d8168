# Two entry points, each creates .venv on first use:
#   make demo   install asp and run the main job on the embedded digits data
#   make test   install the test extras and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_RUN ?= runs/demo

.PHONY: demo test install install-test clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=77" wheel

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# prune -> export -> bench on the embedded digits data.
# Re-running the demo replaces $(DEMO_RUN) (it is the demo's own output).
demo: $(VENV)/.installed
	$(BIN)/asp prune --model gasl-mnist --data digits --group-weighting sqrt --lambda-group 2e-3 \
		--finetune-epochs 30 --out $(DEMO_RUN) --force
	$(BIN)/asp export $(DEMO_RUN) --format onnx --format tflite --batch dynamic
	$(BIN)/asp bench $(DEMO_RUN) --runtime onnxruntime --runtime tflite --batch 1,32

# pytest exits 5 when it collects nothing: that is a failure here, not a pass.
# ASP_SLOW_TESTS=1 runs the tests marked `slow` too (tests/conftest.py skips them otherwise).
test: $(VENV)/.installed-test
	ASP_SLOW_TESTS=1 $(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

clean-demo:
	rm -rf $(DEMO_RUN)
