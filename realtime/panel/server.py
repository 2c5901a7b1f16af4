"""The control panel's web server: an aiohttp application on 127.0.0.1 in a background thread.

Routes (every one needs the token, as ``?token=`` or the ``X-Warpcam-Token`` header):

- ``GET /``, ``/panel.css``, ``/panel.js``: the page (plain files shipped in this package);
- ``GET /api/schema``: the effects and their settings (type, range, step, unit, help), generated
  from the settings dataclasses (:func:`~warpcam.realtime.panel.presets.panel_fields`), and the
  input and output in use;
- ``GET /api/state``: the pipeline's frame count, the pages watching the picture, the current
  settings, per-stage p50 times over the last 30 frames (its
  :class:`~warpcam.realtime.pipeline.StageTimer`) and the frames written per second over the
  last second;
- ``POST /api/settings`` ``{"effect": name, "changes": {field: value}}``: applied through the
  effect's :class:`~warpcam.realtime.effects.LiveSettings` (the next frame sees it, as a whole);
  a value outside its range is refused with ``400 {"error": message}`` and nothing changes;
- ``GET /api/presets``, ``POST /api/presets`` ``{"name"}`` (save the current settings),
  ``POST /api/presets/load`` ``{"name"}``: the presets file, the one file the panel reads or
  writes (:mod:`warpcam.realtime.panel.presets`);
- ``GET /ws``: a WebSocket that sends the live picture as binary JPEG messages (at most
  ``fps`` a second, only while the page says it is visible) and the state as JSON text once a
  second; the page sends ``{"paused": bool, "before": bool}``.

Security: the socket is bound to 127.0.0.1 only; a request whose ``Host`` is not
``127.0.0.1:PORT`` / ``localhost:PORT`` (DNS rebinding) or whose ``Origin`` is present and not
``http://127.0.0.1:PORT`` / ``http://localhost:PORT`` (cross-site requests) gets 403, and so does
one without the right token (compared in constant time).

The pipeline never waits for the panel: its per-frame hook (:meth:`Panel.on_frame`) at most
copies the frame when a picture is due for a watching page; JPEG encoding and everything else
runs in the panel's thread.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import threading
import time
from collections import deque
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np

from warpcam.realtime.effects import SettingsError
from warpcam.realtime.panel import presets as P

log = logging.getLogger("warpcam")

__all__ = ["Panel", "PanelError", "HUD_STAGES", "TOKEN_BYTES"]

#: Random bytes of the token (``secrets.token_urlsafe``: 32 URL-safe characters).
TOKEN_BYTES = 24
#: Stages whose p50 the page shows, in order.
HUD_STAGES = ("capture", "tracking", "effects", "composite", "output", "total")
#: Frames the timings look back on.
WINDOW = 30
#: Longest side of the streamed picture (pixels); larger frames are scaled down for the page.
STREAM_MAX_SIDE = 960
#: Largest request body accepted (bytes).
MAX_BODY = 64 * 1024
_STATIC = {"/": ("panel.html", "text/html"), "/panel.css": ("panel.css", "text/css"),
           "/panel.js": ("panel.js", "application/javascript")}


class PanelError(RuntimeError):
    """The panel cannot start (the port is taken, aiohttp is missing); one line."""


def _static(name: str) -> str:
    return resources.files("warpcam.realtime.panel").joinpath(name).read_text("utf-8")


class _PacedSource:
    """Wraps the pipeline's source: hands frames to the panel for the "before" picture and, for
    a file, plays it at its own frame rate (``pace``) so the page can be used while it runs."""

    def __init__(self, source, panel: "Panel", pace: bool):
        self._source, self._panel, self._pace = source, panel, pace

    def __iter__(self):
        t0 = pts0 = None
        for frame in self._source:
            if self._pace and frame.pts_seconds is not None:
                now = time.perf_counter()
                if t0 is None:
                    t0, pts0 = now, frame.pts_seconds
                wait = (frame.pts_seconds - pts0) - (now - t0)
                if wait > 0:
                    time.sleep(min(wait, 1.0))
            self._panel._offer_before(frame.image)
            yield frame

    def __getattr__(self, name):
        return getattr(self._source, name)


class Panel:
    """The control panel of one running pipeline.

    Args:
        pipeline: the :class:`~warpcam.realtime.pipeline.Pipeline` (its ``effects``,
            ``settings`` and ``timer`` are read; its settings changed through ``LiveSettings``).
        port: TCP port on 127.0.0.1 (0: a free one).
        input_name, output_name: what the page shows as the input and output in use.
        presets_file: the presets TOML (default :func:`~warpcam.realtime.panel.presets.
            presets_path`); the only file the panel reads or writes.
        fps: most pictures a second sent to a page (the preview's rate).
        token: the access token (default ``secrets.token_urlsafe(24)``).

    Use :meth:`start` (returns once the socket listens; :attr:`url` then has the port and
    token) and :meth:`close`.
    """

    def __init__(self, pipeline, *, port: int = 0, input_name: str = "", output_name: str = "",
                 presets_file=None, fps: float = 15.0, token: Optional[str] = None):
        if not (isinstance(port, int) and 0 <= port <= 65535):
            raise PanelError(f"--panel-port must be from 0 to 65535, got {port!r}")
        self.pipeline = pipeline
        self.host = "127.0.0.1"
        self.port = port
        self.input_name, self.output_name = str(input_name), str(output_name)
        self.presets_file = Path(presets_file) if presets_file else P.presets_path()
        self.fps = float(fps)
        self.token = token or secrets.token_urlsafe(TOKEN_BYTES)
        self.running = True
        self._lock = threading.Lock()
        self._viewers = 0            # pages watching (not paused)
        self._before_viewers = 0     # of those, showing the input
        self._pic = (0, None, False)  # (seq, image, is_before)
        self._before = None
        self._last_offer = 0.0
        self._last_before = 0.0
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner = None
        self._sockets: set = set()
        self._rate: deque = deque()
        self._fps = 0.0

    # -- the pipeline's side (never blocks) ------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/?token={self.token}"

    def wrap_source(self, source, pace: Optional[bool] = None):
        """The source to run: frames pass through unchanged (a file is paced to its frame rate
        unless ``pace`` is False)."""
        if pace is None:
            pace = not bool(getattr(source, "is_live", False))
        return _PacedSource(source, self, pace)

    def _due(self, last: float) -> bool:
        return time.perf_counter() - last >= 1.0 / self.fps

    def _offer_before(self, image) -> None:
        if self._before_viewers and self._due(self._last_before):
            self._last_before = time.perf_counter()
            self._before = np.array(image, copy=True)

    def on_frame(self, frame, out, faces, jobs) -> None:
        """The pipeline's per-frame hook: keeps a copy of the output (or the input, for a page
        showing "before") when a picture is due for a watching page; else does nothing."""
        if not self._viewers or not self._due(self._last_offer):
            return
        self._last_offer = time.perf_counter()
        before = self._before_viewers > 0 and self._before is not None
        img = self._before if before else np.array(out, copy=True)
        with self._lock:
            self._pic = (self._pic[0] + 1, img, before)

    # -- state for the page ----------------------------------------------------------------------

    def schema(self) -> dict:
        effects = []
        for e in self.pipeline.effects:
            spec = getattr(e, "spec", None)
            fields = []
            for i in P.panel_fields(type(e.settings.get())):
                fields.append(dict(
                    name=i.name, type=i.type.__name__, lo=_num(i.lo), hi=_num(i.hi),
                    step=_num(i.step) if i.step is not None else (
                        None if i.type is bool else (1 if i.type is int else 0.05)),
                    unit=i.unit, help=i.help, default=i.default))
            effects.append(dict(name=e.name, help=getattr(spec, "help", "") or "",
                                fields=fields))
        return dict(effects=effects, input=self.input_name, output=self.output_name,
                    fps=self.fps, presets_file=str(self.presets_file))

    def state(self) -> dict:
        timer = self.pipeline.timer
        stages = {}
        for st in HUD_STAGES:
            v = timer.last_ms(st, WINDOW)
            if v.size:
                stages[st] = round(float(np.median(v)), 2)
        # frames written per second over the last second or more (what the user gets; the
        # "total" stage is the latency of one frame)
        now, frames = time.perf_counter(), int(self.pipeline.frames)
        with self._lock:
            hist = self._rate
            hist.append((now, frames))
            while len(hist) > 2 and now - hist[1][0] >= 1.0:
                hist.popleft()
            t_old, f_old = hist[0]
        fps = (frames - f_old) / (now - t_old) if now - t_old >= 0.25 else self._fps
        self._fps = fps
        return dict(frames=int(self.pipeline.frames), running=self.running,
                    settings=P.current_preset(self.pipeline), stages_ms=stages,
                    fps=round(fps, 1),
                    versions={k: s.version for k, s in self.pipeline.settings.items()},
                    dropped=int(getattr(self.pipeline, "dropped", 0) or 0),
                    viewers=int(self._viewers))

    def apply(self, effect: str, changes: dict) -> dict:
        """Apply changes from the page. Raises :class:`SettingsError` (nothing applied)."""
        if effect not in self.pipeline.settings:
            raise SettingsError(f"no effect {effect!r} in this pipeline")
        if not isinstance(changes, dict) or not changes:
            raise SettingsError("expected {field: value} changes")
        live = self.pipeline.settings[effect]
        infos = {i.name: i for i in P.panel_fields(type(live.get()))}
        clean = {}
        for k, v in changes.items():
            info = infos.get(k)
            if info is None:
                raise SettingsError(f"{effect}.{k} cannot be set from the panel")
            if info.type is bool and not isinstance(v, bool):
                raise SettingsError(f"{effect}.{k} must be true or false, got {v!r}")
            if info.type in (int, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise SettingsError(f"{effect}.{k} must be a number, got {v!r}")
                v = float(v) if info.type is float else v
                if info.type is int and v != int(v):
                    raise SettingsError(f"{effect}.{k} must be a whole number, got {v!r}")
            clean[k] = v
        live.update(**clean)
        log.info("panel: %s (from frame %d)", ", ".join(
            f"{effect}.{k} = {_fmt(v)}" for k, v in clean.items()), self.pipeline.frames + 1)
        return self.state()

    # -- the server thread -----------------------------------------------------------------------

    def start(self) -> "Panel":
        """Start the server thread; returns when it listens. Raises :class:`PanelError`."""
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            raise PanelError("--panel needs aiohttp: pip install 'warpcam[panel]'") from None
        ready = threading.Event()
        failure: list = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name="warpcam-panel", daemon=True)
        self._thread.start()
        ready.wait(30.0)
        if failure:
            exc = failure[0]
            if isinstance(exc, OSError):
                raise PanelError(f"cannot serve the panel on {self.host}:{self.port}: "
                                 f"{exc.strerror or exc}") from None
            raise PanelError(f"cannot start the panel: {exc}") from None
        return self

    def close(self) -> None:
        """Stop the server (open pages see the connection close)."""
        self.running = False
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    async def _cleanup(self) -> None:
        for ws in list(self._sockets):
            try:
                await ws.close()
            except Exception:
                pass
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self) -> None:
        from aiohttp import web

        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY)
        app.router.add_get("/", self._page)
        app.router.add_get("/panel.css", self._page)
        app.router.add_get("/panel.js", self._page)
        app.router.add_get("/api/schema", self._schema)
        app.router.add_get("/api/state", self._state)
        app.router.add_post("/api/settings", self._settings)
        app.router.add_get("/api/presets", self._presets)
        app.router.add_post("/api/presets", self._save_preset)
        app.router.add_post("/api/presets/load", self._load_preset)
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=False)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])

    def _origins(self) -> tuple:
        return tuple(f"{h}:{self.port}" for h in ("127.0.0.1", "localhost"))

    async def _guard_check(self, request) -> Optional[str]:
        host = request.headers.get("Host", "")
        if host not in self._origins():
            return f"Host {host[:60]!r} is not this panel's"
        origin = request.headers.get("Origin")
        if origin is not None and origin not in tuple("http://" + o for o in self._origins()):
            return f"Origin {origin[:60]!r} is not this panel's"
        token = request.query.get("token") or request.headers.get("X-Warpcam-Token") or ""
        if not secrets.compare_digest(token.encode("utf-8", "replace"),
                                      self.token.encode("utf-8")):
            return "missing or wrong token (open the URL warpcam printed)"
        return None

    @property
    def _guard(self):
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            why = await self._guard_check(request)
            if why is not None:
                return web.json_response({"error": why}, status=403)
            resp = await handler(request)
            if isinstance(resp, web.StreamResponse) and not isinstance(resp, web.WebSocketResponse):
                resp.headers["Cache-Control"] = "no-store"
                resp.headers["X-Content-Type-Options"] = "nosniff"
                resp.headers["Referrer-Policy"] = "no-referrer"
                resp.headers["X-Frame-Options"] = "DENY"
                resp.headers["Content-Security-Policy"] = (
                    "default-src 'self'; img-src 'self' blob:; connect-src 'self'; "
                    "frame-ancestors 'none'")
            return resp
        return guard

    async def _page(self, request):
        from aiohttp import web

        name, ctype = _STATIC[request.path]
        text = _static(name).replace("__TOKEN__", self.token)
        return web.Response(text=text, content_type=ctype)

    async def _schema(self, request):
        from aiohttp import web
        return web.json_response(self.schema())

    async def _state(self, request):
        from aiohttp import web
        return web.json_response(self.state())

    async def _body(self, request) -> dict:
        try:
            data = await request.json()
        except Exception:
            raise SettingsError("the request body is not JSON") from None
        if not isinstance(data, dict):
            raise SettingsError("the request body must be a JSON object")
        return data

    async def _settings(self, request):
        from aiohttp import web

        try:
            data = await self._body(request)
            return web.json_response(self.apply(str(data.get("effect", "")),
                                                data.get("changes")))
        except (SettingsError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def _presets(self, request):
        from aiohttp import web

        try:
            info = P.list_presets(self.presets_file)
        except P.PresetError as exc:
            return web.json_response({"error": str(exc), "names": []}, status=400)
        info["file"] = str(self.presets_file)
        return web.json_response(info)

    async def _save_preset(self, request):
        from aiohttp import web

        try:
            data = await self._body(request)
            name = data.get("name")
            P.save_preset(self.presets_file, name, P.current_preset(self.pipeline))
        except (P.PresetError, SettingsError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        log.info("panel: preset %r saved to %s", name, self.presets_file)
        return await self._presets(request)

    async def _load_preset(self, request):
        from aiohttp import web

        try:
            data = await self._body(request)
            name = str(data.get("name", ""))
            P.apply_preset(self.pipeline, P.load_named(self.presets_file, name))
        except (P.PresetError, SettingsError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        log.info("panel: preset %r loaded (from frame %d)", name, self.pipeline.frames + 1)
        return web.json_response(self.state())

    async def _ws(self, request):
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096)
        await ws.prepare(request)
        self._sockets.add(ws)
        view = {"paused": True, "before": False}
        counted = [False, False]

        def recount():
            want = [not view["paused"], not view["paused"] and view["before"]]
            with self._lock:
                self._viewers += int(want[0]) - int(counted[0])
                self._before_viewers += int(want[1]) - int(counted[1])
            counted[:] = want

        async def reader():
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(data, dict):
                    view["paused"] = bool(data.get("paused", view["paused"]))
                    view["before"] = bool(data.get("before", view["before"]))
                    recount()

        task = asyncio.ensure_future(reader())
        loop = asyncio.get_running_loop()
        sent_seq, last_state = 0, 0.0
        try:
            while not ws.closed and not task.done():
                now = time.perf_counter()
                if now - last_state >= 1.0:
                    last_state = now
                    await ws.send_str(json.dumps({"type": "state", **self.state()}))
                seq, img, before = self._pic
                if not view["paused"] and img is not None and seq != sent_seq:
                    sent_seq = seq
                    jpeg = await loop.run_in_executor(None, _jpeg, img)
                    if jpeg is not None and not view["paused"]:
                        await ws.send_bytes((b"B" if before else b"A") + jpeg)
                await asyncio.sleep(1.0 / self.fps)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            task.cancel()
            view["paused"] = True
            recount()
            self._sockets.discard(ws)
        return ws


def _jpeg(img: np.ndarray) -> Optional[bytes]:
    import cv2

    h, w = img.shape[:2]
    s = STREAM_MAX_SIDE / max(h, w)
    if s < 1.0:
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))),
                         interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else None


def _num(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _fmt(v) -> str:
    return ("on" if v else "off") if isinstance(v, bool) else f"{v:g}"
