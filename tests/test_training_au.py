"""The fine-grained AU editor's training code (seed 002 + GANimation attention) on tiny data:
real aligned faces of ``../shared/data/real/images/identities`` at 32 px, a narrow network."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch

from tests import realdata
from warpcam.training.au import model as M
from warpcam.training.au.data import EST_COLUMNS, AUFaces

IDS = realdata.REAL / "images" / "identities" / "id1_aligned"
SIZE = 32


def _faces(n=8) -> torch.Tensor:
    if not IDS.exists():
        pytest.skip(f"{IDS} not present")
    out = []
    for p in sorted(IDS.glob("*.png"))[:n]:
        im = cv2.resize(cv2.imread(str(p)), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(im[..., ::-1].copy()).permute(2, 0, 1).float() / 127.5 - 1)
    return torch.stack(out)


def _net(attention=True, seed=0):
    torch.manual_seed(seed)
    return M.AUGAN(M.AUNetConfig(size=SIZE, ngf=4, ndf=4, attention=attention))


def test_au_names_are_the_estimators():
    from warpcam.realtime.au import AU_NAMES
    assert M.AU_NAMES == AU_NAMES


def test_shapes_and_ranges():
    net = _net()
    x = _faces(2)
    out = net.G(x, torch.zeros(2, 17))
    assert out["output"].shape == x.shape and out["attention"].shape == (2, 1, SIZE, SIZE)
    assert float(out["attention"].min()) >= 0 and float(out["attention"].max()) <= 1  # noqa
    assert float(out["color"].abs().max()) <= 1
    crit, aus = net.D(x)
    assert crit.shape[:2] == (2, 1) and aus.shape == (2, 17)
    with pytest.raises(ValueError):
        M.AUNetConfig(size=40)  # fine as config ...
        M.UNetMSFGenerator(M.AUNetConfig(size=40))  # ... but not a multiple of 16


class _Quadratic(torch.nn.Module):
    """A critic whose gradient is known: D(x) = c |x|^2, grad = 2 c x."""

    def forward(self, x):
        return (0.02 * (x ** 2).sum((1, 2, 3)))[:, None], None


def test_gradient_penalty_is_taken_on_interpolates():
    real, fake = _faces(4), -_faces(4).flip(-1)
    eps = torch.tensor([0.0, 0.3, 0.7, 1.0])[:, None, None, None]
    xh = eps * real + (1 - eps) * fake
    want = ((0.04 * xh.flatten(1).norm(dim=1) - 1) ** 2).mean()
    gp = M.gradient_penalty(_Quadratic(), real, fake, eps)
    assert torch.allclose(gp, want, rtol=1e-5)
    on_real = ((0.04 * real.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert abs(float(gp - on_real)) > 1e-3
    # the real critic: same value as autograd on the interpolates, and differentiable in D
    net = _net()
    gp = M.gradient_penalty(net.D, real, fake, eps)
    x = xh.clone().requires_grad_(True)
    g, = torch.autograd.grad(net.D(x)[0].sum(), x)
    assert torch.allclose(gp, ((g.flatten(1).norm(dim=1) - 1) ** 2).mean(), rtol=1e-5)
    gp.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.D.parameters())


def test_losses_move_the_right_way():
    """A few critic steps widen the real/fake gap and fit the AU head; a few generator steps
    lower its loss; reconstruction at a zero condition gets close to the input."""
    net = _net()
    x = _faces(8)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(8, 17, generator=g) * 0.6
    desired = real[torch.randperm(8, generator=g)]
    rel = desired - real
    w = M.LossWeights()
    od = torch.optim.Adam(net.D.parameters(), 1e-3, betas=(0.5, 0.999))
    og = torch.optim.Adam(net.G.parameters(), 1e-3, betas=(0.5, 0.999))
    with torch.no_grad():
        fake = net.G(x, rel)["output"]
    d0 = M.d_losses(net, x, real, fake, w)
    for _ in range(15):
        d = M.d_losses(net, x, real, fake, w)
        od.zero_grad()
        d["d"].backward()
        od.step()
    d1 = M.d_losses(net, x, real, fake, w)
    assert float(d1["d_adv"]) < float(d0["d_adv"]) - 1e-3
    assert float(d1["d_au"]) < 0.5 * float(d0["d_au"])
    g0 = M.g_losses(net, x, rel, desired, w)
    for _ in range(15):
        gl = M.g_losses(net, x, rel, desired, w)
        og.zero_grad()
        gl["g"].backward()
        og.step()
    g1 = M.g_losses(net, x, rel, desired, w)
    assert float(g1["g"]) < float(g0["g"])
    assert float(g1["rec"]) < 0.5 * float(g0["rec"])


def test_zero_condition_reproduces_the_input():
    """The reconstruction term alone teaches G(x, 0) = x (with and without attention), while a
    non-zero condition is free to change the face."""
    for attention in (True, False):
        net = _net(attention)
        x = _faces(4)
        opt = torch.optim.Adam(net.G.parameters(), 2e-3)
        zero = torch.zeros(4, 17)
        e0 = float((net.G(x, zero)["output"] - x).abs().mean())
        for _ in range(60):
            loss = (net.G(x, zero)["output"] - x).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        e1 = float((net.G(x, zero)["output"] - x).abs().mean())
        assert e1 < 0.3 * e0 and e1 < 0.12, (attention, e0, e1)


def test_colour_reconstruction_term():
    """``color_rec`` adds ``w L1(C(x, 0), x)`` to G's loss, and a few steps of it make the
    colour output itself a copy of the input (the mask is then free to open without noise)."""
    net = _net()
    x = _faces(4)
    rel = torch.zeros(4, 17)
    rel[:, M.AU_NAMES.index("AU12")] = 0.5
    desired = torch.full((4, 17), 0.2)
    torch.manual_seed(3)
    plain = M.g_losses(net, x, rel, desired, M.LossWeights())
    torch.manual_seed(3)
    withc = M.g_losses(net, x, rel, desired, M.LossWeights(color_rec=30.0))
    col = (net.G(x, torch.zeros_like(rel))["color"] - x).abs().mean()
    assert float(withc["color_rec"].detach()) == pytest.approx(float(col.detach()), rel=1e-5)
    assert float((withc["g"] - plain["g"]).detach()) == pytest.approx(
        30.0 * float(col.detach()), rel=1e-4)
    opt = torch.optim.Adam(net.G.parameters(), 3e-3)
    for _ in range(20):
        gl = M.g_losses(net, x, rel, desired, M.LossWeights(adv=0.0, au=0.0, color_rec=30.0))
        opt.zero_grad()
        gl["g"].backward()
        opt.step()
    assert float(gl["color_rec"].detach()) < 0.5 * float(col.detach())


def _tiny_dataset(root):
    """An index.csv with face_128 crops of real photos and AU columns (as the builder writes)."""
    if not IDS.exists():
        pytest.skip(f"{IDS} not present")
    (root / "faces").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for i, p in enumerate(sorted(IDS.glob("*.png"))[:12]):
        im = cv2.resize(cv2.imread(str(p)), (128, 128), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / "faces" / f"{i}.png"), im)
        r = dict(id=f"t/{i}", set="celeba", found="1", face_128=f"faces/{i}.png",
                 split="val" if i >= 10 else "train", group=f"image:{i}")
        r.update({c: f"{v:.3f}" for c, v in zip(EST_COLUMNS, rng.uniform(0, 3, 17))})
        rows.append(r)
    with open(root / "index.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    return root


def _train(data, out, *extra):
    from warpcam.training.au import train
    args = train.get_args_parser().parse_args(
        ["--data", str(data), "--output-dir", str(out), "--size", str(SIZE), "--ngf", "4",
         "--ndf", "4", "--attention", "--batch-size", "4", "--g-every", "2", "--threads", "1",
         "--epochs", "3", "--decay-epochs", "1", "--eval-every", "0", "--no-progress",
         "--log-every", "1", *extra])
    return train.main(args)


def test_data_sampling(tmp_path):
    data = AUFaces(_tiny_dataset(tmp_path / "d"), "train", SIZE)
    assert len(data) == 10 and data.images.shape == (10, 3, SIZE, SIZE)
    x, real, desired, rel = data.batch(torch.arange(4), torch.Generator().manual_seed(1))
    assert x.shape == (4, 3, SIZE, SIZE) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert float((real - data.aus[:4]).abs().max()) <= 0.02 + 1e-6   # label noise +-0.02
    assert torch.allclose(rel, desired - real)
    assert float(data.aus.max()) <= 3 / 5 + 1e-6                     # divided by 5
    # --single-au 1: every target is the face's own AUs with one AU of SINGLE_AUS moved
    from warpcam.training.au.data import SINGLE_AUS
    one = AUFaces(data.root, "train", SIZE, single_au=1.0)
    x, real, desired, rel = one.batch(torch.arange(10), torch.Generator().manual_seed(2))
    moved = (rel != 0).sum(1)
    assert moved.max() == 1 and moved.sum() >= 8, rel
    cols = {M.AU_NAMES[j] for j in torch.nonzero(rel)[:, 1].tolist()}
    assert cols <= set(SINGLE_AUS)
    j = torch.nonzero(rel)
    assert float(desired[j[:, 0], j[:, 1]].min()) >= 0  # the moved AU stays on the scale
    assert float(desired[j[:, 0], j[:, 1]].max()) <= 1
    assert float(rel.abs().max()) <= 1.0 + 1e-6 and float(rel.abs().max()) > 0.1
    # --lower-present 1: every moved AU is one the face shows (>= PRESENT), moved down
    from warpcam.training.au.data import PRESENT
    low = AUFaces(data.root, "train", SIZE, single_au=1.0, lower_present=1.0)
    x, real, desired, rel = low.batch(torch.arange(10), torch.Generator().manual_seed(2))
    j = torch.nonzero(rel)
    assert len(j) >= 8 and (rel != 0).sum(1).max() == 1
    assert bool((rel[j[:, 0], j[:, 1]] < 0).all())
    assert bool((real[j[:, 0], j[:, 1]] >= PRESENT).all())
    assert {M.AU_NAMES[k] for k in j[:, 1].tolist()} <= set(SINGLE_AUS)
    assert float(desired[j[:, 0], j[:, 1]].min()) >= 0


def test_resume_is_exact_and_export_round_trips(tmp_path):
    from warpcam.realtime.effects.au_edit import load_au_model
    from warpcam.training.au.export import export, metadata, model_from_checkpoint
    data = _tiny_dataset(tmp_path / "d")
    straight = _train(data, tmp_path / "a", "--stop-at-step", "4")
    _train(data, tmp_path / "b", "--stop-at-step", "2")
    resumed = _train(data, tmp_path / "b", "--stop-at-step", "4", "--resume", "auto")
    assert straight["steps"] == resumed["steps"] == 4
    sa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert (tmp_path / "a" / "tb" / "scalars.jsonl").stat().st_size > 0
    net, ck = model_from_checkpoint(tmp_path / "a" / "checkpoint.pt")
    out = export(net, metadata(net.cfg, ck), tmp_path / "m.pt2")
    m = load_au_model(out, device="cpu")
    assert m.size == SIZE and m.au_names == M.AU_NAMES and m.au_scale == 5.0
    x = _faces(2)
    rel = torch.zeros(2, 17)
    rel[:, M.AU_NAMES.index("AU12")] = 1.0
    with torch.no_grad():
        a_ref, r_ref = M.AUInference(net.G)((x + 1) / 2, rel)
    a, r = m(((x + 1) / 2).numpy(), rel.numpy())
    assert np.allclose(a, a_ref[:, 0].numpy(), atol=1e-5)
    assert np.allclose(r, r_ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_warp_is_a_backward_warp_in_pixels():
    x = _faces(2)
    zero = torch.zeros(2, 2, SIZE, SIZE)
    assert torch.allclose(M.warp(x, zero), x, atol=1e-6)
    shift = zero.clone()
    shift[:, 0] = 3.0  # out(u, v) = x(u + 3, v)
    out = M.warp(x, shift)
    assert torch.allclose(out[..., :-3], x[..., 3:], atol=1e-5)
    assert torch.allclose(out[..., -3:], x[..., -1:].expand_as(out[..., -3:]), atol=1e-5)


def _flow_net(seed=0, attention=True):
    torch.manual_seed(seed)
    return M.AUGAN(M.AUNetConfig(size=SIZE, ngf=4, ndf=4, attention=attention, flow=True))


def test_flow_head_is_zero_at_a_zero_condition_and_learns_an_au_displacement():
    """The flow output is exactly 0 for a zero condition (at any weights: the basis term is
    linear in the condition and the head starts at 0), bounded by flow_max; a few AU-loss steps
    against a critic that reads a displacement move the AU's basis field, and only it."""
    for attention in (True, False):
        net = _flow_net(attention=attention)
        x = _faces(4)
        with torch.no_grad():
            out = net.G(x, torch.zeros(4, 17))
        assert out["flow"].shape == (4, 2, SIZE, SIZE)
        assert float(out["flow"].abs().max()) == 0.0
        assert torch.allclose(out["warped"], x, atol=1e-6)
        if not attention:
            assert torch.allclose(out["output"], x, atol=1e-6)
    net = _flow_net()
    x = _faces(4)
    rel = torch.zeros(4, 17)
    j = M.AU_NAMES.index("AU04")
    rel[:, j] = 0.8
    opt = torch.optim.Adam([net.G.flow_basis], 5e-2)
    for _ in range(10):  # pull the upper half down: a stand-in for a brow lowerer's AU head
        fl = net.G(x, rel)["flow"]
        loss = (fl[:, 1, :SIZE // 2] + 2.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        fl = net.G(x, rel)["flow"]
        zero_fl = net.G(x, torch.zeros(4, 17))["flow"]
    assert float(fl[:, 1, :SIZE // 2].mean()) < -0.5
    assert float(fl.abs().max()) <= 0.08 * SIZE + 1e-5
    others = [k for k in range(17) if k != j]
    assert float(net.G.flow_basis[others].detach().abs().max()) == 0.0
    assert float(zero_fl.abs().max()) == 0.0


def test_flow_training_pretrains_the_au_head_and_exports_a_flow(tmp_path):
    """``--flow --pretrain-d-steps``: the critic's AU head is fitted first (its loss falls),
    the run resumes exactly, and the exported program gives the flow as a third output that
    the live loader accepts."""
    from warpcam.realtime.effects.au_edit import load_au_model
    from warpcam.training.au.export import export, metadata, model_from_checkpoint
    data = _tiny_dataset(tmp_path / "d")
    from types import SimpleNamespace
    from warpcam.training.au import train
    net = _flow_net()
    faces = AUFaces(data, "train", SIZE)
    x, real = faces.batch(torch.arange(10), torch.Generator().manual_seed(0), augment=False)[:2]
    before = float(torch.nn.functional.mse_loss(net.D(x)[1], real).detach())
    info = SimpleNamespace(rank=0, world_size=1, distributed=False, is_main=True,
                           device=torch.device("cpu"))
    args = train.get_args_parser().parse_args(
        ["--data", "x", "--pretrain-d-steps", "40", "--batch-size", "4", "--lr", "1e-3"])
    train.pretrain_au_head(net, train._Opt(net, 1e-3, 0.5), faces, info, args)
    after = float(torch.nn.functional.mse_loss(net.D(x)[1], real).detach())
    assert after < 0.5 * before, (before, after)
    flags = ("--flow", "--pretrain-d-steps", "3")
    straight = _train(data, tmp_path / "a", *flags, "--stop-at-step", "4")
    _train(data, tmp_path / "b", *flags, "--stop-at-step", "2")
    resumed = _train(data, tmp_path / "b", *flags, "--stop-at-step", "4", "--resume", "auto")
    assert straight["steps"] == resumed["steps"] == 4
    sa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    sb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert any(k.startswith("G.flow_") for k in sa)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    net, ck = model_from_checkpoint(tmp_path / "a" / "checkpoint.pt")
    with torch.no_grad():  # a visible flow for the round trip
        net.G.flow_basis[M.AU_NAMES.index("AU12"), 0] = 0.5
    out = export(net, metadata(net.cfg, ck), tmp_path / "m.pt2")
    m = load_au_model(out, device="cpu")
    assert m.flow
    rel = torch.zeros(2, 17)
    rel[:, M.AU_NAMES.index("AU12")] = 1.0
    xi = (_faces(2) + 1) / 2
    with torch.no_grad():
        a_ref, r_ref, f_ref = M.AUInference(net.G)(xi, rel)
    a, r, f = m(xi.numpy(), rel.numpy())
    assert float(f_ref.abs().max()) > 1.0
    assert np.allclose(a, a_ref[:, 0].numpy(), atol=1e-5)
    assert np.allclose(r, r_ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)
    assert np.allclose(f, f_ref.permute(0, 2, 3, 1).numpy(), atol=1e-4)
