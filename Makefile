# BronchoNav: `make demo` runs the main job on the built-in phantom, `make test` the test suite.
# Both create/update .venv and install what is missing (system packages too), once.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-install
# ROS 2 traffic stays on this machine, in a domain of its own.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 42
export MPLBACKEND := Agg

.PHONY: demo test bench install system-deps clean

install: $(STAMP)

system-deps:
	@dpkg -s libusb-1.0-0 >/dev/null 2>&1 || { \
	  echo "installing Debian package libusb-1.0-0 (needed by open3d)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null; }

$(STAMP): setup.py setup.cfg package.xml | system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[ros,test,campaign]'
	$(PY) -m bronchonav.warmup  # compile the numba kernels now, not at the first catheter_sim start
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/bronchonav demo

test: $(STAMP)
	$(PY) -m pytest -q test

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info out
