# amaranth: UnusedElaboratable=no
"""Board build flow: fit check, build tree, report, tool-output parsers and clocking (no synthesis).

The full flows (open synthesis for xc7, bitstream for ECP5) take minutes and run as commands in CI:
``python -m deltahw.build --board arty_a7`` and ``python -m deltahw.build --board ulx3s``.
"""

import json
from pathlib import Path

import pytest
import torch

from deltahw import build, cycles, slack
from deltahw.boards import BOARDS, PARTS, BoardTop, get_board
from deltahw.boards.clocking import ecp5_pll_params, mmcm_params
from deltahw.config import DeltaGRUConfig
from deltahw.export import export_model
from deltahw.model import from_modules, load_model
from deltahw.resources import FitError, check_fit, estimate, fits


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    torch.manual_seed(0)
    m = from_modules(torch.nn.GRU(5, 8, 1), torch.nn.Linear(8, 3), lanes=6, act_width=1,
                     lanes_per_bank=3, theta_x=(4,), theta_h=(4,))
    path = tmp_path_factory.mktemp("model") / "export"
    export_model(m, path)
    return path


def test_build_tree_and_report_without_synthesis(small_model, tmp_path, capsys):
    out = tmp_path / "arty"
    rc = build.main(["--board", "arty_a7", "--model", str(small_model), "--output", str(out),
                     "--no-synth"])
    assert rc == 0
    names = {p.name for p in out.iterdir()}
    for name in ("build_deltahw_top.sh", "deltahw_top.tcl", "deltahw_top.v", "deltahw_top.xdc",
                 "deltahw_sdp_ram.v", "weights_bank0.mem", "biases_bank1.mem", "manifest.json",
                 "config.json", "report.json", "report.md"):
        assert name in names, name
    tcl = (out / "deltahw_top.tcl").read_text()
    assert "xc7a35ticsg324-1L" in tcl and "add_files -norecurse weights_bank0.mem" in tcl
    assert "$readmemh" in (out / "deltahw_sdp_ram.v").read_text()
    assert '"weights_bank0.mem"' in (out / "deltahw_top.v").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["part"] == "xc7a35t" and report["uart_divisor"] == 100
    perf = report["performance"]
    assert perf["dense_cycles_per_timestep"] > perf["min_cycles_per_timestep"] > 0
    assert "Predicted performance" in (out / "report.md").read_text()
    log = capsys.readouterr().out
    assert "[2/5] checking that the design fits xc7a35t" in log


def test_ecp5_tree_has_pll_and_yowasp_script(small_model, tmp_path):
    out = tmp_path / "ulx3s"
    assert build.main(["--board", "ulx3s", "--model", str(small_model), "--output", str(out),
                       "--no-synth", "--clock-mhz", "40"]) == 0
    top = (out / "deltahw_top.il").read_text()
    assert "EHXPLLL" in top
    # router2: router1 does not converge on the fsdd core at 100 MHz (docs/benchmarks/fmax).
    assert "--router router2" in (out / "build_deltahw_top.sh").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["clock_mhz"] == pytest.approx(40.0)
    assert report["uart_divisor"] == 40


def test_ecp5_evn_tree_targets_the_5g_85f_at_speed_8(small_model, tmp_path):
    """The ECP5-5G evaluation board: its part (the -8 speed grade) on nextpnr's command line, and
    its default clock made exactly from the 12 MHz oscillator."""
    out = tmp_path / "evn"
    assert build.main(["--board", "ecp5_evn", str(small_model), "--out", str(out),
                       "--no-synth"]) == 0
    script = (out / "build_deltahw_top.sh").read_text()
    assert "--um5g-85k" in script and "--speed 8" in script and "--router router2" in script
    assert "EHXPLLL" in (out / "deltahw_top.il").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["part"] == "LFE5UM5G-85F"
    assert report["clock_mhz"] == pytest.approx(BOARDS["ecp5_evn"].default_clock_mhz)


