"""Checkpoint import (every form a user has at hand, every unsupported one rejected clearly) and the
BRAM init export (layout checked against the documented mapping, round trip, atomicity, tampering).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, make_gru, random_inputs

from deltahw.config import ConfigError, DeltaGRUConfig
from deltahw.export import ManifestError, export_model, load_exported
from deltahw.export import main as export_main
from deltahw.golden import run_golden
from deltahw.model import ImportError_, from_modules, load_model, quantize_gru, save_checkpoint


def q_ref(t: torch.Tensor, frac: int, bits: int) -> torch.Tensor:
    """Independent quantizer: round half up to ``frac`` bits, saturate to ``bits``."""
    v = np.floor(t.detach().double().numpy() * 2.0**frac + 0.5)
    return torch.from_numpy(np.clip(v, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)).long()


def assert_same_params(a, b):
    assert a.config == b.config
    for pa, pb in zip(a.layers, b.layers):
        for name in ("w_x", "w_h", "b_r", "b_u", "b_cx", "b_ch"):
            assert torch.equal(getattr(pa, name), getattr(pb, name)), name
    if a.config.has_head:
        assert torch.equal(a.head_w, b.head_w) and torch.equal(a.head_b, b.head_b)


def assert_same_golden(a, b, x):
    xa, _ = a.quantize_input(x)
    xb, _ = b.quantize_input(x)
    assert torch.equal(xa, xb)
    ra, rb = run_golden(a, xa), run_golden(b, xb)
    for field in ("outputs", "fired_x", "fired_h", "fired_head", "macs", "dense_macs", "cycles"):
        assert torch.equal(getattr(ra, field), getattr(rb, field)), field


# --------------------------------------------------------------------------------------------------
# Import: what is accepted
def test_import_quantizes_as_documented():
    gru, head = make_gru(13, 37, 2, 5, seed=1)
    model = from_modules(gru, head)
    sd, H = gru.state_dict(), 37
    for l, p in enumerate(model.layers):
        assert torch.equal(p.w_x, q_ref(sd[f"weight_ih_l{l}"], 7, 8))
        assert torch.equal(p.w_h, q_ref(sd[f"weight_hh_l{l}"], 7, 8))
        b_ih, b_hh = sd[f"bias_ih_l{l}"].double(), sd[f"bias_hh_l{l}"].double()
        assert torch.equal(p.b_r, q_ref(b_ih[:H] + b_hh[:H], 8, 16))
        assert torch.equal(p.b_u, q_ref(b_ih[H : 2 * H] + b_hh[H : 2 * H], 8, 16))
        assert torch.equal(p.b_cx, q_ref(b_ih[2 * H :], 8, 16))
        assert torch.equal(p.b_ch, q_ref(b_hh[2 * H :], 8, 16))
    assert torch.equal(model.head_w, q_ref(head.weight, 7, 8))
    assert torch.equal(model.head_b, q_ref(head.bias, 8, 16))
    cfg = model.config
    assert (cfg.input_size, cfg.hidden_size, cfg.num_layers, cfg.output_size) == (13, 37, 2, 5)
    assert cfg.theta_x == (0, 0) and cfg.theta_h == (0, 0) and cfg.theta_head == 0
    rep = model.report
    names = ("w_x", "w_h", "b_r", "b_u", "b_cx", "b_ch")
    assert set(rep) == {f"layer{l}.{n}" for l in range(2) for n in names} | {"head.w", "head.b"}
    assert all(r["clipped"] == 0 for r in rep.values())
    assert rep["layer0.w_x"]["format"] == "Q1.7" and rep["head.b"]["format"] == "Q8.8"
    assert all(r["max_abs_error"] <= 2.0**-8 for r in rep.values())
    assert 0 < rep["layer1.w_h"]["rms_error"] < rep["layer1.w_h"]["max_abs_error"]


def test_import_reports_clipping():
    gru, _ = make_gru(4, 6, seed=2, scale=8.0)  # |w| up to 8/sqrt(6) > 1: Q1.7 clips
    model = from_modules(gru)
    rep = model.report["layer0.w_h"]
    w = gru.weight_hh_l0.detach()
    assert rep["clipped"] == int(((w * 128).add(0.5).floor() > 127).sum()
                                 + ((w * 128).add(0.5).floor() < -128).sum()) > 0
    assert rep["max"] == pytest.approx(float(w.max()))
    assert rep["min"] == pytest.approx(float(w.min()))
    assert rep["max_abs_error"] > 0.5


def test_import_thresholds_and_config():
    gru, head = make_gru(13, 37, 2, 5, seed=1)
    model = from_modules(gru, head, theta_x=(5, 6), theta_h=(7,), theta_head=3, lanes=24)
    assert model.config.theta_x == (5, 6) and model.config.theta_h == (7, 7)
    assert model.config.lanes == 24
    cfg = DeltaGRUConfig(13, 37, 2, 5, theta_x=(1, 2), act_width=1, lanes=9)
    model = quantize_gru(gru.state_dict(), config=cfg, head={"weight": head.weight,
                                                             "bias": head.bias})
    assert model.config == cfg
    with pytest.raises(ImportError_, match=r"The checkpoint has hidden_size=37 but the config "
                                           r"says 40\."):
        quantize_gru(gru.state_dict(), config=DeltaGRUConfig(13, 40, 2))
    with pytest.raises(ConfigError, match=r"lanes must be a multiple of 3 x act_width"):
        from_modules(gru, lanes=10)


def test_prefixed_state_dict_with_head():
    """The state dict of ``nn.Module(gru=GRU, fc=Linear)``: prefix 'gru.', head 'fc.'."""

    class Net(torch.nn.Module):
        def __init__(self, gru, fc):
            super().__init__()
            self.gru, self.fc = gru, fc

    gru, head = make_gru(13, 37, 2, 5, seed=1)
    sd = Net(gru, head).state_dict()
    assert "gru.weight_ih_l0" in sd and "fc.weight" in sd
    assert_same_params(load_model(dict(sd)), from_modules(gru, head))
    # The module itself, and the module saved whole (torch.save of the object).
    assert_same_params(load_model(Net(gru, head)), from_modules(gru, head))


def test_state_dict_files_and_whole_modules(tmp_path):
    gru, head = make_gru(6, 9, 1, 2, seed=5)
    torch.save(gru.state_dict(), tmp_path / "sd.pt")
    assert_same_params(load_model(tmp_path / "sd.pt"), from_modules(gru))
    assert load_model(tmp_path / "sd.pt").meta == {"source": str(tmp_path / "sd.pt")}
    seq = torch.nn.Sequential()
    seq.add_module("rnn", gru)
    seq.add_module("out", head)
    torch.save(seq, tmp_path / "whole.pt")
    # A whole pickled module is never unpickled by default (that could run code) ...
    with pytest.raises(ImportError_, match=r"holds a pickled Python object \(torch\.nn\.modules\."
                                           r"container\.Sequential\).*torch\.save\(model\."
                                           r"state_dict\(\), 'model\.pt'\).*--trust-pickle"):
        load_model(tmp_path / "whole.pt")
    # ... only on explicit request.
    assert_same_params(load_model(tmp_path / "whole.pt", trust_pickle=True),
                       from_modules(gru, head))
    # Plain keys and a head saved next to them in one flat dict.
    flat = dict(gru.state_dict())
    flat.update({"out.weight": head.weight, "out.bias": head.bias})
    assert_same_params(load_model(flat), from_modules(gru, head))


def test_batch_first_gru_imports_the_same_weights():
    gru, head = make_gru(6, 9, 2, 3, seed=8)
    gru_bf, _ = make_gru(6, 9, 2, 0, seed=8, batch_first=True)
    gru_bf.load_state_dict(gru.state_dict())
    a, b = from_modules(gru, head), from_modules(gru_bf, head)
    assert_same_params(a, b)
    # The golden model always takes (B, T, I); the batch_first GRU gives the same float answer.
    x = random_inputs(2, 10, 6, seed=1)
    with torch.no_grad():
        y_bf = head(gru_bf(x.float())[0]).double()
        y_tf = head(gru(x.float().transpose(0, 1))[0]).transpose(0, 1).double()
    assert torch.allclose(y_bf, y_tf, atol=1e-6)
    x_q, _ = b.quantize_input(x)
    y_fixed = run_golden(b, x_q).outputs.double() / 256
    assert (y_fixed - y_bf).abs().max() < 8 / 256


def test_gru_without_bias():
    gru = torch.nn.GRU(4, 5, bias=False)
    model = from_modules(gru)
    assert all(p.b_r.eq(0).all() and p.b_ch.eq(0).all() for p in model.layers)


def test_checkpoint_round_trip(tmp_path, checkpoint):
    model = load_model(checkpoint)
    assert model.config.theta_x == (6, 3) and model.config.lanes == 24
    assert model.meta == {"test": True}
    gru, head = make_gru(13, 37, 2, 5, seed=4)
    assert_same_params(model, from_modules(gru, head, config=model.config))
    # Input normalisation travels with the checkpoint and is applied before quantizing.
    mean, std = torch.linspace(-1, 1, 13), torch.linspace(0.5, 2, 13)
    save_checkpoint(tmp_path / "n.pt", model.config, gru.state_dict(), head.state_dict(),
                    input_mean=mean, input_std=std)
    norm = load_model(tmp_path / "n.pt")
    x = random_inputs(1, 4, 13, seed=2)
    expect, _ = model.quantize_input((x - mean.double()) / std.double())
    assert torch.equal(norm.quantize_input(x)[0], expect)
    # Overrides on load, and a config that disagrees with the checkpoint.
    assert load_model(checkpoint, theta_x=(0, 0)).config.theta_x == (0, 0)
    with pytest.raises(ImportError_, match=r"was trained with hidden_size=37 but the given config "
                                           r"says 30\."):
        load_model(checkpoint, config=DeltaGRUConfig(13, 30, 2, 5))


# --------------------------------------------------------------------------------------------------
# Import: what is rejected, and how
def gru_sd(**kw):
    gru, _ = make_gru(4, 6, seed=1, **kw)
    return dict(gru.state_dict())


def test_bidirectional_is_rejected_in_every_form(tmp_path):
    gru = torch.nn.GRU(4, 6, bidirectional=True)
    msg = r"Bidirectional GRUs are not supported: a delta network runs forward only\."
    with pytest.raises(ImportError_, match=msg):
        from_modules(gru)
    with pytest.raises(ImportError_, match=msg):
        load_model(gru.state_dict())
    with pytest.raises(ImportError_, match=msg):
        load_model({f"gru.{k}": v for k, v in gru.state_dict().items()})
    torch.save(gru.state_dict(), tmp_path / "bi.pt")
    with pytest.raises(ImportError_, match=msg):
        load_model(tmp_path / "bi.pt")


def test_proj_size_is_rejected():
    with pytest.raises(ValueError):
        torch.nn.GRU(4, 6, proj_size=2)  # PyTorch itself refuses; state dicts can still carry it
    sd = gru_sd()
    sd["weight_hr_l0"] = torch.zeros(2, 6)
    with pytest.raises(ImportError_, match=r"GRUs with proj_size are not supported"):
        load_model(sd)
    with pytest.raises(ImportError_, match=r"GRUs with proj_size are not supported"):
        load_model({f"rnn.{k}": v for k, v in sd.items()})


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda sd: sd.update(weight_hh_l0=torch.zeros(18, 5)),
         r"'weight_hh_l0' has shape \(18, 5\); expected \(18, 6\)\."),
        (lambda sd: sd.update(weight_ih_l0=torch.zeros(17, 4)),
         r"'weight_ih_l0' must be a \(3H, I\) tensor; got torch\.Size\(\[17, 4\]\)\."),
        (lambda sd: sd.update(bias_ih_l0=torch.zeros(17)),
         r"'bias_ih_l0' has shape \(17,\); expected \(18,\)\."),
        (lambda sd: sd.update(weight_hh_l0=[[0.0]]),
         r"'weight_hh_l0' must be a tensor; got list\."),
        (lambda sd: sd.pop("weight_hh_l0"), r"The state dict is missing 'weight_hh_l0'\."),
        (lambda sd: sd.pop("bias_hh_l0"), r"The state dict is missing 'bias_hh_l0'\."),
        (lambda sd: sd.pop("weight_ih_l0"), r"has no 'weight_ih_l0' key; expected the state dict"),
    ],
)
def test_wrong_shapes_and_missing_keys(edit, match):
    sd = gru_sd()
    edit(sd)
    with pytest.raises(ImportError_, match=match):
        load_model(sd)


def test_missing_middle_layer_is_detected():
    gru = torch.nn.GRU(4, 6, num_layers=3)
    sd = dict(gru.state_dict())
    del sd["weight_ih_l1"]
    with pytest.raises(ImportError_, match=r"missing 'weight_ih_l1' \(it has '\w+_l[12]'\)\."):
        load_model(sd)
    sd = dict(gru.state_dict())
    sd["weight_ih_l1"] = torch.zeros(18, 4)  # layer 1 takes H inputs, not I
    with pytest.raises(ImportError_, match=r"'weight_ih_l1' has shape \(18, 4\); expected"):
        load_model(sd)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_parameters(bad):
    sd = gru_sd()
    sd["bias_hh_l0"] = sd["bias_hh_l0"].clone()
    sd["bias_hh_l0"][3] = bad
    with pytest.raises(ImportError_, match=r"'bias_hh_l0' contains NaN or infinite values; "
                                           r"cannot quantize it\."):
        load_model(sd)
    gru, head = make_gru(4, 6, 1, 2)
    with torch.no_grad():
        head.weight[0, 0] = bad
    with pytest.raises(ImportError_, match=r"'head\.weight' contains NaN or infinite values"):
        from_modules(gru, head)


def test_head_errors():
    gru, head = make_gru(4, 6, 1, 2)
    with pytest.raises(ImportError_, match=r"The head weight must have shape \(O, 6\); got "):
        from_modules(gru, torch.nn.Linear(5, 2))
    with pytest.raises(ImportError_, match=r"The head must be a torch\.nn\.Linear; got ReLU\."):
        from_modules(gru, torch.nn.ReLU())
    sd = {f"gru.{k}": v for k, v in gru.state_dict().items()}
    sd["fc.weight"] = head.weight
    with pytest.raises(ImportError_, match=r"head weight 'fc\.weight' has no bias 'fc\.bias'\."):
        load_model(sd)
    sd["fc.bias"] = head.bias
    sd["out.weight"], sd["out.bias"] = head.weight, head.bias
    with pytest.raises(ImportError_, match=r"more than one head \['fc', 'out'\]"):
        load_model(sd)
    sd.pop("out.weight"), sd.pop("out.bias")
    # A 2-D tensor under any other name is not taken for the head: it is refused, named.
    sd["other.weight"] = head.weight
    with pytest.raises(ImportError_, match=r"key\(s\) deltahw does not use: \['other\.weight'\]"):
        load_model(sd)
    sd.pop("other.weight")
    sd["fc.bias"] = torch.zeros(3)
    with pytest.raises(ImportError_, match=r"'head\.bias' has shape \(3,\); expected \(2,\)\."):
        load_model(sd)


def test_unreadable_and_unsupported_sources(tmp_path):
    with pytest.raises(ImportError_, match=r"Model path .*nope\.pt does not exist\."):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a torch file")
    with pytest.raises(ImportError_, match=r"junk\.pt is not a readable PyTorch file"):
        load_model(tmp_path / "junk.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ImportError_, match=r"list\.pt holds a list; expected a state dict"):
        load_model(tmp_path / "list.pt")
    with pytest.raises(ImportError_, match=r"The given module is a LSTM module with no "
                                           r"torch\.nn\.GRU inside\."):
        load_model(torch.nn.LSTM(4, 6))
    with pytest.raises(ImportError_, match=r"no 'weight_ih_l0' key"):
        load_model({"foo": torch.zeros(2)})


def test_with_config_only_changes_what_it_may():
    gru, _ = make_gru(4, 6)
    model = from_modules(gru)
    assert model.with_config(model.config.with_thresholds(theta_x=(9,))).config.theta_x == (9,)
    with pytest.raises(ConfigError, match=r"changes act from .* only thresholds and hardware"):
        model.with_config(model.config.replace(act=(16, 9)))


# --------------------------------------------------------------------------------------------------
# Export: the documented bank layout, checked independently
def read_mem(path) -> list[int]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("// deltahw ")
    return [int(line, 16) for line in lines[1:]]


def signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


@pytest.mark.parametrize("lanes, lanes_per_bank, act_width", [(12, 4, 2), (24, 4, 4), (6, 1, 1),
                                                              (36, 6, 2), (3, 3, 1)])
def test_export_layout_matches_the_documented_mapping(tmp_path, lanes, lanes_per_bank, act_width):
    gru, head = make_gru(13, 37, 2, 5, seed=6)
    model = from_modules(gru, head, lanes=lanes, lanes_per_bank=lanes_per_bank,
                         act_width=act_width)
    manifest = export_model(model, tmp_path / "out")
    H, P, G, L = 37, lanes, lanes_per_bank, 2
    C, Ch = math.ceil(3 * H / P), math.ceil(5 / P)
    wbits, bbits = 8 * G, 16 * G
    banks_w = [read_mem(tmp_path / "out" / f"weights_bank{b}.mem") for b in range(P // G)]
    banks_b = [read_mem(tmp_path / "out" / f"biases_bank{b}.mem") for b in range(P // G)]
    depth_w = (13 + H) * C + (H + H) * C + H * Ch
    assert all(len(w) == depth_w for w in banks_w)
    mx_depth = C * L + Ch  # MX words: layers' row groups, then the head's; MCH words follow
    assert all(len(w) == mx_depth + C * L for w in banks_b)
    assert all(all(0 <= word < 1 << wbits for word in bank) for bank in banks_w)
    assert all(all(0 <= word < 1 << bbits for word in bank) for bank in banks_b)
    geo = manifest["geometry"]
    assert (geo["row_groups"], geo["head_row_groups"], geo["weight_depth"]) == (C, Ch, depth_w)
    assert geo["weight_banks"] == P // G and geo["weight_word_bits"] == wbits

    def lane_weight(addr, p):
        return signed((banks_w[p // G][addr] >> (8 * (p % G))) & 0xFF, 8)

    def lane_bias(addr, p):
        return signed((banks_b[p // G][addr] >> (16 * (p % G))) & 0xFFFF, 16)

    base = 0
    for l, prm in enumerate(model.layers):
        W = torch.cat([prm.w_x, prm.w_h], dim=1)
        for k in range(W.shape[1]):
            for g in range(C):
                for p in range(P):
                    phys = g * P + p
                    want = int(W[(phys % 3) * H + phys // 3, k]) if phys < 3 * H else 0
                    assert lane_weight(base + k * C + g, p) == want
        for g in range(C):
            for p in range(P):
                phys = g * P + p
                j, gate = phys // 3, phys % 3
                bx = [prm.b_r, prm.b_u, prm.b_cx][gate][j] if phys < 3 * H else 0
                bh = prm.b_ch[j] if phys < 3 * H and gate == 2 else 0
                assert lane_bias(C * l + g, p) == int(bx)
                assert lane_bias(mx_depth + C * l + g, p) == int(bh)
        base += W.shape[1] * C
    for k in range(H):
        for g in range(Ch):
            for p in range(P):
                o = g * P + p
                want = int(model.head_w[o, k]) if o < 5 else 0
                assert lane_weight(base + k * Ch + g, p) == want
    for g in range(Ch):
        for p in range(P):
            o = g * P + p
            assert lane_bias(C * L + g, p) == (int(model.head_b[o]) if o < 5 else 0)


def test_manifest_contents(tmp_path, checkpoint):
    import hashlib

    model = load_model(checkpoint)
    manifest = export_model(model, tmp_path / "out")
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["kind"] == "deltahw-model" and manifest["format_version"] == 1
    assert DeltaGRUConfig.from_dict(manifest["config"]) == model.config
    assert manifest["formats"]["act"] == "Q8.8" and manifest["formats"]["weight"] == "Q1.7"
    assert manifest["formats"]["acc"] == f"{model.config.acc_bits} bits, 15 fraction bits"
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(["manifest.json", *manifest["files"]])
    for name, info in manifest["files"].items():
        data = (tmp_path / "out" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
        assert len(read_mem(tmp_path / "out" / name)) == info["depth"]
    assert manifest["quantization"] == model.report
    assert manifest["meta"] == {"test": True}


# --------------------------------------------------------------------------------------------------
# Export: round trip, atomicity, tampering
@pytest.mark.parametrize("lanes, lanes_per_bank", [(24, 4), (12, 1), (6, 6)])
def test_round_trip_golden_is_bit_identical(tmp_path, checkpoint, lanes, lanes_per_bank):
    model = load_model(checkpoint, lanes=lanes, lanes_per_bank=lanes_per_bank, act_width=2)
    export_model(model, tmp_path / "out")
    back = load_exported(tmp_path / "out")
    assert_same_params(model, back)
    assert back.meta == model.meta and back.report == model.report
    x = random_inputs(3, 20, 13, seed=3, smooth=True)
    assert_same_golden(model, back, x)
    assert_same_golden(model, load_model(tmp_path / "out"), x)  # via load_model(folder)
    # Thresholds may change on an exported folder; formats may not.
    th = load_model(tmp_path / "out", theta_x=(1, 1))
    assert th.config.theta_x == (1, 1) and th.config.lanes == lanes


def test_round_trip_keeps_input_normalisation(tmp_path):
    gru, head = make_gru(5, 7, 1, 2, seed=9)
    cfg = DeltaGRUConfig(5, 7, 1, 2, theta_x=(4,), theta_h=(4,))
    save_checkpoint(tmp_path / "m.pt", cfg, gru.state_dict(), head.state_dict(),
                    input_mean=torch.arange(5.0), input_std=torch.full((5,), 2.0))
    model = load_model(tmp_path / "m.pt")
    export_model(model, tmp_path / "out")
    back = load_exported(tmp_path / "out")
    assert torch.equal(back.input_mean, model.input_mean)
    assert_same_golden(model, back, random_inputs(2, 9, 5, seed=4) * 3 + 2)


def _tree(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_failed_export_leaves_no_folder_and_keeps_the_old_one(tmp_path, monkeypatch, checkpoint):
    import deltahw.artifacts as ex

    model = load_model(checkpoint)

    def boom(*args, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ex, "build_manifest", boom)  # fails after the .mem files are written
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model, tmp_path / "new")
    assert list(tmp_path.iterdir()) == [checkpoint]  # no folder, no temporary left over
    monkeypatch.undo()

    export_model(model, tmp_path / "old")
    before = _tree(tmp_path / "old")
    monkeypatch.setattr(ex, "build_manifest", boom)
    with pytest.raises(RuntimeError):
        export_model(model.with_config(model.config.with_thresholds(theta_x=(1, 1))),
                     tmp_path / "old")
    assert _tree(tmp_path / "old") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "old"]
    monkeypatch.undo()
    # A successful export replaces the folder completely (no stale files survive).
    (tmp_path / "old" / "weights_bank99.mem").write_text("00\n")
    export_model(model, tmp_path / "old")
    assert not (tmp_path / "old" / "weights_bank99.mem").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "old"]


def test_exported_files_have_ordinary_permissions(tmp_path, checkpoint):
    export_model(load_model(checkpoint), tmp_path / "out")
    mask = 0o777 & ~_umask()
    assert (tmp_path / "out").stat().st_mode & 0o777 == mask
    assert (tmp_path / "out" / "manifest.json").stat().st_mode & 0o777 == mask & 0o666


def _umask():
    import os

    m = os.umask(0)
    os.umask(m)
    return m


@pytest.fixture
def exported(tmp_path, checkpoint):
    export_model(load_model(checkpoint), tmp_path / "out")
    return tmp_path / "out"


def _edit_line(path, n, fn):
    lines = path.read_text().splitlines()
    lines[n] = fn(lines[n])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "tamper, match",
    [
        (lambda d: _edit_line(d / "weights_bank2.mem", 5,
                              lambda s: s[:-1] + ("0" if s[-1] != "0" else "1")),
         r"weights_bank2\.mem does not match the checksum in the manifest; it was changed"),
        (lambda d: _edit_line(d / "biases_bank0.mem", 3, lambda s: s.replace(s, "")),
         r"biases_bank0\.mem has \d+ words; the layout needs \d+\."),
        (lambda d: _edit_line(d / "weights_bank0.mem", 1, lambda s: "xyz"),
         r"weights_bank0\.mem:2: 'xyz' is not a hexadecimal word\."),
        (lambda d: _edit_line(d / "weights_bank1.mem", 1, lambda s: "1" + s),
         r"weights_bank1\.mem:2: word 1\w+ does not fit in 32 bits\."),
        (lambda d: (d / "biases_bank5.mem").unlink(), r"biases_bank5\.mem is missing\."),
        (lambda d: (d / "manifest.json").unlink(),
         r"is not an exported model folder: it has no manifest\.json\."),
        (lambda d: (d / "manifest.json").write_text("{"), r"manifest\.json is not valid JSON"),
        (lambda d: (d / "manifest.json").write_text('{"kind": "other"}'),
         r"is not a deltahw model manifest \(kind=other\)\."),
        (lambda d: _manifest_edit(d, lambda m: m["config"].update(lanes=7)),
         r"has an invalid config: lanes must be a multiple of 3 x act_width"),
        (lambda d: _manifest_edit(d, lambda m: m["files"].pop("weights_bank0.mem")),
         r"does not list weights_bank0\.mem, which the config .* requires\."),
    ],
)
def test_tampered_export_is_detected(exported, tamper, match):
    tamper(exported)
    with pytest.raises(ManifestError, match=match):
        load_exported(exported)


def _manifest_edit(folder, fn):
    m = json.loads((folder / "manifest.json").read_text())
    fn(m)
    (folder / "manifest.json").write_text(json.dumps(m))


# --------------------------------------------------------------------------------------------------
# Command line: python -m deltahw.export
def test_export_cli_in_process(tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    assert export_main([str(checkpoint), "--out", str(out), "--lanes", "12", "--act-width", "2",
                        "--theta-x", "0.05"]) == 0
    text = capsys.readouterr().out
    assert "exported delta-GRU I=13 H=37 L=2, head O=5" in text and "P=12 lanes" in text
    assert "0 parameters clipped" in text and "6 .mem files" in text
    back = load_exported(out)
    assert back.config.lanes == 12 and back.config.theta_x == (13, 13)
    assert back.config.theta_h == (4, 5)  # from the checkpoint
    model = load_model(checkpoint, lanes=12, act_width=2, theta_x=(13, 13))
    assert_same_golden(model, back, random_inputs(2, 10, 13, seed=8, smooth=True))


def test_export_cli_says_what_it_chose(tmp_path, capsys):
    # A plain torch.nn.GRU gets the defaults: the CLI names them and how to change them.
    gru, _ = make_gru(5, 16, 1, seed=4)
    torch.save(gru.state_dict(), tmp_path / "sd.pt")
    assert export_main([str(tmp_path / "sd.pt"), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    cfg = load_exported(tmp_path / "out").config
    assert "thresholds (real units): theta_x=0 theta_h=0" in text and "calibrate" in text
    assert "all thresholds are 0: every delta fires" in text
    assert (f"hardware: P={cfg.lanes} MAC lanes, {cfg.lanes_per_bank} lanes per bank, "
            f"E={cfg.enc_width} encoder lanes, A={cfg.act_width} activation units") in text
    assert "--act-width" in text
    capsys.readouterr()
    assert export_main([str(tmp_path / "sd.pt"), "--out", str(tmp_path / "out2"),
                        "--theta-x", "0.25"]) == 0
    text = capsys.readouterr().out
    assert "theta_x=0.25 theta_h=0" in text and "every delta fires" not in text


def test_export_cli_plain_state_dict_with_config(tmp_path):
    gru, _ = make_gru(6, 9, 2, seed=3)
    torch.save(gru.state_dict(), tmp_path / "sd.pt")
    cfg = DeltaGRUConfig(6, 9, 2, theta_x=(3, 4), lanes=27, act_width=1, lanes_per_bank=9)
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    assert export_main([str(tmp_path / "sd.pt"), "--out", str(tmp_path / "out"), "--config",
                        str(tmp_path / "cfg.json")]) == 0
    back = load_exported(tmp_path / "out")
    assert back.config == cfg
    assert len(list((tmp_path / "out").glob("weights_bank*.mem"))) == 3


def test_export_cli_errors(tmp_path, capsys):
    gru = torch.nn.GRU(4, 6, bidirectional=True)
    torch.save(gru.state_dict(), tmp_path / "bi.pt")
    assert export_main([str(tmp_path / "bi.pt"), "--out", str(tmp_path / "out")]) == 2
    assert "error: Bidirectional GRUs are not supported" in capsys.readouterr().err
    torch.save(torch.nn.GRU(4, 6).state_dict(), tmp_path / "ok.pt")
    assert export_main([str(tmp_path / "ok.pt"), "--out", str(tmp_path / "out"), "--lanes",
                        "10"]) == 2
    assert "lanes must be a multiple of 3 x act_width = 6" in capsys.readouterr().err
    (tmp_path / "cfg.json").write_text('{"input_size": 4, "hidden_size": 6, "lanez": 3}')
    assert export_main([str(tmp_path / "ok.pt"), "--out", str(tmp_path / "out"), "--config",
                        str(tmp_path / "cfg.json")]) == 2
    assert "Unknown config key(s) ['lanez']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_cli_as_a_subprocess(tmp_path, checkpoint):
    out = tmp_path / "exp"
    proc = subprocess.run([sys.executable, "-m", "deltahw.export", str(checkpoint), "--out",
                           str(out)], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and (out / "manifest.json").is_file()
    assert_same_params(load_exported(out), load_model(checkpoint))
    proc = subprocess.run([sys.executable, "-m", "deltahw.export", str(tmp_path / "none.pt"),
                           "--out", str(tmp_path / "x")], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


# --------------------------------------------------------------------------------------------------
# The shipped example (the README's default model) stays consistent with the code
def test_shipped_example_model_and_export_agree():
    ckpt, folder = REPO / "models" / "example" / "model.pt", REPO / "models" / "example" / "export"
    model = load_model(ckpt)
    cfg = model.config
    assert (cfg.input_size, cfg.hidden_size, cfg.num_layers, cfg.output_size) == (16, 32, 1, 4)
    assert (cfg.lanes, cfg.act_width, cfg.enc_width, cfg.lanes_per_bank) == (24, 4, 4, 4)
    assert cfg.theta_x[0] > 0 and cfg.theta_h[0] > 0
    back = load_exported(folder)  # checksums, depths and the current bank layout
    assert_same_params(model, back)
    x = torch.from_numpy(np.load(REPO / "models" / "example" / "input.npy"))
    assert_same_golden(model, back, x)
