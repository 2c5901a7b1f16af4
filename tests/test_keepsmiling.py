"""KeepSmiling training (seed 003) on tiny data: each set-up's losses move the right way over a
few steps, the seed's bugs stay fixed (per-class means of the translation, logits), SplitGAN's
translation at strength 0 is its reconstruction, the MTFL loader, resume and export round
trips. Real crops: the SMILEsmileD subset in ../shared/data/real/images/smiles."""
import csv
import json

import cv2
import numpy as np
import pytest
import torch

from tests.realdata import REAL
from warpcam.training.keepsmiling import model as M
from warpcam.training.keepsmiling.data import MouthCrops, MTFLMouths, read_mtfl

SMILES = REAL / "images" / "smiles"
TINY = dict(g_mult=0.125, d_mult=0.125, latent=16)


@pytest.fixture(scope="module")
def crops():
    """16 real 64 x 64 grey crops (8 smiling, 8 not), ``(x [0, 1] (16, 3, 64, 64), y)``."""
    lab = SMILES / "labels_subset.csv"
    if not lab.exists():
        pytest.skip(f"{lab} not present (../shared/data/real is evaluation material)")
    rows = list(csv.DictReader(open(lab)))
    pick = [r for r in rows if r["label"] == "smile"][:8] + \
        [r for r in rows if r["label"] != "smile"][:8]
    imgs = [cv2.imread(str(SMILES / r["path"]), cv2.IMREAD_COLOR) for r in pick]
    x = torch.from_numpy(np.stack([i[..., ::-1].transpose(2, 0, 1) for i in imgs]).copy())
    return x.float() / 255.0, torch.tensor([1.0] * 8 + [0.0] * 8)


def _net(setup, seed=0):
    torch.manual_seed(seed)
    return M.KeepSmiling(M.KSConfig(setup=setup, **TINY))


def _steps(params, loss_fn, n=6, lr=2e-3):
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
    vals = []
    for i in range(n):
        torch.manual_seed(100 + i)
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        vals.append(loss.item())
    torch.manual_seed(100)
    return vals[0], loss_fn().item()


@pytest.mark.parametrize("setup", ["simple", "complex", "split"])
def test_critic_steps_lower_the_critic_loss(setup, crops):
    net = _net(setup)
    x, y = M.to_net(crops[0]), crops[1]
    t = 1.0 - y
    fn = {"simple": lambda: M.simple_d_loss(net, x[:8])["d"],
          "complex": lambda: M.complex_d_loss(net, x, y, t)["d"],
          "split": lambda: M.split_d_loss(net, x)["d"]}[setup]
    first, last = _steps(net.D.parameters(), fn)
    assert last < first


@pytest.mark.parametrize("setup", ["simple", "complex", "split"])
def test_generator_steps_lower_the_generator_loss(setup, crops):
    net = _net(setup)
    x, y = M.to_net(crops[0]), crops[1]
    t = 1.0 - y
    fn = {"simple": lambda: M.simple_g_loss(net, 8, x.device)["g"],
          "complex": lambda: M.complex_g_loss(net, x, y, t)["g"],
          "split": lambda: M.split_g_loss(net, x)["g"]}[setup]
    first, last = _steps(net.g_parameters(), fn)
    assert last < first


def test_split_double_pass_l1_falls(crops):
    net = _net("split")
    x = M.to_net(crops[0])
    first, last = _steps(net.g_parameters(),
                         lambda: (net.reconstruct(net.reconstruct(x)) - x).abs().mean(), n=10)
    assert last < first * 0.9


def test_complex_class_head_learns_the_labels(crops):
    """The seed applied a logits BCE to sigmoid outputs; our heads give logits."""
    net = _net("complex")
    x, y = M.to_net(crops[0]), crops[1]
    first, last = _steps(net.D.parameters(),
                         lambda: torch.nn.functional.binary_cross_entropy_with_logits(
                             net.D(x)[1], y), n=10)
    assert last < first


