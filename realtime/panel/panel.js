// warpcam control panel: plain JavaScript, no build step, nothing loaded from elsewhere.
// The controls are generated from /api/schema (the effects' settings dataclasses).
"use strict";
const TOKEN = "__TOKEN__";
const $ = (id) => document.getElementById(id);
const controls = {};       // "effect.field" -> {type, range, number, box}
let busy = null;           // "effect.field" being dragged: not overwritten by the state
let ws = null;
let lastUrl = null;

async function api(path, body) {
  const opts = { headers: { "X-Warpcam-Token": TOKEN } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = {};
  try { data = await r.json(); } catch (e) { data = { error: "no answer from warpcam" }; }
  if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
  return data;
}

function showMessage(text) {
  const m = $("message");
  m.textContent = text || "";
  m.hidden = !text;
}

function el(tag, attrs, children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children || []) e.appendChild(c);
  return e;
}

function switchFor(id) {
  const input = el("input", { type: "checkbox", id: id });
  return [el("label", { class: "switch" }, [input, el("span")]), input];
}

const pending = {};
const queues = {};  // one request at a time per setting: the last value sent is the one kept
const inflight = {};  // "effect.field" -> requests not answered yet: the state leaves it alone
function send(effect, field, value) {
  const key = effect + "." + field;
  inflight[key] = (inflight[key] || 0) + 1;
  queues[key] = (queues[key] || Promise.resolve())
    .then(() => post(effect, field, value))
    .finally(() => { inflight[key] -= 1; });
  return queues[key];
}
async function post(effect, field, value) {
  try {
    const state = await api("/api/settings", { effect: effect, changes: { [field]: value } });
    showMessage("");
    inflight[effect + "." + field] -= 1;  // this answer is in: apply it unless more are queued
    try { applyState(state); } finally { inflight[effect + "." + field] += 1; }
  } catch (e) {
    showMessage(e.message);
    refresh();
  }
}
function sendThrottled(effect, field, value) {  // at most ten changes a second while dragging
  const key = effect + "." + field;
  if (pending[key]) { pending[key].value = value; return; }
  pending[key] = { value: value };
  setTimeout(() => { const v = pending[key].value; delete pending[key]; send(effect, field, v); },
             100);
}

function labelText(f) {  // "pitch_deg" with unit "deg" -> "pitch (deg)"; "au12" -> "AU12"
  let name = f.name;
  if (f.unit && name.endsWith("_" + f.unit)) name = name.slice(0, -f.unit.length - 1);
  name = name.replace(/^au(\d+)$/i, "AU$1").replace(/_/g, " ");
  return name + (f.unit ? " (" + f.unit + ")" : "");
}

function buildControls(schema) {
  for (const k of ["input", "output"]) {  // the file name; the whole path on hover
    $(k).textContent = schema[k].split(/[\\/]/).pop() || schema[k];
    $(k).title = schema[k];
  }
  $("preset-file").textContent = schema.presets_file;
  const root = $("effects");
  root.textContent = "";
  for (const eff of schema.effects) {
    const title = el("h2", { text: eff.name.replace(/_/g, " ") });
    const card = el("div", { class: "card", id: "effect-" + eff.name }, [title]);
    if (eff.help) card.appendChild(el("div", { class: "help", text: eff.help }));
    for (const f of eff.fields) {
      const key = eff.name + "." + f.name;
      const label = el("label", { text: labelText(f), title: f.help });
      if (f.type === "bool") {
        const [box, input] = switchFor("s-" + eff.name + "-" + f.name);
        input.title = f.help;
        input.addEventListener("change", () => send(eff.name, f.name, input.checked));
        controls[key] = { type: "bool", range: input };
        if (f.name === "enabled") { title.appendChild(box); continue; }
        card.appendChild(el("div", { class: "row" }, [box, label]));
        continue;
      }
      const lo = f.lo === null ? -100 : f.lo, hi = f.hi === null ? 100 : f.hi;
      const range = el("input", { type: "range", id: "s-" + eff.name + "-" + f.name,
                                  min: lo, max: hi, step: f.step || "any", title: f.help });
      const number = el("input", { type: "number", id: "n-" + eff.name + "-" + f.name,
                                   step: f.step || "any", title: f.help });
      const parse = (s) => f.type === "int" ? parseInt(s, 10) : parseFloat(s);
      range.addEventListener("pointerdown", () => { busy = key; });
      range.addEventListener("input", () => {
        busy = key; number.value = range.value; sendThrottled(eff.name, f.name, parse(range.value));
      });
      range.addEventListener("change", () => { busy = null; send(eff.name, f.name, parse(range.value)); });
      number.addEventListener("change", () => {
        const v = parse(number.value);
        if (Number.isNaN(v)) { showMessage(key + ": not a number"); refresh(); return; }
        send(eff.name, f.name, v);   // the server refuses a value outside the range
      });
      controls[key] = { type: f.type, range: range, number: number };
      card.appendChild(el("div", { class: "setting" }, [label, range, number]));
    }
    root.appendChild(card);
  }
}

