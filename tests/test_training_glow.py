"""Glow (seed 004): invertibility, the exact log-determinant, actnorm's data-dependent init, the
likelihood training, resume, export and the bundled model, on tiny configs and real faces."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch

from tests.realdata import REAL
from warpcam.training.glow import model as G

IDS = REAL / "images" / "identities"


def _faces(size: int, n: int = 16) -> torch.Tensor:
    """``(n, 3, size, size)`` RGB [0, 1]: the seed's aligned photos, resized."""
    files = sorted((IDS / "id1_aligned").glob("*.png")) + sorted((IDS / "id2_aligned").glob("*.png"))
    out = []
    for p in files[:n]:
        img = cv2.resize(cv2.imread(str(p)), (size, size), interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(img[..., ::-1].transpose(2, 0, 1).copy()).float() / 255)
    return torch.stack(out)


def _perturbed(cfg: G.GlowConfig, x: torch.Tensor, seed: int = 0) -> G.Glow:
    """A Glow initialised on ``x`` with every parameter moved off its (identity) init."""
    torch.manual_seed(seed)
    net = G.Glow(cfg)
    with torch.no_grad():
        net.train()
        net.nll_bpd(x)
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return net.eval()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_decode_inverts_encode():
    x = _faces(16, 8)
    net = _perturbed(G.CONFIGS["tiny"], x)
    with torch.no_grad():
        eps = net.encode(x)
        assert [tuple(e.shape[1:]) for e in eps] == net.cfg.latent_shapes()
        assert net.flatten(eps).shape == (8, 3 * 16 * 16)
        back = net.decode_flat(net.encode_flat(x))
    assert (back - x).abs().max().item() < 1e-4
    z = torch.randn(2, net.cfg.dims)
    with torch.no_grad():  # and the other way round
        assert (net.encode_flat(net.decode_flat(z)) - z).abs().max().item() < 1e-3


def test_logdet_matches_brute_force_jacobian():
    cfg = G.GlowConfig(size=4, levels=2, depth=2, hidden=8)  # D = 48
    x = _faces(4, 4).double()
    net = _perturbed(cfg, x.float()).double()
    x1 = x[:1] - 0.5

    def f(v):
        return torch.cat([z.flatten() for z in net.flow(v)[0]])

    jac = torch.autograd.functional.jacobian(f, x1).reshape(cfg.dims, cfg.dims)
    _, logdet = net.flow(x1)
    sign, brute = torch.linalg.slogdet(jac)
    assert sign.item() != 0
    assert abs(logdet.item() - brute.item()) < 1e-6 * max(1.0, abs(brute.item()))
    assert abs(brute.item()) > 1.0  # a non-trivial map (not a volume-preserving identity)


def test_actnorm_data_dependent_init_and_no_reinit():
    torch.manual_seed(0)
    x = torch.randn(64, 5, 6, 6) * torch.tensor([0.5, 1, 2, 3, 4]).view(1, 5, 1, 1) + 3.0
    an = G.ActNorm(5).train()
    y, _ = an(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(5), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(5), atol=1e-4)
    assert int(an.initialized) == 1
    fresh = G.ActNorm(5).train()
    fresh.load_state_dict(an.state_dict())  # a resumed / exported model
    before = fresh.logs.detach().clone()
    fresh(torch.randn(8, 5, 6, 6) * 10)
    assert torch.equal(fresh.logs.detach(), before)


def test_bpd_decreases_over_steps():
    x = _faces(16, 16)
    torch.manual_seed(0)
    net = G.Glow(G.CONFIGS["tiny"]).train()
    with torch.no_grad():
        net.nll_bpd(x)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    first = None
    for _ in range(25):
        loss = net(x).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        torch.manual_seed(1)
        last = net(x).mean().item()
    assert 0 < last < first - 0.2, (first, last)
    assert first < 5.5  # at most n_bits + a little at the identity init