def test_translation_means_over_their_own_counts():
    """The seed's get_mean divided both sums by the smiling count (a bug)."""
    from warpcam.training.keepsmiling.translate import latent_translation

    class Fake:
        images = torch.zeros(5, 3, 64, 64, dtype=torch.uint8)
        labels = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
        sets = ["a"] * 5

        def __len__(self):
            return 5

        def batch(self, idx):
            return self.images[idx].float(), self.labels[idx]

    class Enc(torch.nn.Module):  # latent = the item's index, so the means are known
        calls = 0

        def forward(self, x):
            n = x.shape[0]
            z = torch.arange(Enc.calls, Enc.calls + n, dtype=torch.float32)
            Enc.calls += n
            return z.view(n, 1, 1, 1).expand(n, 1, 5, 5).contiguous()

    t, stats = latent_translation(Enc(), Fake())
    # smiling latents 0, 1 (mean 0.5); not smiling 2, 3, 4 (mean 3)
    assert torch.allclose(t, torch.full((1, 5, 5), 0.5 - 3.0))
    assert stats["a"]["n_smile"] == 2 and stats["a"]["n_not"] == 3


def test_translation_at_strength_zero_is_the_reconstruction(crops):
    net = _net("split").eval()
    t = torch.randn(16, 5, 5)
    inf = M.SplitInference(net.E, net.De, t).eval()
    x = crops[0][:4]
    with torch.no_grad():
        edit, recon = inf(x, torch.zeros(4, 1))
        assert torch.equal(edit, recon)
        assert torch.allclose(recon, M.from_net(net.reconstruct(M.to_net(x))), atol=1e-6)
        edit1, _ = inf(x, torch.ones(4, 1))
    assert (edit1 - recon).abs().max() > 1e-3


def _tiny_dataset(root, crops):
    """A built-data-set layout (index.csv + mouth_64 PNGs) of the 16 real crops."""
    x, y = crops
    (root / "mouth").mkdir(parents=True)
    cols = ["id", "set", "split", "found", "mouth_64", "mouth_clamped", "yaw", "smile", "grey"]
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for i in range(len(x)):
            p = f"mouth/{i}.png"
            img = (x[i].permute(1, 2, 0).numpy()[..., ::-1] * 255).round().astype(np.uint8)
            cv2.imwrite(str(root / p), img)
            w.writerow(dict(id=f"s/{i}", set="smilesmiled", split="train", found=1, mouth_64=p,
                            mouth_clamped=0, yaw=0.0, smile=int(y[i]), grey=1))
    return root


def test_mouth_crops_filter_by_label(tmp_path, crops):
    root = _tiny_dataset(tmp_path / "faces", crops)
    smiling = MouthCrops(root, "train", sets=("smilesmiled",), smile=1)
    assert len(smiling) == 8 and bool((smiling.labels == 1).all())
    assert MouthCrops(root, "train", sets=("smilesmiled",)).counts() == {"smilesmiled": [8, 8]}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, crops):
    from warpcam.training.keepsmiling import train
    base = tmp_path_factory.mktemp("ks")
    root = _tiny_dataset(base / "faces", crops)
    common = ["--setup", "split", "--data", str(root), "--sets", "smilesmiled",
              "--g-mult", "0.125", "--d-mult", "0.125", "--latent", "16", "--batch-size", "4",
              "--no-progress", "--threads", "1", "--log-every", "1", "--l1-single", "9"]
    train.main(train.parse_args(common + ["--output-dir", str(base / "a"),
                                          "--stop-at-step", "4"]))
    train.main(train.parse_args(common + ["--output-dir", str(base / "b"),
                                          "--stop-at-step", "2"]))
    train.main(train.parse_args(common + ["--output-dir", str(base / "b"),
                                          "--stop-at-step", "4", "--resume", "auto"]))
    return base, root