def test_seed_reaches_nextpnr_and_the_report(small_model, tmp_path, capsys):
    """``--seed N`` goes on nextpnr's command line and into the report; a board without a
    placement step, or a seed nextpnr cannot take, is refused before anything is written."""
    out = tmp_path / "ulx3s"
    assert build.main(["--board", "ulx3s", str(small_model), "--out", str(out), "--no-synth",
                       "--seed", "7"]) == 0
    script = (out / "build_deltahw_top.sh").read_text()
    assert "--router router2 --tmg-ripup --report nextpnr_report.json --detailed-timing-report " \
        "--seed 7" in script
    report = json.loads((out / "report.json").read_text())
    assert report["nextpnr_seed"] == 7
    # The report's timing section, as the ECP5 flow fills it: the slack histogram's counts per
    # faster clock, and where they are.
    report["timing"] = {"fmax_mhz": 74.43, "target_mhz": 70.0, "met": True,
                        "endpoints_slower_than": {"80": [1, 325], "90": [548, 548]},
                        "slower_by_module": {"80": {"slower": 103, "by_module": [
                            ["core.xq1.words", "core.xq1.rp_cur", 62]]}}}
    build.write_reports(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "80 MHz: 1-325; 90 MHz: 548." in md
    assert "| 80 MHz | 103 | `core.xq1.words` -> `core.xq1.rp_cur` (62) |" in md
    assert "nextpnr --seed 7" in (out / "report.md").read_text()
    capsys.readouterr()
    for argv, msg in [(["--board", "arty_a7", "--seed", "7"], "only ECP5 boards use"),
                      (["--board", "ulx3s", "--seed", "-1"], "from 0 to 2147483647; got -1"),
                      (["--board", "arty_a7", "--soc", "--seed", "7"], "no placement here")]:
        bad = tmp_path / "bad"
        assert build.main([str(small_model), "--out", str(bad), "--no-synth", *argv]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
        assert not bad.exists()


@pytest.mark.parametrize("variant", ["35", "100"])
def test_capture_is_turned_off_where_the_part_has_no_room(tmp_path, capsys, variant):
    """The shipped fsdd (P = 3A = 48, C = 4: one captured beat, ``cycles.act_capture``) fits the
    Arty's xc7a35t only without capture's selects: the build turns capture off there, says so,
    and writes the config it built (the host and the report follow it); the xc7a100t keeps it.
    """
    fsdd = Path(__file__).resolve().parent.parent / "models" / "fsdd" / "export"
    assert cycles.act_capture(load_model(fsdd).config) == 1
    out = tmp_path / "arty"
    rc = build.main(["--board", "arty_a7", "--variant", variant, "--model", str(fsdd),
                     "--output", str(out), "--no-synth"])
    assert rc == 0
    log = capsys.readouterr().out
    built = DeltaGRUConfig.load(out / "config.json")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["capture"] is built.capture
    if variant == "35":
        assert "capture off: with it the design does not fit xc7a35t" in log
        assert not built.capture and fits(built, PARTS["xc7a35t"])
        assert not fits(built.replace(capture=True), PARTS["xc7a35t"])
    else:
        assert "capture off" not in log and built.capture
    report = json.loads((out / "report.json").read_text())
    assert report["performance"]["dense_cycles_per_timestep"] == cycles.dense_cycles(built)


def test_too_large_model_is_refused_before_synthesis(tmp_path, capsys):
    torch.manual_seed(0)
    gru = torch.nn.GRU(13, 160, 2)
    path = tmp_path / "big.pt"
    torch.save(gru.state_dict(), path)
    out = tmp_path / "out"
    rc = build.main(["--board", "arty_a7", "--model", str(path), "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "does not fit xc7a35t" in err and "block RAM (RAMB36): needs" in err
    assert "What would fit" in err and "--variant 100" in err
    assert not out.exists()  # nothing generated


def test_fit_error_names_multipliers():
    cfg = DeltaGRUConfig(input_size=4, hidden_size=48, lanes=144, lanes_per_bank=4)
    with pytest.raises(FitError, match=r"multipliers \(DSP48E1\): needs 148, the part has 90"):
        check_fit(cfg, PARTS["xc7a35t"])
    assert estimate(cfg, PARTS["xc7a100t"]).dsps <= PARTS["xc7a100t"].dsps


def test_bad_arguments(small_model, capsys):
    assert build.main(["--board", "arty_a7", "--variant", "50", "--model", str(small_model),
                       "--no-synth"]) != 0
    assert "variants" in capsys.readouterr().err
    assert build.main(["--board", "arty_a7", "--model", str(small_model), "--lanes", "7",
                       "--no-synth"]) == 2
    assert "multiple of 3 x act_width" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Unknown board"):
        get_board("de0")


def test_clocking_solvers():
    p = mmcm_params(100e6, 125e6)
    assert p["f_out"] == pytest.approx(125e6) and 600e6 <= p["vco"] <= 1200e6
    q = ecp5_pll_params(25e6, 62.5e6)
    assert q["f_out"] == pytest.approx(62.5e6) and 400e6 <= q["vco"] <= 800e6
    # the ULX3S default, 66.67 MHz: 25 / 3 x 8 / 6 = 200/3 MHz, within the solver's 0.5 %; 25 /
    # 5 x 14 / 6 = 70 MHz exactly (its default before), and 25 / 1 x 3 / 6 = 75 MHz
    q = ecp5_pll_params(25e6, BOARDS["ulx3s"].default_clock_mhz * 1e6)
    assert q["f_out"] == pytest.approx(200e6 / 3) and 400e6 <= q["vco"] <= 800e6
    q = ecp5_pll_params(25e6, 70e6)
    assert q["f_out"] == pytest.approx(70e6) and 400e6 <= q["vco"] <= 800e6
    q = ecp5_pll_params(25e6, 75e6)
    assert q["f_out"] == pytest.approx(75e6) and 400e6 <= q["vco"] <= 800e6
    # the ECP5-5G evaluation board's default from its 12 MHz oscillator, exactly
    evn = BOARDS["ecp5_evn"]
    q = ecp5_pll_params(evn.osc_hz, evn.default_clock_mhz * 1e6)
    assert q["f_out"] == pytest.approx(evn.default_clock_mhz * 1e6, abs=1)
    q = ecp5_pll_params(25e6, 66.67e6)
    assert q["f_out"] == pytest.approx(200e6 / 3) and 400e6 <= q["vco"] <= 800e6
    with pytest.raises(ValueError, match="cannot make"):
        ecp5_pll_params(25e6, 1e6)
    cfg = DeltaGRUConfig(input_size=5, hidden_size=8, lanes=6, act_width=1, lanes_per_bank=3)
    top = BoardTop(BOARDS["arty_a7"], cfg, clock_mhz=100, baud=3_000_000)
    assert top.divisor == 33


def test_tool_output_parsers():
    stat = """
=== deltahw_top ===
     7507 cells
      480   CARRY4
       17   DSP48E1
     2375   FDRE
       44   FDSE
      814   LUT2
      295   LUT6
      151   RAM32M
       14   RAMB18E1
"""
    counts = build.parse_yosys_stat(stat)
    util = build.xc7_utilisation(counts, PARTS["xc7a35t"])
    assert util["luts"]["used"] == 814 + 295 + 151 * 4
    assert util["ffs"]["used"] == 2419 and util["bram"]["used"] == 7 and util["dsps"]["used"] == 17
    log = """Info: Device utilisation:
Info: \t              DP16KD:      14/    208     6%
Info: \t          MULT18X18D:      17/    156    10%
Info: \t        TRELLIS_COMB:   11839/  83640    14%
Info: Max frequency for clock '$glbnet$clk': 61.23 MHz (PASS at 50.00 MHz)
"""
    parsed = build.parse_nextpnr_log(log)
    assert parsed["cells"]["TRELLIS_COMB"] == {"used": 11839, "total": 83640}
    assert parsed["clocks"]["$glbnet$clk"] == {"fmax_mhz": 61.23, "pass": True,
                                               "target_mhz": 50.0}
    assert parsed["critical_path"] is None  # no critical path report in this log
    # nextpnr's critical path report (layout of nextpnr-ecp5 0.7+).
    crit_log = log + """Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source top.core.mac.rd_mx_TRELLIS_FF_Q.Q
Info:    routing  2.10  2.62 Net top.core.mac.rd_mx[0] (20,30) -> (41,52)
Info:                          Sink top.core.mac.mx7.ram_DPR16X4.RAD0
Info:      logic  0.24  2.86 Source top.core.mac.mx7.ram_DPR16X4.DO0
Info:    routing  0.90  3.76 Net top.core.mac.old2_7[0] (41,52) -> (42,52)
Info:                          Sink top.core.mac.old3_7_TRELLIS_FF_Q.DI
Info:      setup  0.00  3.76 Sink top.core.mac.old3_7_TRELLIS_FF_Q.DI
Info: 0.76 ns logic, 3.00 ns routing
"""
    crit = build.parse_nextpnr_log(crit_log)["critical_path"]
    assert crit == {"from": "top.core.mac.rd_mx_TRELLIS_FF_Q.Q",
                    "to": "top.core.mac.old3_7_TRELLIS_FF_Q.DI",
                    "through": ["top.core.mac.rd_mx_TRELLIS_FF_Q.Q",
                                "top.core.mac.mx7.ram_DPR16X4.DO0"],
                    "logic_ns": 0.76, "routing_ns": 3.0}


def test_slack_histogram_and_the_endpoints_a_faster_clock_would_fail():
    """nextpnr's post-route slack histogram (layout of nextpnr-ecp5 0.11): the last one in the
    log, '*' = 10 endpoints, '+' = 1 to 9 more; at a 50 MHz target (20000 ps) a 62.5 MHz clock
    (16000 ps) needs 4000 ps of slack."""
    log = """Info: Max frequency for clock '$glbnet$clk': 55.00 MHz (FAIL at 60.00 MHz)
Info: Slack histogram:
Info:  legend: * represents 3 endpoint(s)
Info: [ -1000,      0) |*
Info: Max frequency for clock '$glbnet$clk': 61.23 MHz (PASS at 50.00 MHz)
Info: Slack histogram:
Info:  legend: * represents 10 endpoint(s)
Info:          + represents [1,10) endpoint(s)
Info: [  1000,   2500) |+
Info: [  2500,   4000) |**
Info: [  4000,   5500) |***+
Info: [  5500,   7000) |**********
"""
    h = slack.parse_slack_histogram(log)
    assert h["target_mhz"] == 50.0
    assert [(b["from_ps"], b["min"], b["max"]) for b in h["bins"]] == [
        (1000, 1, 9), (2500, 20, 20), (4000, 31, 39), (5500, 100, 100)]
    assert slack.endpoints_slower_than(h, 62.5) == (21, 29)  # both bins below 4000 ps
    assert slack.endpoints_slower_than(h, 60.0) == (1, 29)  # 3333 ps: the second bin straddles
    assert slack.endpoints_slower_than(h, 50.0) == (0, 0)
    assert build.parse_nextpnr_log(log)["slack_histogram"] == h
    assert slack.parse_slack_histogram("Info: Program finished normally.") is None
    assert slack.faster_clocks(74.43) == [80, 90, 100] and slack.faster_clocks(80.0) == [90, 100,
                                                                                        110]


def test_led_stretcher_delays_and_holds():
    """The board's LED pulse stretcher: a one-cycle trigger lights the LED ``DELAY`` + 1 cycles
    later (registered trigger, then the counter) for exactly ``cycles`` cycles; a trigger while
    lit restarts the count."""
    from amaranth import Elaboratable, Module, Signal
    from amaranth.sim import Simulator

    from deltahw.boards.top import _Stretch

    class Dut(Elaboratable):
        def __init__(self):
            self.trigger = Signal()
            self.out = Signal()

        def elaborate(self, platform):
            m = Module()
            s = _Stretch(m, self.trigger, 5, "t")
            m.d.comb += self.out.eq(s.out)
            return m

    dut = Dut()
    trace = []

    async def bench(ctx):
        for cycle in range(30):
            ctx.set(dut.trigger, cycle in (0, 10, 12))
            trace.append(ctx.get(dut.out))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    d = _Stretch.DELAY + 1
    lit = [c for c, v in enumerate(trace) if v]
    assert lit == list(range(d, d + 5)) + list(range(10 + d, 12 + d + 5)), lit


def test_where_slower_arrivals_worked_by_hand():
    """deltahw.slack.where_slower on a nextpnr report worked by hand: a flip-flop -> a LUT -> a
    carry chain of two cells -> a flip-flop, and a block RAM straight into a flip-flop. A sink's
    delay in
    nextpnr's detailed report is the arrival there (the worst path so far), so the endpoints'
    are taken as they are, and each is traced back to the register that launched it."""
    def net(driver, port, *sinks):
        return {"driver": driver, "port": port, "net": f"{driver}.{port}",
                "endpoints": [{"cell": c, "port": p, "delay": [t / 2, t],
                               "event": "posedge $glbnet$clk"} for c, p, t in sinks]}

    report = {"detailed_net_timings": [
        net("top.core.a.r_TRELLIS_FF", "Q", ("top.core.a.l_LUT4", "A", 1.52)),
        net("top.core.a.s_TRELLIS_FF", "Q", ("top.core.a.l_LUT4", "B", 0.9)),
        net("top.core.a.l_LUT4", "F", ("top.core.b.c$CCU2_COMB0", "B", 3.76)),
        net("top.core.b.c$CCU2_COMB0", "FCO", ("top.core.b.c$CCU2_COMB1", "FCI", 4.21)),
        net("top.core.b.c$CCU2_COMB1", "F", ("top.core.b.q_TRELLIS_FF", "DI", 7.65)),
        net("top.core.m.ram_DP16KD", "DOA0", ("top.core.b.k_TRELLIS_FF", "M", 7.33),
            ("top.core.b.k_TRELLIS_FF", "LSR", 2.0)),
    ]}
    res = slack.where_slower(report, [100.0, 125.0, 150.0, 200.0])
    assert res["worst_ns"] == pytest.approx(7.65)
    assert res["worst"] == ["top.core.a.r_TRELLIS_FF", "top.core.b.q_TRELLIS_FF", "DI"]
    assert res["endpoints"] == 3  # two data inputs and the reset (the LUT inputs are not)
    # 125 MHz = 8 ns, 150 MHz = 6.67 ns, 200 MHz = 5 ns (the reset: 2.0 + 0.42 setup)
    assert res["clocks"]["100"]["slower"] == 0 and res["clocks"]["125"]["slower"] == 0
    assert res["clocks"]["150"]["by_module"] == [["core.a", "core.b", 1],
                                                ["core.m", "core.b", 1]]
    assert res["clocks"]["200"]["slower"] == 2
    with pytest.raises(ValueError, match="no detailed_net_timings"):
        slack.where_slower({"critical_paths": []}, [100.0])


def test_ecp5_flow_reports_where_and_survives_a_bad_nextpnr_report(tmp_path, monkeypatch):
    """The ECP5 flow's timing section from nextpnr's outputs (the tools replaced by a stub that
    writes them): the slack histogram's counts and the per-module table; a nextpnr report that
    cannot be read costs the table only, not the build."""
    import types

    log_text = """Info: Max frequency for clock '$glbnet$clk': 74.43 MHz (PASS at 70.00 MHz)
Info: Slack histogram:
Info:  legend: * represents 1 endpoint(s)
Info: [  1000,   1500) |*
"""
    npr = {"detailed_net_timings": [
        {"driver": "top.core.a.r_TRELLIS_FF", "port": "Q", "net": "n",
         "endpoints": [{"cell": "top.core.b.q_TRELLIS_FF", "port": "DI", "delay": [1.0, 13.0],
                        "event": "posedge $glbnet$clk"}]}]}

    def run(report_text):
        out = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        out.mkdir()

        def fake_run_tool(cmd, cwd, what, log_file, env=None, timeout=None):
            (cwd / f"{build.TOP_NAME}.tim").write_text(log_text)
            (cwd / build.NEXTPNR_REPORT).write_text(report_text)
            return 1.0

        monkeypatch.setattr(build, "run_tool", fake_run_tool)
        report = {}
        build._trellis_flow(True, out, PARTS["LFE5U-85F"], None,
                            types.SimpleNamespace(clock_hz=70e6), report, 70.0)
        return report["timing"]

    timing = run(json.dumps(npr))
    assert timing["fmax_mhz"] == 74.43 and timing["endpoints_slower_than"]["80"] == [1, 1]
    assert timing["slower_by_module"]["80"] == {"slower": 1,
                                                "by_module": [["core.a.r", "core.b.q", 1]]}
    timing = run(json.dumps(npr)[:40])  # cut short
    assert "slower_by_module" not in timing and timing["endpoints_slower_than"]["80"] == [1, 1]
