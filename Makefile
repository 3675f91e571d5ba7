# flowsep: `make test` and `make book` install what they need from nothing (Debian + Python 3.11).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
SYSTEM_TOOLS := ffmpeg:ffmpeg ffprobe:ffmpeg npm:npm chromium:chromium chromedriver:chromium-driver
SYSTEM_LIBS := libfluidsynth.so.3:libfluidsynth3 libsndfile.so.1:libsndfile1

.PHONY: setup system colab-sim test book smoke-book clean-book strip help assignments

help:
	@echo "make setup   - system packages (apt) and ./.venv with pinned Python packages"
	@echo "make test    - setup, then the whole test suite (unit, CLI, chapters at the smoke profile, browser,"
	@echo "               every chapter in a simulation of Colab's stack)"
	@echo "make book    - setup, then every chapter executed at PROFILE=$(PROFILE) and rendered to _build/html"
	@echo "               (HIDE_SOLUTIONS=1: the student edition, without the solutions)"
	@echo "make assignments - autograded assignments (otter-grader) from assignments/*.ipynb into _build/assignments"

# MathJax 3, fetched by npm's own client by package name (`npm pack`) and checked against its published
# sha512, so that the rendered book typesets its equations without a CDN; flowsep.book_build serves it with
# the pages (html/_static/mathjax).
MATHJAX_VERSION := 3.2.2
MATHJAX_SHA512 := Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==
MATHJAX := $(VENV)/share/flowsep-mathjax

setup: system $(VENV)/.setup-stamp $(MATHJAX)/.stamp-$(MATHJAX_VERSION)

# System packages: installed with apt-get when missing and running as root; otherwise one line naming them.
system:
	@missing=""; \
	for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	for pair in $(SYSTEM_LIBS); do ldconfig -p 2>/dev/null | grep -q "$${pair%%:*}" || missing="$$missing $${pair##*:}"; done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else echo "flowsep needs the system packages:$$missing (install them, e.g. sudo apt-get install$$missing)"; exit 1; fi; \
	fi

$(VENV)/.setup-stamp: pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "flowsep needs $(PYTHON) (install Python 3.11)"; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt "torch==2.9.1" "torchaudio==2.9.1"
	$(PY) -m pip install -q -c constraints.txt -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

$(MATHJAX)/.stamp-$(MATHJAX_VERSION): | $(VENV)/.setup-stamp
	@rm -rf $(MATHJAX) $(MATHJAX).tmp && mkdir -p $(MATHJAX).tmp
	npm pack --silent --pack-destination $(MATHJAX).tmp mathjax@$(MATHJAX_VERSION) >/dev/null
	$(PY) -c "import base64, hashlib, sys; data = open(sys.argv[1], 'rb').read(); \
	  sys.exit(None if base64.b64encode(hashlib.sha512(data).digest()).decode() == sys.argv[2] \
	           else 'the MathJax package does not match its published sha512')" \
	  $(MATHJAX).tmp/mathjax-$(MATHJAX_VERSION).tgz "$(MATHJAX_SHA512)"
	tar xzf $(MATHJAX).tmp/mathjax-$(MATHJAX_VERSION).tgz -C $(MATHJAX).tmp package/es5/tex-chtml.js package/es5/input/tex/extensions \
	  package/es5/output/chtml package/es5/ui package/es5/a11y package/es5/adaptors package/LICENSE
	mv $(MATHJAX).tmp/package/es5 $(MATHJAX) && mv $(MATHJAX).tmp/package/LICENSE $(MATHJAX)/ && rm -rf $(MATHJAX).tmp
	@touch $@

# The Colab simulation's base environment (tests/colab_sim.py): Colab's published stack of
# tests/data/colab_stack.txt on Python 3.13 (pyenv's, or python3.13 on PATH), installed from PyPI once
# into ~/.cache/flowsep/colab ($$FLOWSEP_COLAB_CACHE) and rebuilt when the list changes.
colab-sim: setup
	$(PY) tests/colab_sim.py

test: setup colab-sim
	$(PY) -m pytest -q --durations=25 tests

# HIDE_SOLUTIONS=1: the student edition, the exercises without their solutions
book: setup
	$(PY) -m flowsep.book_build --profile $(PROFILE)$(if $(filter-out 0,$(HIDE_SOLUTIONS)), --hide-solutions)

# Autograded assignments: otter assign turns each master notebook of assignments/ into a student notebook
# (implementations blanked, public tests) and an autograder zip with the hidden tests, under
# _build/assignments/<name>/{student,autograder}. Grade a submission without a container with
# `.venv/bin/otter run -a _build/assignments/<name>/autograder/<name>-autograder_*.zip SUBMISSION.ipynb`.
ASSIGNMENTS := $(wildcard assignments/*.ipynb)
assignments: setup
	@rm -rf _build/assignments
	@for nb in $(ASSIGNMENTS); do name=$$(basename $$nb .ipynb); \
	  (cd assignments && ../$(VENV)/bin/otter assign $$name.ipynb ../_build/assignments/$$name) || exit 1; \
	  echo "_build/assignments/$$name: student/$$name.ipynb, autograder/"; done

strip:
	$(VENV)/bin/nbstripout book/*.ipynb
