"""The control panel's server (warpcam.realtime.panel): token, Host/Origin checks, loopback only,
range checks, settings applied at the next frame, presets TOML round trip, ``--config``.

Runs a real Pipeline (mediapipe tracker, CPU compositor, every registered effect) on a real
face; the browser end to end is tests/test_panel_browser.py."""
import asyncio
import http.client
import json
import os
import socket
import tomllib

import numpy as np
import pytest

pytest.importorskip("aiohttp")

from warpcam.core.types import Frame  # noqa: E402
from warpcam.realtime import cli  # noqa: E402
from warpcam.realtime.panel import Panel, PresetError, presets  # noqa: E402


@pytest.fixture(scope="module")
def pipeline(static_tracker):
    from warpcam.kernels.cpu import CpuCompositor
    from warpcam.realtime.pipeline import Pipeline

    return Pipeline(static_tracker, CpuCompositor())


@pytest.fixture()
def panel(pipeline, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for live in pipeline.settings.values():  # every test starts from the defaults
        live.set(type(live.get())())
    p = Panel(pipeline, input_name="astronaut", output_name="null").start()
    yield p
    p.close()


def request(panel, method, path, body=None, token=True, headers=None):
    """(status, parsed JSON or text) of one request to the panel."""
    conn = http.client.HTTPConnection("127.0.0.1", panel.port, timeout=10)
    h = {"Host": f"127.0.0.1:{panel.port}"}
    if token:
        h["X-Warpcam-Token"] = panel.token
    h.update(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    raw = r.read().decode()
    conn.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw


def test_url_token_and_every_route_needs_it(panel):
    assert panel.url == f"http://127.0.0.1:{panel.port}/?token={panel.token}"
    assert len(panel.token) >= 16 and all(c.isalnum() or c in "-_" for c in panel.token)
    for path in ("/", "/panel.js", "/panel.css", "/api/schema", "/api/state", "/api/presets"):
        assert request(panel, "GET", path, token=False)[0] == 403, path
        wrong = panel.token[:-1] + ("x" if panel.token[-1] != "x" else "y")
        assert request(panel, "GET", path + "?token=" + wrong, token=False)[0] == 403, path
        assert request(panel, "GET", path + "?token=" + panel.token, token=False)[0] == 200, path
    status, body = request(panel, "POST", "/api/settings", token=False,
                           body={"effect": "smile", "changes": {"strength": 0.5}})
    assert status == 403 and panel.pipeline.settings["smile"].get().strength == 0.0
    # the page itself carries the token to its script and style sheet, and loads nothing else
    status, page = request(panel, "GET", "/")
    assert status == 200 and f"panel.js?token={panel.token}" in page
    assert "http://" not in page and "https://" not in page


def test_foreign_host_and_origin_are_refused(panel):
    status, body = request(panel, "GET", "/api/state", headers={"Host": "evil.example"})
    assert status == 403 and "Host" in body["error"]
    status, _ = request(panel, "GET", "/api/state",
                        headers={"Host": f"evil.example:{panel.port}"})
    assert status == 403
    status, body = request(panel, "POST", "/api/settings",
                           body={"effect": "smile", "changes": {"strength": 0.5}},
                           headers={"Origin": "http://evil.example"})
    assert status == 403 and "Origin" in body["error"]
    assert panel.pipeline.settings["smile"].get().strength == 0.0
    status, _ = request(panel, "GET", "/api/state",
                        headers={"Origin": f"http://127.0.0.1:{panel.port + 1}"})
    assert status == 403
    # the panel's own origin, under either loopback name, is fine
    for host in ("127.0.0.1", "localhost"):
        status, _ = request(panel, "GET", "/api/state",
                            headers={"Host": f"{host}:{panel.port}",
                                     "Origin": f"http://{host}:{panel.port}"})
        assert status == 200


def test_websocket_needs_token_and_origin_and_pauses(panel, astronaut):
    import aiohttp

    base = f"http://127.0.0.1:{panel.port}/ws"

    async def go():
        async with aiohttp.ClientSession() as s:
            for url, hdr in ((base, {}), (base + "?token=" + panel.token,
                                          {"Origin": "http://evil.example"})):
                with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                    await s.ws_connect(url, headers=hdr)
                assert exc.value.status == 403
            ws = await s.ws_connect(base + "?token=" + panel.token,
                                    headers={"Origin": f"http://127.0.0.1:{panel.port}"})
            state = json.loads((await ws.receive(timeout=5)).data)
            assert state["type"] == "state" and "smile" in state["settings"]
            # paused (hidden tab): the pipeline's hook keeps nothing
            panel.on_frame(None, astronaut, [], [])
            assert panel._pic[1] is None
            await ws.send_str(json.dumps({"paused": False, "before": False}))
            await asyncio.sleep(0.2)
            panel.on_frame(None, astronaut, [], [])
            got = None
            for _ in range(10):
                msg = await ws.receive(timeout=5)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    got = msg.data
                    break
            assert got is not None and got[:1] == b"A" and got[1:3] == b"\xff\xd8"  # JPEG
            import cv2
            img = cv2.imdecode(np.frombuffer(got[1:], np.uint8), cv2.IMREAD_COLOR)
            assert img.shape == astronaut.shape
            assert np.abs(img.astype(int) - astronaut).mean() < 8
            await ws.send_str(json.dumps({"paused": True}))
            await asyncio.sleep(0.2)
            seq = panel._pic[0]
            await asyncio.sleep(0.1)
            panel.on_frame(None, astronaut, [], [])
            assert panel._pic[0] == seq  # no viewer: no copy
            await ws.close()

    asyncio.run(go())


def test_loopback_only(panel):
    with socket.create_connection(("127.0.0.1", panel.port), timeout=5):
        pass
    addrs = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        try:  # the address a packet would leave from (nothing is sent)
            u.connect(("10.255.255.255", 1))
            addrs.add(u.getsockname()[0])
        except OSError:
            pass
    try:
        addrs.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    addrs = {a for a in addrs if not a.startswith("127.")}
    if not addrs:
        pytest.skip("this machine has no address besides loopback")
    for a in addrs:
        with pytest.raises(OSError):
            socket.create_connection((a, panel.port), timeout=2).close()


def test_out_of_range_and_wrong_types_are_refused(panel):
    live = panel.pipeline.settings
    v0 = {k: s.version for k, s in live.items()}
    for effect, changes, words in (
            ("smile", {"strength": 3.0}, "within [-1, 1]"),
            ("smile", {"strength": "0.5"}, "must be a number"),
            ("gaze", {"enabled": 1}, "true or false"),
            ("gaze", {"pitch_deg": 31}, "within [-30, 30]"),
            ("gaze", {"lid_follow": [0, 0]}, "cannot be set from the panel"),
            ("nosuch", {"x": 1}, "no effect")):
        status, body = request(panel, "POST", "/api/settings",
                               body={"effect": effect, "changes": changes})
        assert status == 400 and words in body["error"], (effect, changes, body)
    assert {k: s.version for k, s in live.items()} == v0  # nothing applied
    assert live["smile"].get().strength == 0.0
    status, body = request(panel, "POST", "/api/settings",
                           body={"effect": "gaze", "changes": {"pitch_deg": 10, "yaw_deg": -5}})
    assert status == 200 and live["gaze"].get().pitch_deg == 10.0
    assert body["settings"]["gaze"]["yaw_deg"] == -5.0
    # nothing routes to files: only the presets file is read or written
    for path in ("/panel.html", "/../pyproject.toml", "/api/presets/../../etc/passwd",
                 "/static/panel.js"):
        assert request(panel, "GET", path + "?token=" + panel.token)[0] in (403, 404), path


def test_change_applies_at_the_next_frame(panel, astronaut):
    """A change over HTTP is what the very next processed frame uses, without a restart."""
    p = panel.pipeline
    frame = Frame(image=astronaut, index=0, pts_seconds=0.0)
    out0, faces, _ = p.process(frame)
    assert len(faces) == 1
    assert np.array_equal(out0, astronaut)  # defaults on a file: nothing moves
    status, _ = request(panel, "POST", "/api/settings",
                        body={"effect": "smile", "changes": {"strength": 0.9}})
    assert status == 200
    out1, _, jobs = p.process(frame)
    diff = np.abs(out1.astype(int) - astronaut).max(axis=2)
    ys, xs = np.nonzero(diff > 8)
    assert len(ys) > 200, len(ys)
    mouth = faces[0].landmarks[[61, 291, 13, 14]]
    assert mouth[:, 1].min() - 40 < np.median(ys) < mouth[:, 1].max() + 40  # at the mouth
    status, state = request(panel, "GET", "/api/state")
    assert state["settings"]["smile"]["strength"] == 0.9 and state["frames"] == p.frames


def test_au_sliders_and_switch_from_the_panel(panel, astronaut):
    """The AU effect's panel fields (one slider per AU, the on/off switch) come from its
    settings dataclass; setting AU12 over HTTP changes the condition the next frame asks the
    network for, and the switch takes it back to none."""
    from warpcam.realtime.au import AU_NAMES
    status, schema = request(panel, "GET", "/api/schema")
    au = next(e for e in schema["effects"] if e["name"] == "au")
    fields = {f["name"]: f for f in au["fields"]}
    assert fields["enabled"]["type"] == "bool" and fields["enabled"]["default"] is True
    for a in AU_NAMES:
        f = fields[a.lower()]
        assert (f["type"], f["lo"], f["hi"], f["step"]) == ("float", -1.5, 1.5, 0.05), f
    assert "edit" not in fields  # text fields stay on the command line
    status, body = request(panel, "POST", "/api/settings",
                           body={"effect": "au", "changes": {"au12": 1.6}})
    assert status == 400 and "within [-1.5, 1.5]" in body["error"]
    p = panel.pipeline
    eff = next(e for e in p.effects if e.name == "au")
    frame = Frame(image=astronaut, index=0, pts_seconds=0.0)
    p.process(frame)
    assert eff.tracks == {}  # nothing asked: no condition
    status, state = request(panel, "POST", "/api/settings",
                            body={"effect": "au", "changes": {"au12": 0.8}})
    assert status == 200 and state["settings"]["au"]["au12"] == 0.8
    conds = []
    for i in range(3):
        _, _, jobs = p.process(Frame(image=astronaut, index=1 + i, pts_seconds=(1 + i) / 30))
        cond = next(iter(eff.tracks.values())).cond
        conds.append(cond[eff.model.au_names.index("AU12")])
        assert np.count_nonzero(cond) == 1
    assert 0 < conds[0] < conds[1] < conds[2] <= 0.8  # moving toward the slider's value
    assert any(j.kind == "face" and "cond" in j.meta for j in jobs)
    status, _ = request(panel, "POST", "/api/settings",
                        body={"effect": "au", "changes": {"enabled": False}})
    assert status == 200 and p.settings["au"].get().au12 == 0.8
    for i in range(40):  # 0.8 * 0.65^n under 0.005 after 12 frames, then no track is kept
        p.process(Frame(image=astronaut, index=4 + i, pts_seconds=(4 + i) / 30))
        if not eff.tracks:
            break
    assert eff.tracks == {} and i < 20


def test_presets_round_trip(panel, tmp_path):
    path = presets.presets_path()
    assert path == tmp_path / "config" / "warpcam" / "presets.toml"
    request(panel, "POST", "/api/settings", body={"effect": "smile", "changes": {"strength": 0.4}})
    request(panel, "POST", "/api/settings", body={"effect": "gaze", "changes": {"enabled": False}})
    status, info = request(panel, "POST", "/api/presets", body={"name": "call 1"})
    assert status == 200 and info["names"] == ["call 1"] and info["active"] == "call 1"
    doc = tomllib.loads(path.read_text())
    assert doc["active"] == "call 1"
    assert doc["presets"]["call 1"]["smile"]["strength"] == 0.4
    assert doc["presets"]["call 1"]["gaze"]["enabled"] is False
    for bad in ("../x", "", "a/b", "x" * 65):
        status, body = request(panel, "POST", "/api/presets", body={"name": bad})
        assert status == 400 and "preset name" in body["error"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["presets.toml"]
    request(panel, "POST", "/api/settings", body={"effect": "smile", "changes": {"strength": -1}})
    request(panel, "POST", "/api/settings", body={"effect": "gaze", "changes": {"enabled": True}})
    status, state = request(panel, "POST", "/api/presets/load", body={"name": "call 1"})
    assert status == 200
    assert panel.pipeline.settings["smile"].get().strength == 0.4
    assert panel.pipeline.settings["gaze"].get().enabled is False
    assert request(panel, "POST", "/api/presets/load", body={"name": "nope"})[0] == 400
    # a hand-edited file with a value out of range is refused, nothing applied
    path.write_text(path.read_text().replace("strength = 0.4", "strength = 7.0"))
    status, body = request(panel, "POST", "/api/presets/load", body={"name": "call 1"})
    assert status == 400 and "within [-1, 1]" in body["error"]
    assert panel.pipeline.settings["smile"].get().strength == 0.4


def test_config_flag_reads_the_presets_file(tmp_path):
    f = tmp_path / "presets.toml"
    presets.save_preset(f, "a", {"smile": {"strength": 0.3}, "gaze": {"eye_contact": True,
                                                                      "enabled": False}})
    presets.save_preset(f, "b", {"smile": {"strength": -0.6}})
    p = cli.build_parser()

    def settings(*argv):
        a = p.parse_args(list(argv))
        return cli.config_settings(a, cli.effect_settings(a, live_source=False))

    s = settings("--config", str(f))  # the active one: the last saved
    assert s["smile"].strength == -0.6
    s = settings("--config", str(f), "--preset", "a")
    assert s["smile"].strength == 0.3 and s["gaze"].eye_contact and not s["gaze"].enabled
    s = settings("--config", str(f), "--preset", "a", "--smile", "0.1")  # flags win
    assert s["smile"].strength == 0.1 and s["gaze"].eye_contact
    plain = tmp_path / "plain.toml"
    plain.write_text("[smile]\nstrength = 0.25\n")
    assert settings("--config", str(plain))["smile"].strength == 0.25
    with pytest.raises(PresetError, match="no preset 'c'"):
        settings("--config", str(f), "--preset", "c")
    bad = tmp_path / "bad.toml"
    for text, words in (("[smile]\nstrength = 2.0\n", "within [-1, 1]"),
                        ("[smile]\nstrenght = 0.1\n", "no setting 'strenght'"),
                        ("[smile\n", "not valid TOML")):
        bad.write_text(text)
        with pytest.raises(SystemExit) as exc:
            cli._validate(p, p.parse_args(["--config", str(bad), "--max-faces", "1"]))
        assert exc.value.code == 2
        with pytest.raises(PresetError, match=words.replace("[", r"\[")):
            presets.preset_from_file(bad)


def test_cli_port_taken_is_one_line_and_leaves_no_output(tmp_path):
    import subprocess
    import sys

    from tests import realdata

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = tmp_path / "out.mp4"
        r = subprocess.run([sys.executable, "-m", "warpcam.realtime.cli", "--input",
                            str(realdata.video("mead_w009_neutral_256.mp4")), "--output",
                            str(out), "--panel", "--panel-port", str(port), "--quiet"],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg")))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot serve the panel" in lines[0] and "in use" in lines[0]
    assert [p.name for p in tmp_path.iterdir() if p.name != "cfg"] == []  # no (partial) output