function applyState(state) {
  for (const [effect, fields] of Object.entries(state.settings || {})) {
    for (const [field, value] of Object.entries(fields)) {
      const key = effect + "." + field, c = controls[key];
      if (!c || key === busy || inflight[key] > 0 || pending[key]) continue;
      if (c.type === "bool") { c.range.checked = !!value; continue; }
      c.range.value = value;
      if (document.activeElement !== c.number) c.number.value = value;
    }
  }
  const st = $("status");
  st.textContent = state.running ? ("running · " + state.fps.toFixed(1) + " fps · frame " + state.frames)
                                 : "stopped";
  st.className = "pill" + (state.running ? " on" : "");
  const body = $("timings").tBodies[0];
  body.textContent = "";
  body.appendChild(el("tr", {}, [el("td", { text: "fps" }), el("td", { class: "v", text: state.fps.toFixed(1) })]));
  for (const [stage, ms] of Object.entries(state.stages_ms || {})) {
    body.appendChild(el("tr", {}, [el("td", { text: stage }),
                                   el("td", { class: "v", text: ms.toFixed(1) + " ms" })]));
  }
}

async function refresh() {
  try { applyState(await api("/api/state")); } catch (e) { showMessage(e.message); }
}

async function refreshPresets(select) {
  const info = await api("/api/presets");
  const list = $("preset-list");
  list.textContent = "";
  for (const name of info.names) list.appendChild(el("option", { value: name, text: name }));
  const want = select || info.active;
  if (want) list.value = want;
}

function viewMessage() {
  return JSON.stringify({ paused: document.hidden, before: $("before").checked });
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(proto + "//" + location.host + "/ws?token=" + encodeURIComponent(TOKEN));
  ws.binaryType = "blob";
  ws.onopen = () => ws.send(viewMessage());
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      const data = JSON.parse(ev.data);
      if (data.type === "state") applyState(data);
      return;
    }
    // first byte: "A" after (output) or "B" before (input); then the JPEG
    ev.data.slice(0, 1).text().then((tag) => {
      $("which").textContent = tag === "B" ? "before" : "after";
    });
    const url = URL.createObjectURL(ev.data.slice(1, ev.data.size, "image/jpeg"));
    $("live").src = url;
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    lastUrl = url;
  };
  ws.onclose = () => {
    const st = $("status");
    st.textContent = "disconnected"; st.className = "pill";
  };
}

document.addEventListener("visibilitychange", () => {  // no pictures while the tab is hidden
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(viewMessage());
});
$("before").addEventListener("change", () => {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(viewMessage());
});
$("preset-save").addEventListener("click", async () => {
  const name = $("preset-name").value.trim();
  try { await api("/api/presets", { name: name }); showMessage(""); await refreshPresets(name); }
  catch (e) { showMessage(e.message); }
});
$("preset-load").addEventListener("click", async () => {
  const name = $("preset-list").value;
  try { applyState(await api("/api/presets/load", { name: name })); showMessage(""); }
  catch (e) { showMessage(e.message); }
});

(async () => {
  try {
    buildControls(await api("/api/schema"));
    await refresh();
    await refreshPresets();
    document.body.dataset.ready = "1";
  } catch (e) { showMessage(e.message); }
  connect();
})();
