# Two user-facing targets:  make quickstart  (main job)   make test  (tests).
# Both create or reuse .venv, install what is missing, and are safe to run twice.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
KGITM   = $(VENV)/bin/kgitm
STAMP   = $(VENV)/.kgitm-installed
DATA   ?= data/synthscenes

.PHONY: quickstart test install wordnet browser

install: $(STAMP) wordnet

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# WordNet 3.0 database files (Debian packages), needed by the WordNet knowledge source and metric.
wordnet:
	@if [ ! -f /usr/share/wordnet/data.noun ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing WordNet (wordnet-base wordnet-sense-index)"; \
	    (apt-get install -y -q --no-install-recommends wordnet-base wordnet-sense-index >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends wordnet-base wordnet-sense-index >/dev/null)); \
	  else \
	    echo "note: WordNet files missing; run: sudo apt-get install wordnet-base wordnet-sense-index (WordNet tests will skip)"; \
	  fi; \
	fi

# A headless browser for the test that renders kgitm report's HTML (Debian chromium); the test skips without one.
browser:
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (headless rendering test of kgitm report)"; \
	    (apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1)) || \
	    echo "note: chromium could not be installed; the report rendering test will skip"; \
	  else \
	    echo "note: no headless browser; run: sudo apt-get install chromium (the report rendering test will skip)"; \
	  fi; \
	fi

quickstart: install
	$(KGITM) synthscenes --out $(DATA)
	KGITM=$(KGITM) bash scripts/quickstart.sh $(DATA)

test: install browser
	$(PY) -m pytest -q
