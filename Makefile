# deltahw developer entry points. `make help` lists them.
PYTHON ?= python3
SIM ?= icarus
CONFIG ?=
WAVES ?= 0
BOARD ?= arty_a7
export PYTHONHASHSEED = 0

.PHONY: help setup demo test unit sim firmware-test lint bench link-faults clean

help:
	@echo "make setup          install system and Python dependencies (Debian, as root)"
	@echo "make demo           export the shipped model, generate its RTL, build for $(BOARD)"
	@echo "make test           unit tests + RTL regression (Icarus) + co-simulation tests"
	@echo "make unit           Python unit tests only (golden model, numerics, gateware blocks)"
	@echo "make sim            cocotb regression of the RTL vs the golden model"
	@echo "                    (SIM=icarus|verilator, CONFIG=config.json|model folder, WAVES=1)"
	@echo "make firmware-test  C driver against a Verilator model of the core"
	@echo "make bench          benchmarks (golden model speed, RTL cycles vs ideal)"
	@echo "make link-faults    host link fault-injection campaign (reference device + RTL bridge;"
	@echo "                    report in docs/link_faults/)"

setup:
	bash scripts/setup.sh

demo:
	$(PYTHON) -m deltahw.export models/example/model.pt --out out/example
	$(PYTHON) -m deltahw.generate out/example --out out/example_rtl --lint
	$(PYTHON) -m deltahw.build --board $(BOARD) --out out/build_$(BOARD)

unit:
	$(PYTHON) -m pytest -q tests

sim:
	SIM=$(SIM) CONFIG=$(CONFIG) WAVES=$(WAVES) $(PYTHON) -m pytest -q rtl_tests

firmware-test:
	$(MAKE) -C firmware test PYTHON=$(PYTHON)

test: unit sim firmware-test

lint:
	ruff check deltahw tests rtl_tests scripts

bench:
	$(PYTHON) scripts/bench_golden.py
	$(PYTHON) scripts/bench_rtl.py

link-faults:
	$(PYTHON) -m deltahw.link_faults --out docs/link_faults

clean:
	rm -rf sim_build rtl_tests/sim_build out build .pytest_cache