def _tiny_dataset(root):
    """A built-data-set layout (index.csv + face_64 PNGs) of the seed's aligned photos."""
    rows = []
    for i, p in enumerate(sorted((IDS / "id1_aligned").glob("*.png"))[:12]):
        rel = f"celeba/face_64/{i}.png"
        (root / "celeba" / "face_64").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), cv2.resize(cv2.imread(str(p)), (64, 64),
                                                interpolation=cv2.INTER_AREA))
        rows.append(dict(id=f"celeba/{i}", set="celeba", split="val" if i >= 8 else "train",
                         found="1", face_64=rel))
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_resume_and_export_round_trip(tmp_path):
    from warpcam.realtime.runtime import load_model
    from warpcam.training.glow import export as E
    from warpcam.training.glow import train as T

    _tiny_dataset(tmp_path / "data")
    common = ["--config", "tiny", "--data", str(tmp_path / "data"), "--batch-size", "4",
              "--init-batch", "8", "--val-limit", "4", "--no-progress", "--threads", "1",
              "--log-every", "1000", "--warmup", "2"]
    T.main(T.parse_args(common + ["--output-dir", str(tmp_path / "a"), "--stop-at-step", "6"]))
    T.main(T.parse_args(common + ["--output-dir", str(tmp_path / "b"), "--stop-at-step", "3"]))
    s = T.main(T.parse_args(common + ["--output-dir", str(tmp_path / "b"), "--stop-at-step", "6",
                                      "--resume", "auto"]))
    assert s["steps"] == 6
    a, _ = E.load(tmp_path / "a" / "checkpoint.pt")
    b, ck = E.load(tmp_path / "b" / "checkpoint.pt")
    for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(pa, pb, atol=1e-6), k
    assert all(m._ready for m in b.modules() if isinstance(m, G.ActNorm))
    out = E.export(b, E.metadata(b.cfg, ck, "test"), tmp_path / "g.pt2")
    m = load_model(out, kind=E.KIND, device="cpu")
    x = _faces(16, 3)
    with torch.no_grad():
        z = b.encode_flat(x)
        zz = z + 0.3 * torch.randn_like(z)
        want = b.decode_flat(zz).clamp(0, 1)
    z_x, x_z, bpd = m(x.numpy(), zz.numpy())
    assert np.abs(z_x - z.numpy()).max() < 1e-4
    assert np.abs(x_z - want.numpy()).max() < 1e-5
    assert bpd.shape == (3,) and np.isfinite(bpd).all()
    assert m.meta.extra["latent_shapes"] == [list(s) for s in b.cfg.latent_shapes()]


def test_bundled_model_round_trip_on_a_real_face():
    from warpcam.training.glow.transfer import GlowCodec

    codec = GlowCodec()  # models/glow_faces.pt2 through the runtime
    assert codec.size == 64 and codec.model.kind == "warpcam.glow.faces"
    x = _faces(64, 2).numpy()
    z = codec.encode(x)
    assert z.shape == (2, 3 * 64 * 64)
    assert np.abs(codec.decode(z) - x).max() < 1e-4
    noise = np.random.default_rng(0).random(x.shape).astype(np.float32)
    bpd_face, bpd_noise = codec.bpd(x), codec.bpd(noise)
    assert (bpd_face < 6.0).all() and (bpd_face + 2.0 < bpd_noise).all(), (bpd_face, bpd_noise)


def test_transfer_alphas_and_one_line_errors(tmp_path):
    from warpcam.training.glow import transfer as TR

    al = TR.parse_alphas("0.3:0.5:0.02")
    assert len(al) == 11 and al[0] == 0.3 and al[-1] == 0.5
    assert TR.parse_alphas("0.4") == [0.4]
    with pytest.raises(TR.TransferError):
        TR.parse_alphas("0.5:0.3:0.1")
    z = np.zeros(4, np.float32)
    lat = TR.transfer_latents(z + 1, z + 3, z + 2, [0.0, 0.5])
    assert np.allclose(lat, [[1] * 4, [1.5] * 4])
    with pytest.raises(SystemExit, match="glow transfer: .*not a folder"):
        TR.main(["--target-dir", str(tmp_path / "nope"), "--source-dir", str(IDS / "expressions"),
                 "--source-image", str(IDS / "expressions" / "selena_expression1_aligned.png"),
                 "--out", str(tmp_path / "s.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no images"):
        TR.main(["--target-dir", str(tmp_path / "empty"), "--source-dir", str(IDS / "expressions"),
                 "--source-image", str(IDS / "expressions" / "selena_expression1_aligned.png"),
                 "--out", str(tmp_path / "s.png")])


def test_transfer_no_face_is_a_one_line_error(tmp_path):
    from warpcam.training.glow import transfer as TR

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    (tmp_path / "few").mkdir()
    for p in sorted((IDS / "id1_aligned").glob("*.png"))[:2]:
        cv2.imwrite(str(tmp_path / "few" / p.name), cv2.imread(str(p)))
    with TR.Aligner(64) as al:
        face = al.align_file(IDS / "id1_aligned" / "emma1_aligned.png")
        assert face.shape == (64, 64, 3)
        with pytest.raises(TR.TransferError, match="blank.png: no face found"):
            TR.run_transfer(None, al, tmp_path / "few", tmp_path / "few", blank, [0.4])
