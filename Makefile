# unetlab: `make demo` runs the whole pipeline, `make test` checks the library and every notebook.
# Everything installs into .venv; nothing touches your system Python.

PYTHON ?= python3
VENV   ?= .venv
# torch goes in first, on its own, so that the right build is chosen before anything else asks for torch.
# TORCH is any pip spec (a GPU machine that wants the newest: TORCH=torch). TORCH_INDEX, when set, is the only index
# torch comes from. On an ordinary Linux machine PyPI's torch is the CUDA build (several GB); without a GPU use
# PyTorch's CPU wheels:  make venv TORCH_INDEX=https://download.pytorch.org/whl/cpu   (on a fresh clone, or
# after make clean). CI leaves it empty: its machine serves torch==2.13.0 as a local CPU wheel.
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
# Seconds one notebook cell may take under nbval (quick mode keeps every cell far below this).
CELL_TIMEOUT ?= 300
# The chapters `make notebooks` re-executes, e.g. NOTEBOOKS=02_inspect_masks.ipynb for one.
NOTEBOOKS ?= [0-9][0-9]_*.ipynb

PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Jupyter refuses to run as root without --allow-root (common in classroom VMs and containers).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
SUDO       := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: venv demo test lab notebooks bench retarget colab-check browser-check clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[notebooks,test]"
	touch $@

demo: $(STAMP)
	MPLBACKEND=Agg $(PY) -m unetlab demo

test: $(STAMP)
	UNETLAB_QUICK=1 MPLBACKEND=Agg $(PY) -m pytest tests notebooks \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=$(CELL_TIMEOUT) -p no:cacheprovider

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) notebooks/

# Re-execute every chapter in place with the full (not quick) sizes, so GitHub shows real outputs, then store
# each for readers without a kernel (widget outputs as text and pictures: tests/tools/store_notebooks.py).
notebooks: $(STAMP)
	@test -n "$$UNETLAB_REAL_DATA" || echo "warning: UNETLAB_REAL_DATA is not set: chapter 06 will skip its real-data cells"
	cd notebooks && for nb in $(NOTEBOOKS); do \
		echo "== $$nb"; \
		env -u UNETLAB_QUICK MPLBACKEND=module://matplotlib_inline.backend_inline \
			../$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=3600 --ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.record_timing=False "$$nb" || exit 1; \
		../$(PY) ../tests/tools/store_notebooks.py "$$nb" || exit 1; \
	done

bench: $(STAMP)
	$(PY) benchmarks/bench_synth.py

# Colab's preinstalled stack (.ci/colab-stack.txt) in .venv-colab: installing unetlab must change none of it, and
# the widget and library tests must pass there (about 2-4 minutes, most of it pip; .ci/run runs it too).
colab-check:
	.ci/colab-check "$(PYTHON)" "$(TORCH)" "$(TORCH_INDEX)"

# Release step (about 2 minutes, not in make test): chapter 02 in JupyterLab in headless Chromium, sliders moved
# (tests/browser/check_playground.py). Installs Debian's chromium (apt) and Playwright for Python (pip; it drives
# that chromium, so Playwright's own browser download is never used).
browser-check: $(STAMP)
	command -v chromium >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; }
	$(PY) -m pip install --quiet "playwright>=1.40"
	$(PY) tests/browser/check_playground.py --chromium "$$(command -v chromium)"

# Point the Colab badges and every chapter's install line at another home (a fork):  make retarget REPO=you/unetlab
# (BRANCH=... too, default: keep the declared one). Without REPO it only re-derives them from pyproject.toml.
retarget:
	$(PYTHON) tests/tools/home.py $(if $(REPO),--repo "$(REPO)") $(if $(BRANCH),--branch "$(BRANCH)")

clean:
	rm -rf $(VENV) .venv-colab build data runs notebooks/data notebooks/runs .pytest_cache
