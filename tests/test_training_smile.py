"""DeepWarp smile training (seed 000) on tiny data: each loss falls after one step, the
gradient routing of TGAN.lua, the seed's options, resume and export round trips."""
import csv

import cv2
import numpy as np
import pytest
import torch

from warpcam.training.smile import model as M
from warpcam.training.smile.data import N_ANCHORS, SmileFaces, row_anchors

TINY = M.SmileNetConfig(t_widths=(4, 6, 6, 6), d_widths=(4, 8, 8, 8, 8, 8))


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 64, 64, generator=g) * 0.3 + 0.3
    x[:, :, 40:50, 20:44] += 0.3 * torch.rand(n, 1, 1, 1, generator=g)  # a "mouth"
    y = torch.tensor([0.0, 1.0] * (n // 2))
    return x.clamp(0, 1), y


def _params(mod):
    return [p for p in mod.parameters() if p.requires_grad]


@pytest.mark.parametrize("term", M.LOSS_NAMES)
def test_one_step_lowers_each_loss(term):
    torch.manual_seed(0)
    net = M.SmileGAN(TINY)
    x, y = _batch()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    torch.manual_seed(1)
    before = M.losses(net, x, y)
    grads = M.routed_grads(net, before, only=(term,))
    for p, g in grads.items():
        p.grad = g
    opt.step()
    torch.manual_seed(1)  # same dropout masks
    after = M.losses(net, x, y)
    assert after[term].item() < before[term].item()


def test_routing_of_the_gradients():
    torch.manual_seed(0)
    net = M.SmileGAN(TINY)
    x, y = _batch()
    t_params, c_params = _params(net.T), _params(net.C)
    terms = M.losses(net, x, y)
    # the D loss does depend on T through the fakes: only the routing keeps it away
    raw = torch.autograd.grad(terms["d"], t_params, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in raw)
    got = M.routed_grads(net, terms, only=("d", "a_real"))
    assert not any(p in got for p in t_params), "T must get nothing from D's loss or A-on-real"
    got = M.routed_grads(net, M.losses(net, x, y), only=("g", "a_fake"))
    assert not any(p in got for p in c_params), "D/A must get nothing from the G loss"
    # the full routing equals the two objectives differentiated separately
    torch.manual_seed(3)
    terms = M.losses(net, x, y)
    full = M.routed_grads(net, terms)
    torch.manual_seed(3)
    terms = M.losses(net, x, y)
    gt = torch.autograd.grad(terms["g"] + terms["a_fake"], t_params, retain_graph=True)
    gc = torch.autograd.grad(terms["d"] + terms["a_real"], c_params)
    for p, g in zip(t_params + c_params, list(gt) + list(gc)):
        torch.testing.assert_close(full[p], g)
    # A-on-real reaches the encoder and A's head, not D's head; D's loss not A's head
    a_only = M.routed_grads(net, M.losses(net, x, y), only=("a_real",))
    assert a_only[net.C.d_head.weight].abs().sum() == 0
    assert a_only[net.C.a_head.weight].abs().sum() > 0
    assert a_only[net.C.encoder.convs[0].weight].abs().sum() > 0
    d_only = M.routed_grads(net, M.losses(net, x, y), only=("d",))
    assert d_only[net.C.a_head.weight].abs().sum() == 0
    # the seed's optional LCM L1 / flow TV penalties reach T only
    reg = M.routed_grads(net, M.losses(net, x, y), only=("lcm_l1", "flow_tv"), lcm_l1=1.0,
                         flow_tv=1.0)
    assert reg and not any(p in reg for p in c_params)
    assert reg[net.T.s64.top.weight].abs().sum() > 0


def test_transformer_shapes_flow_bound_and_palette():
    torch.manual_seed(0)
    t = M.Transformer(TINY).eval()
    x, _ = _batch(4)
    out = t(x, torch.tensor([[1.0], [-1.0], [1.0], [-1.0]]))
    assert out["flow"].shape == (4, 2, 64, 64) and out["lcm_weight"].shape == (4, 1, 64, 64)
    assert out["flow"].abs().max() <= 0.1 * 63 / 2 + 1e-5  # the recipe's tanh * 0.1
    assert ((out["palette"] > 0) & (out["palette"] < 1)).all()
    # the delta embedding is concatenated in every block of every scale
    for s in (t.s16, t.s32, t.s64):
        for b in s.blocks:
            assert b.conv.in_channels - TINY.delta_vec in (3, 11, s.blocks[0].conv.out_channels,
                                                           b.conv.in_channels - 4)
    assert [b.conv.kernel_size[0] for b in t.s64.blocks] == [5, 3, 3, 1]
    # the two deltas give different warps
    assert (out["flow"][0] - out["flow"][1]).abs().max() > 0


def test_warp_convention():
    img = torch.arange(64.0).repeat(64, 1)[None, None].repeat(1, 3, 1, 1)
    flow = torch.zeros(1, 2, 64, 64)
    flow[:, 0] = 2.0
    out = M.warp(img, flow)
    assert torch.allclose(out[0, 0, 10, 10], torch.tensor(12.0))


@pytest.mark.parametrize("anchors,location", [(True, False), (False, True), (True, True)])
def test_seed_options(anchors, location):
    torch.manual_seed(0)
    cfg = M.SmileNetConfig(t_widths=(4, 6, 6, 6), d_widths=(4, 8, 8, 8, 8, 8),
                           anchors=N_ANCHORS if anchors else 0, location=location)
    net = M.SmileGAN(cfg)
    x, y = _batch()
    a = torch.tensor([[21.9, 23.8], [41.1, 23.8], [31.5, 44.8], [31.4, 36.9]]).repeat(8, 1, 1)
    a = a + torch.randn(8, 4, 2)
    extra = 2 * cfg.anchors + 2 * location
    assert net.T.s16.blocks[0].conv.in_channels == 3 + extra + 4
    if anchors:
        with pytest.raises(ValueError):
            net.T(x, torch.ones(8, 1))
    terms = M.losses(net, x, y, a if anchors else None)
    g = M.routed_grads(net, terms)
    w = net.T.s16.blocks[0].conv.weight
    assert g[w][:, 3:3 + extra].abs().sum() > 0  # the extra channels are used
    m = M.anchor_maps(a, 64)
    assert m.shape == (8, 8, 64, 64)
    assert torch.allclose(m[0, 0, 0, 0], (a[0, 0, 0] - 0.0) / 63)


def _tiny_dataset(root, n=24):
    (root / "f" / "face_64").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        p = f"f/face_64/{i}.png"
        cv2.imwrite(str(root / p), img)
        rows.append(dict(id=f"f/{i}", set="f", split="val" if i >= n - 6 else "train", found=1,
                         face_64=p, smile=i % 2, eye_r_x=30 + rng.random(), eye_r_y=40,
                         eye_l_x=60, eye_l_y=40 + rng.random(), mouth_x=45, mouth_y=75,
                         nose_x=45, nose_y=60))
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_dataset_and_anchors(tmp_path):
    root = _tiny_dataset(tmp_path)
    d = SmileFaces(root, "train")
    assert len(d) == 18 and d.images.dtype == torch.uint8 and set(d.labels.tolist()) == {0, 1}
    from warpcam.training.data import align
    a = row_anchors(dict(eye_r_x=30, eye_r_y=40, eye_l_x=60, eye_l_y=40, mouth_x=45,
                         mouth_y=73, nose_x=45, nose_y=60))
    np.testing.assert_allclose(a[:2], align.template_points(64)[:2], atol=0.6)
    x, y, an = d.batch(torch.arange(2), flip=torch.tensor([True, False]))
    x0, _, an0 = d.batch(torch.arange(2))
    assert torch.equal(x[0], x0[0].flip(-1)) and torch.equal(x[1], x0[1])
    assert torch.allclose(an[0, 0, 0], 63 - an0[0, 1, 0])


def _args(root, out, *extra):
    from warpcam.training.smile.train import get_args_parser
    return get_args_parser().parse_args(
        ["--data", str(root), "--output-dir", str(out), "--t-widths", "4", "6", "6", "6",
         "--d-width-mult", "0.0625", "--batch-size", "6", "--no-progress", "--threads", "1",
         "--eval-every", "0", "--log-every", "1", "--epochs", "3", *extra])


def test_resume_is_exact_and_export_round_trip(tmp_path):
    from warpcam.training.smile import export as E
    from warpcam.training.smile.train import main
    root = _tiny_dataset(tmp_path / "data")
    a = main(_args(root, tmp_path / "a", "--stop-at-step", "4"))
    assert a["steps"] == 4 and a["val"][-1]["n"] == 6
    main(_args(root, tmp_path / "b", "--stop-at-step", "2"))
    main(_args(root, tmp_path / "b", "--stop-at-step", "4", "--resume", "auto"))
    sa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=k)
    # export: the program gives the module's output; the runtime loads it with its kind
    net, ckpt = E.model_from_checkpoint(tmp_path / "a" / "checkpoint.pt")
    out = E.export(net, E.metadata(net.cfg, ckpt), tmp_path / "m.pt2")
    from warpcam.core.artifact import read_meta
    meta = read_meta(out)
    assert meta.kind == E.MODEL_KIND and meta.roi == "face" and (meta.crop_h, meta.crop_w) == (
        64, 64)
    assert (tmp_path / "m.json").exists()
    from warpcam.realtime.effects.smile_model import load_smile_model
    m = load_smile_model(out, device="cpu", threads=None)
    x, _ = _batch(3)
    d = np.array([1.0, -1.0, 1.0], np.float32)
    flow, w, pal = m(x.numpy(), d)
    with torch.no_grad():
        rf, rw, rp = M.SmileInference(net.T.eval())(x, torch.from_numpy(d)[:, None])
    np.testing.assert_allclose(flow, rf.permute(0, 2, 3, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(w, rw[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(pal, rp.numpy(), atol=1e-6)
    from warpcam.realtime.runtime import ModelError, load_model
    with pytest.raises(ModelError):
        load_model(out, kind="warpcam.gaze.deepwarp")


def test_lower_face_option_confines_the_edit():
    torch.manual_seed(0)
    cfg = M.SmileNetConfig(t_widths=(4, 6, 6, 6), d_widths=(4, 8, 8, 8, 8, 8), lower_face=0.45)
    t = M.Transformer(cfg).eval()
    x, _ = _batch(2)
    flow, w, _ = t.heads(x, torch.ones(2, 1))
    top = int(0.45 * 64)
    assert flow[:, :, :top].abs().max() == 0 and w[:, :, :top].max() == 0
    assert flow[:, :, 40:].abs().max() > 0 and w[:, :, 40:].min() > 0
    # the mask is a non-persistent buffer: checkpoints of either setting load
    M.Transformer(M.SmileNetConfig(t_widths=(4, 6, 6, 6))).load_state_dict(t.state_dict())


def test_hint_option_channels_gradients_and_flip(tmp_path):
    """Beyond the seed: the landmark smile's flow as a 2-channel hint at every scale; the data
    set mirrors it with the image (x component negated)."""
    torch.manual_seed(0)
    cfg = M.SmileNetConfig(t_widths=(4, 6, 6, 6), d_widths=(4, 8, 8, 8, 8, 8), hint=True)
    net = M.SmileGAN(cfg)
    for s, base in ((net.T.s16, 3), (net.T.s32, 11), (net.T.s64, 11)):
        assert s.blocks[0].conv.in_channels == base + 2 + cfg.delta_vec
    x, y = _batch()
    with pytest.raises(ValueError, match="hint"):
        net.T(x, torch.ones(8, 1))
    h = torch.zeros(8, 2, 64, 64)
    h[:, 1, 40:52, 16:48] = 2.0
    g = M.routed_grads(net, M.losses(net, x, y, hint=h))
    for s, base in ((net.T.s16, 3), (net.T.s64, 11)):
        assert g[s.blocks[0].conv.weight][:, base:base + 2].abs().sum() > 0  # the hint is used
    a = net.T(x, torch.ones(8, 1), hint=h)["flow"]
    b = net.T(x, torch.ones(8, 1), hint=torch.zeros_like(h))["flow"]
    assert (a - b).abs().max() > 0
    # the data set: hints by face id, mirrored with the image
    root = _tiny_dataset(tmp_path)
    rows = SmileFaces(root, None)
    hint = np.zeros((len(rows), 2, 64, 64), np.float16)
    hint[:, 0, 30:40, 10:20] = 1.5
    hint[:, 1, 30:40, 10:20] = -0.5
    np.savez(root / "smile_hints.npz", ids=np.array(rows.ids[::-1]), hint=hint[::-1])
    d = SmileFaces(root, "train", hints=True)
    x, y, an, hh = d.batch(torch.arange(2), flip=torch.tensor([True, False]), with_hint=True)
    assert hh.shape == (2, 2, 64, 64)
    assert hh[1, 0, 35, 15] == 1.5 and hh[1, 1, 35, 15] == -0.5
    assert hh[0, 0, 35, 63 - 15] == -1.5 and hh[0, 1, 35, 63 - 15] == -0.5
    assert hh[0, :, 35, 15].abs().sum() == 0
    np.savez(root / "smile_hints.npz", ids=np.array(rows.ids[:3]), hint=hint[:3])
    with pytest.raises(SystemExit, match="no hint"):
        SmileFaces(root, "train", hints=True)


def test_attr_margin_and_reconstruction_term():
    """A-on-fake with a margin is the seed's BCE while A is unsure, and gives T nothing from
    a face A already puts beyond the margin; ``rec_l1`` is the mean absolute change and
    reaches T only."""
    torch.manual_seed(0)
    net = M.SmileGAN(TINY)
    x, y = _batch()
    torch.manual_seed(1)
    plain = M.losses(net, x, y)
    torch.manual_seed(1)
    big = M.losses(net, x, y, attr_margin=100.0)
    torch.testing.assert_close(plain["a_fake"], big["a_fake"])
    torch.manual_seed(1)
    zero = M.losses(net, x, y, attr_margin=-100.0)  # every face beyond the margin
    gz = M.routed_grads(net, zero, only=("a_fake",))
    assert all(g.abs().sum() == 0 for g in gz.values())
    torch.testing.assert_close(plain["rec_l1"], (plain["fake"] - x).abs().mean())
    g = M.routed_grads(net, plain, only=("rec_l1",), rec_l1=1.0)
    assert g and not any(p in g for p in _params(net.C))
    assert g[net.T.s64.top.weight].abs().sum() > 0


def test_hint_model_export_and_init_from_a_program(tmp_path):
    """A hint model's program takes (img, delta, hint) and equals the module; a hint model
    started from a hint-free program (``--init-t``) gives that program's output (new hint
    inputs at 0)."""
    from warpcam.training.smile import export as E
    from warpcam.training.smile.train import init_t_from_program
    from warpcam.realtime.effects.smile_model import load_smile_model
    torch.manual_seed(0)
    plain = M.SmileGAN(M.SmileNetConfig(t_widths=(4, 6, 6, 6), d_widths=(4, 8, 8, 8, 8, 8)))
    for p in plain.T.parameters():  # not the init (top convs start near 0)
        p.data.add_(0.05 * torch.randn_like(p))
    ck = dict(step=1, epoch=0, extra={}, args={})
    p0 = E.export(plain, E.metadata(plain.cfg, ck), tmp_path / "plain.pt2")
    hcfg = M.SmileNetConfig(t_widths=(4, 6, 6, 6), d_widths=(4, 8, 8, 8, 8, 8), hint=True)
    hnet = M.SmileGAN(hcfg)
    assert init_t_from_program(hnet.T, p0) == len(plain.T.state_dict())
    x, _ = _batch(3)
    d = torch.tensor([[1.0], [-1.0], [1.0]])
    h = torch.randn(3, 2, 64, 64)
    with torch.no_grad():
        ref = plain.T.eval().heads(x, d)
        got = hnet.T.eval().heads(x, d, hint=h)
    for r, o in zip(ref, got):
        torch.testing.assert_close(r, o)
    for p in hnet.T.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    out = E.export(hnet, E.metadata(hcfg, ck), tmp_path / "hint.pt2")
    m = load_smile_model(out, device="cpu", threads=None)
    assert m.hint and json_meta(tmp_path / "hint.json")["config"]["hint"] is True
    flow, w, pal = m(x.numpy(), d[:, 0].numpy(), None, h.permute(0, 2, 3, 1).numpy())
    with torch.no_grad():
        rf, rw, rp = hnet.T.heads(x, d, hint=h)
    np.testing.assert_allclose(flow, rf.permute(0, 2, 3, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(w, rw[:, 0].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="hint"):
        m(x.numpy(), d[:, 0].numpy())
    from warpcam.realtime.gaze_model import DEFAULT_MODEL as GAZE
    with pytest.raises(SystemExit, match="not a smile model"):
        init_t_from_program(hnet.T, GAZE)


def json_meta(p):
    import json
    return json.loads(p.read_text())


def test_builder_landmarks_and_the_hints_file(tmp_path, astronaut, astronaut_face):
    """``build --landmarks`` keeps every face's 478 landmarks (input pixels) beside the crops;
    ``benchmarks.smile_model --write-hints`` turns them into the hint of the face's training
    delta, the same field the live effect computes from the tracked face."""
    from benchmarks.smile_model import write_hints
    from warpcam.realtime.effects.smile_model import aligned_affine, landmark_hint
    from warpcam.training.data import build
    from warpcam.training.data.index import read_index
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), astronaut)
    with open(src / "labels.csv", "w") as f:
        f.write("image,smile\na.png,1\n")
    out = tmp_path / "data"
    build.build(out, [("s", src)], [], sizes=(64,), mouth=False, estimator=False, val=0,
                test=0, progress=False, landmarks=True)
    (row,) = read_index(out)
    lms = np.load(out / row["landmarks"], allow_pickle=False)
    assert lms.shape == (478, 2) and lms.dtype == np.float32
    np.testing.assert_allclose(lms, astronaut_face.landmarks, atol=3.0)  # another tracking run
    from warpcam.training.data import align
    fp = align.face_points(lms)
    np.testing.assert_allclose([float(row["mouth_x"]), float(row["mouth_y"])], fp[2], atol=0.006)  # CSV: 2 decimals
    write_hints(out)
    d = SmileFaces(out, None, hints=True)
    h = d.hints[0].float().permute(1, 2, 0).numpy()
    ref = landmark_hint(lms, aligned_affine(lms), -1.0)  # smiling: the hint of delta -1
    np.testing.assert_allclose(h, ref, atol=2e-3)  # float16
    assert h[..., 1].min() < -0.3


def test_hint_model_without_its_hint_is_the_zero_hint():
    from warpcam.training.smile.export import without_hint
    torch.manual_seed(0)
    net = M.SmileGAN(M.SmileNetConfig(t_widths=(4, 6, 6, 6), d_widths=(4, 8, 8, 8, 8, 8),
                                      hint=True)).eval()
    for p in net.T.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    plain = without_hint(net)
    assert not plain.cfg.hint and plain.T.s16.blocks[0].conv.in_channels == 3 + 4
    x, _ = _batch(2)
    d = torch.tensor([[1.0], [-1.0]])
    with torch.no_grad():
        for r, o in zip(net.T.heads(x, d, hint=torch.zeros(2, 2, 64, 64)), plain.T.heads(x, d)):
            torch.testing.assert_close(r, o)


def test_flow_blur_smooths_flow_and_lcm():
    """``flow_blur``: the flow and LCM weight are the unsmoothed ones through a box filter
    applied twice (replicated border), so a per-pixel pattern cannot survive."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    raw = M.Transformer(M.SmileNetConfig(t_widths=(4, 6, 6, 6))).eval()
    for p in raw.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    sm = M.Transformer(M.SmileNetConfig(t_widths=(4, 6, 6, 6), flow_blur=5)).eval()
    sm.load_state_dict(raw.state_dict())
    x, _ = _batch(2)
    d = torch.ones(2, 1)
    with torch.no_grad():
        f0, w0, _ = raw.heads(x, d)
        f1, w1, _ = sm.heads(x, d)

    def box(t):
        for _ in range(2):
            t = F.avg_pool2d(F.pad(t, (2, 2, 2, 2), mode="replicate"), 5, 1)
        return t
    torch.testing.assert_close(f1, box(f0))
    torch.testing.assert_close(w1, box(w0))

    def tv(f):
        return (f[..., 1:] - f[..., :-1]).abs().mean() + (f[..., 1:, :] - f[..., :-1, :]).abs().mean()
    assert tv(f1) < 0.5 * tv(f0)


def test_hint_prior_term():
    """``hint_l1`` is the mean |flow - hint| (the flow itself without a hint) and reaches T
    only."""
    torch.manual_seed(0)
    cfg = M.SmileNetConfig(t_widths=(4, 6, 6, 6), d_widths=(4, 8, 8, 8, 8, 8), hint=True)
    net = M.SmileGAN(cfg)
    x, y = _batch()
    h = torch.zeros(8, 2, 64, 64)
    h[:, 1, 40:52, 16:48] = 2.0
    torch.manual_seed(1)
    t = M.losses(net, x, y, hint=h)
    torch.manual_seed(1)
    flow = net.T(x, (1 - 2 * y)[:, None], hint=h)["flow"]
    torch.testing.assert_close(t["hint_l1"], (flow - h).abs().mean())
    g = M.routed_grads(net, t, only=("hint_l1",), hint_l1=1.0)
    assert g and not any(p in g for p in _params(net.C))
    assert g[net.T.s64.top.weight].abs().sum() > 0
    t0 = M.losses(M.SmileGAN(TINY), x, y)
    assert t0["hint_l1"] > 0 and torch.isclose(t0["hint_l1"], t0["flow_l1"])


def test_resave_sets_the_effect_defaults_and_keeps_the_program(tmp_path):
    from warpcam.realtime.effects.smile_model import load_smile_model
    from warpcam.training.common.export import ExportError
    from warpcam.training.smile import export as E
    torch.manual_seed(0)
    net = M.SmileGAN(TINY)
    ck = dict(step=3, epoch=0, extra={}, args={})
    p0 = E.export(net, E.metadata(net.cfg, ck, "first"), tmp_path / "a.pt2")
    p1 = E.resave(p0, tmp_path / "b.pt2", 1.0, 0.5, "re-saved")
    m0 = load_smile_model(p0, device="cpu", threads=None)
    m1 = load_smile_model(p1, device="cpu", threads=None)
    assert m0.meta["landmark_mix"] == 0.0 and m0.meta["network_gain"] == 1.0
    assert m1.meta["landmark_mix"] == 1.0 and m1.meta["network_gain"] == 0.5
    assert m1.meta["notes"] == "first re-saved" and m1.meta["steps"] == 3
    x, _ = _batch(2)
    for r, o in zip(m0(x.numpy(), np.ones(2)), m1(x.numpy(), np.ones(2))):
        np.testing.assert_array_equal(r, o)
    from warpcam.realtime.gaze_model import DEFAULT_MODEL as GAZE
    with pytest.raises(ExportError, match="not a smile model"):
        E.resave(GAZE, tmp_path / "c.pt2", 1.0, 0.5)