def test_resume_continues_exactly(tiny_run):
    base, _ = tiny_run
    a = torch.load(base / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(base / "b" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    summary = json.loads((base / "a" / "summary.json").read_text())
    assert summary["data_counts"] == {"smilesmiled": [8, 8]}
    assert (base / "a" / "samples.png").exists()


def test_export_round_trip(tiny_run):
    from warpcam.realtime.effects.keep_smiling import load_keepsmiling_model
    from warpcam.training.keepsmiling import export
    from warpcam.training.keepsmiling.translate import latent_translation

    base, root = tiny_run
    out = base / "ks.pt2"
    export.main(["--checkpoint", str(base / "a" / "checkpoint.pt"), "--out", str(out),
                 "--data", str(root), "--sets", "smilesmiled"])
    model = load_keepsmiling_model(out)
    assert model.meta["roi"] == "mouth" and model.meta["kind"] == "warpcam.keepsmiling.split"
    net, _ = export.load(base / "a" / "checkpoint.pt")
    t, _ = latent_translation(net.E, MouthCrops(root, "train", sets=("smilesmiled",)))
    x = np.random.default_rng(0).random((3, 3, 64, 64)).astype(np.float32)
    s = np.array([0.0, 1.0, -0.5], np.float32)
    edit, recon = model(x, s)
    with torch.no_grad():
        ref = M.SplitInference(net.E, net.De, t).eval()(torch.from_numpy(x),
                                                        torch.from_numpy(s)[:, None])
    assert np.abs(edit - ref[0].numpy()).max() < 1e-5
    assert np.abs(recon - ref[1].numpy()).max() < 1e-5
    assert np.array_equal(edit[0], recon[0])


@pytest.mark.parametrize("setup", ["simple", "complex"])
def test_simple_and_complex_export(tmp_path, setup):
    from warpcam.realtime.runtime import load_model
    from warpcam.training.keepsmiling import export
    net = _net(setup).eval()
    ck = {"step": 1, "epoch": 0, "args": {"seed": 0},
          "extra": {"data_counts": {"x": [1, 1]}, "config": net.cfg.to_dict()}}
    out = export.export(net, export.metadata(net.cfg, ck, {}), tmp_path / f"{setup}.pt2")
    rt = load_model(out, kind=export.KINDS[setup])
    if setup == "simple":
        z = np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32)
        got = rt(z)[0]
        with torch.no_grad():
            ref = M.from_net(net.G(torch.from_numpy(z)[:, :, None, None])).numpy()
    else:
        x = np.random.default_rng(0).random((2, 3, 64, 64)).astype(np.float32)
        lab = np.ones((2, 1), np.float32)
        got = rt(x, lab)[0]
        with torch.no_grad():
            ref = M.from_net(net.G(M.to_net(torch.from_numpy(x)), torch.ones(2))).numpy()
    assert np.abs(got - ref).max() < 1e-5


def test_mtfl_layout(tmp_path):
    """A synthetic MTFL folder: five points, smile 1/2, pose; the seed's crop of the points."""
    from warpcam.core.mouth import mouth_box_points
    img = np.zeros((120, 100, 3), np.uint8)
    img[70:90, 30:70] = (0, 0, 255)            # a red "mouth"
    cv2.imwrite(str(tmp_path / "a.jpg"), img)
    (tmp_path / "lfw").mkdir()
    cv2.imwrite(str(tmp_path / "lfw" / "b.jpg"), img)
    pts = "30 70 50 35 65 50 50 65 80 80"  # x1..x5 y1..y5
    (tmp_path / "training.txt").write_text(
        f"a.jpg {pts} 1 1 2 3\n\nlfw\\b.jpg {pts} 2 2 1 3\n"
        f"a.jpg {pts} 1 1 1 1\n")
    rows = read_mtfl(tmp_path / "training.txt")
    assert [r.label for r in rows] == [1.0, 0.0, 1.0] and rows[1].path == "lfw/b.jpg"
    assert rows[0].points.shape == (5, 2) and rows[0].points[2].tolist() == [50.0, 65.0]
    data = MTFLMouths(tmp_path, "training")                # pose 3 only
    assert len(data) == 2 and data.labels.tolist() == [1.0, 0.0]
    box, _ = mouth_box_points((50, 65), (35, 80), (65, 80), img.shape)
    # f0 = (50, 80), b = (0, 15), a = sqrt(15^2 + 15^2): box x 50 -+ 21.2, y 65 .. 95
    assert np.allclose(box, [50 - 15 * 2 ** 0.5, 65, 50 + 15 * 2 ** 0.5, 95])
    crop = data.images[0].permute(1, 2, 0).numpy()
    assert crop[40, 32, 0] > 200 and crop[5, 32, 0] < 20   # red mouth below, black above
    assert len(MTFLMouths(tmp_path, "training", smile=0)) == 1
    (tmp_path / "testing.txt").write_text("a.jpg 1 2 3\n")
    with pytest.raises(ValueError, match="testing.txt:1: 4 fields"):
        read_mtfl(tmp_path / "testing.txt")
