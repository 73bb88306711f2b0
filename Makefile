# unetlab: `make demo` runs the whole pipeline, `make test` checks the library and every notebook.
# Everything installs into .venv; nothing touches your system Python.

PYTHON ?= python3
VENV   ?= .venv
# torch goes in first so that pip never pulls a multi-GB CUDA build onto a CPU machine.
# On a GPU machine:  make demo TORCH=torch   (or any pip spec, e.g. TORCH="torch==2.5.1").
TORCH  ?= torch==2.13.0
# Seconds one notebook cell may take under nbval (quick mode keeps every cell far below this).
CELL_TIMEOUT ?= 300

PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lab notebooks bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[notebooks,test]"
	touch $@

demo: $(STAMP)
	MPLBACKEND=Agg $(PY) -m unetlab demo

test: $(STAMP)
	UNETLAB_QUICK=1 MPLBACKEND=Agg $(PY) -m pytest tests notebooks \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=$(CELL_TIMEOUT) -p no:cacheprovider

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Re-execute every chapter in place with the full (not quick) sizes, so GitHub shows real outputs.
notebooks: $(STAMP)
	@test -n "$$UNETLAB_REAL_DATA" || echo "warning: UNETLAB_REAL_DATA is not set: chapter 06 will skip its real-data cells"
	cd notebooks && for nb in [0-9][0-9]_*.ipynb; do \
		echo "== $$nb"; \
		env -u UNETLAB_QUICK MPLBACKEND=module://matplotlib_inline.backend_inline \
			../$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=3600 --ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.record_timing=False "$$nb" || exit 1; \
	done

bench: $(STAMP)
	$(PY) benchmarks/bench_synth.py

clean:
	rm -rf $(VENV) data runs notebooks/data notebooks/runs .pytest_cache
