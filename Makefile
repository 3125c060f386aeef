# deltahw developer entry points. `make help` lists them.
PYTHON ?= python3
SIM ?= icarus
CONFIG ?=
INPUT ?=
WAVES ?= 0
BOARD ?= arty_a7
FUZZ_N ?= 50
FUZZ_SEED ?=
FUZZ_OUT ?= fuzz_out
FORMS ?= portable
export PYTHONHASHSEED = 0

.PHONY: help setup demo test unit sim fuzz fuzz-sample firmware-test soc-sim soc-sim-small soc-build lint \
	bench link-faults clean

help:
	@echo "make setup          install system and Python dependencies (Debian, as root)"
	@echo "make demo           export the shipped fsdd model, generate its RTL, build it for $(BOARD)"
	@echo "make test           unit tests + RTL regression (Icarus) + co-simulation tests"
	@echo "make unit           Python unit tests only (golden model, numerics, gateware blocks)"
	@echo "make sim            cocotb regression of the RTL vs the golden model"
	@echo "                    (SIM=icarus|verilator, CONFIG=config.json|model folder, WAVES=1,"
	@echo "                    FORMS=portable|series7: the implementation forms under test)"
	@echo "make sim CONFIG=model INPUT=x.npy"
	@echo "                    your own float input (T, I) or (B, T, I) through the model's RTL"
	@echo "                    on Verilator: outputs to x.rtl.npy, hardware counters to x.rtl.json"
	@echo "make fuzz           random legal configs through the RTL regression on Verilator"
	@echo "                    (FUZZ_N=50, FUZZ_SEED=<seed; default from the clock>, FUZZ_OUT=dir;"
	@echo "                    a failing config is saved in FUZZ_OUT/failures/ for make sim CONFIG=;"
	@echo "                    FORMS=series7 fuzzes the Xilinx 7-series forms)"
	@echo "make firmware-test  C driver against a Verilator model of the core"
	@echo "make soc-sim        the RISC-V SoC (LiteX, VexRiscv, the fsdd core, UART) in LiteX's"
	@echo "                    Verilator simulation: the firmware loads the weights, runs an fsdd"
	@echo "                    test utterance, and every output and counter is checked against the"
	@echo "                    golden and cycle models (SOC_OUT=build/soc-sim; ~10 min)"
	@echo "make soc-sim-small  the same with the small example model (~6 min)"
	@echo "make soc-build      the SoC's Vivado build tree for the Arty A7 + open synthesis"
	@echo "make bench          benchmarks (golden model speed, RTL cycles vs ideal)"
	@echo "make link-faults    host link fault-injection campaign (reference device + RTL bridge;"
	@echo "                    report in docs/link_faults/)"

setup:
	bash scripts/setup.sh

# One model end to end: the shipped fsdd network is exported, its RTL generated and linted, and
# the same export built for the board.
demo:
	$(PYTHON) -m deltahw.export models/fsdd/model.pt --out out/fsdd
	$(PYTHON) -m deltahw.generate out/fsdd --out out/fsdd_rtl --lint
	$(PYTHON) -m deltahw.build out/fsdd --board $(BOARD) --out out/build_$(BOARD)

unit:
	$(PYTHON) -m pytest -q tests

# CONFIG=...: that configuration through the core regression only (the AXI and UART end-to-end
# tests run their own networks and would ignore CONFIG).
sim:
ifneq ($(strip $(INPUT)),)
	$(if $(strip $(CONFIG)),,$(error make sim INPUT=... needs CONFIG=<model folder or checkpoint>))
	$(PYTHON) -m deltahw.simulate $(CONFIG) --input $(INPUT) \
		--output $(basename $(INPUT)).rtl.npy --stats $(basename $(INPUT)).rtl.json
else ifneq ($(strip $(CONFIG)),)
	SIM=$(SIM) CONFIG=$(CONFIG) WAVES=$(WAVES) FORMS=$(FORMS) $(PYTHON) -m pytest -q \
		rtl_tests/test_rtl_core.py rtl_tests/test_rtl_vectors.py
else
	SIM=$(SIM) WAVES=$(WAVES) FORMS=$(FORMS) $(PYTHON) -m pytest -q rtl_tests
endif

fuzz:
	FORMS=$(FORMS) $(PYTHON) -m deltahw.verify.fuzz --n $(FUZZ_N) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED)) \
		--out $(FUZZ_OUT) --sim verilator

# The CI sample: two configurations of a fixed seed (reproducible; `make fuzz` varies the seed).
fuzz-sample:
	$(MAKE) fuzz FUZZ_N=2 FUZZ_SEED=$(or $(FUZZ_SEED),20261201) FUZZ_OUT=$(FUZZ_OUT)/sample

firmware-test:
	$(MAKE) -C firmware test PYTHON=$(PYTHON)

test: unit sim firmware-test fuzz-sample

SOC_OUT ?= build/soc-sim
soc-sim:
	$(PYTHON) -m deltahw.soc.sim models/fsdd/export --out $(SOC_OUT) --run --force

soc-sim-small:
	$(PYTHON) -m deltahw.soc.sim models/example/export --out $(SOC_OUT)-small --run --force

soc-build:
	$(PYTHON) -m deltahw.build --board arty_a7 --soc --out build/arty_a7-soc --force

lint:
	ruff check deltahw tests rtl_tests scripts

bench:
	$(PYTHON) scripts/bench_golden.py
	$(PYTHON) scripts/bench_rtl.py

link-faults:
	$(PYTHON) -m deltahw.link_faults --out docs/link_faults

clean:
	rm -rf sim_build rtl_tests/sim_build out build .pytest_cache $(FUZZ_OUT)
