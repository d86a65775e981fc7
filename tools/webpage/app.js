// tagstream web dashboard: reads Server-Sent Events from /events and draws every stream.
// Plain browser JavaScript, no build step, no dependencies.  All text goes in with
// textContent (never innerHTML), so stream and tag names cannot inject markup.
"use strict";

const TOP_TAGS = 10;          // bars per stream
const HEATMAP_TAGS = 12;      // heatmap rows per stream
const MAX_CHANGES = 30;       // dominant-tag changes listed per stream
const LABEL_WIDTH = 120;      // heatmap: CSS pixels for the tag names
const AXIS_HEIGHT = 18;       // heatmap: CSS pixels for the time axis
const STALE_AFTER_S = 10;     // as monitor.history.STALE_AFTER_S
const AUTO_OVERVIEW_STREAMS = 4;  // "auto" view: one row per stream beyond this many
const MAX_FEED = 50;          // events kept in the feed (all streams)
const LATE_AFTER_HOPS = 4;    // as tools.dashboard.LATE_AFTER_HOPS
const BEHIND_AFTER_S = 2;     // as monitor.history.BEHIND_AFTER_S
// viridis, 5 stops
const COLORMAP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

const params = new URLSearchParams(window.location.search);
const token = params.get("token");
const streams = new Map();    // stream id -> state
let historySeconds = 60;
let updatesSeen = 0;
let viewChoice = ["auto", "overview", "detail"].includes(params.get("view")) ? params.get("view") : "auto";

function colour(value) {
  const x = Math.min(1, Math.max(0, value)) * (COLORMAP.length - 1);
  const i = Math.min(COLORMAP.length - 2, Math.floor(x));
  const f = x - i;
  const [a, b] = [COLORMAP[i], COLORMAP[i + 1]];
  return `rgb(${a.map((c, k) => Math.round(c + (b[k] - c) * f)).join(",")})`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

function audioTime(seconds) {
  const m = Math.floor(seconds / 60);
  const s = (seconds - 60 * m).toFixed(1).padStart(4, "0");
  return `${m}:${s}`;
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// -- one stream ---------------------------------------------------------------------------

function createStream(id) {
  const template = document.getElementById("stream-template");
  const section = template.content.firstElementChild.cloneNode(true);
  section.dataset.stream = id;
  section.querySelector(".stream-name").textContent = id;
  section.querySelector(".history-seconds").textContent = String(historySeconds);
  const bars = section.querySelector(".bars");
  for (let i = 0; i < TOP_TAGS; i++) {
    const row = el("li", "bar");
    row.append(el("span", "name"), el("span", "track"), el("span", "value"));
    row.querySelector(".track").append(el("span", "fill"));
    bars.append(row);
  }
  const main = document.getElementById("streams");
  const after = [...main.querySelectorAll("section.stream")].find((s) => s.dataset.stream > id);
  main.insertBefore(section, after || null);
  document.getElementById("empty").hidden = true;
  const row = document.getElementById("row-template").content.firstElementChild.cloneNode(true);
  row.dataset.stream = id;
  row.querySelector(".row-name").textContent = id;
  row.querySelector(".row-name").title = id;
  const overview = document.getElementById("overview");
  const rowAfter = [...overview.children].find((r) => r.dataset.stream > id);
  overview.insertBefore(row, rowAfter || null);
  const state = {
    id, section, row, latest: null, history: [], changes: [], arrivedAt: 0, drawPending: false,
    status: {}, silentSince: null, downSince: null, lastEvent: null,
  };
  streams.set(id, state);
  applyView();
  return state;
}

function removeStream(id) {
  const state = streams.get(id);
  if (!state) return;
  state.section.remove();
  state.row.remove();
  streams.delete(id);
  document.getElementById("empty").hidden = streams.size > 0;
  applyView();
  drawAlarms();
}

// -- views: a panel per stream, or one row per stream ---------------------------------------

function overviewActive() {
  return viewChoice === "overview" || (viewChoice === "auto" && streams.size > AUTO_OVERVIEW_STREAMS);
}

function applyView() {
  const on = overviewActive();
  const was = document.body.dataset.view;
  document.body.dataset.view = on ? "overview" : "detail";
  document.getElementById("overview").hidden = !on || streams.size === 0;
  for (const state of streams.values()) state.section.hidden = on;
  for (const button of document.querySelectorAll(".views button")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === viewChoice));
  }
  if (was === "overview" && !on) streams.forEach(scheduleHeatmap);
}

function setView(choice) {
  viewChoice = choice;
  const url = new URL(window.location.href);
  if (choice === "auto") url.searchParams.delete("view"); else url.searchParams.set("view", choice);
  window.history.replaceState(null, "", url);
  applyView();
}

// One stream's row: state, content, level, dominant tag, and what is on air (alarms first).
function drawRow(state) {
  const row = state.row;
  const u = state.latest;
  const status = state.status;
  const content = status.content ?? (u ? u.content : null);
  const level = status.level_dbfs ?? (u ? u.level_dbfs : null);
  row.querySelector(".row-content").textContent = content || "";
  row.querySelector(".row-content").dataset.content = content || "";
  row.querySelector(".row-level").textContent =
    level === null || level === undefined ? "" : `${level.toFixed(0)} dB`;
  if (u && u.dominant) {
    const p = u.smoothed[u.tags.indexOf(u.dominant)];
    row.querySelector(".row-dominant").textContent = `${u.dominant} ${p.toFixed(2)}`;
    row.dataset.dominant = u.dominant;
  }
  row.dataset.silent = String(Boolean(status.silent));
  row.dataset.sourceDown = String(Boolean(status.source_down));
  const onAir = row.querySelector(".row-on-air");
  onAir.className = "row-on-air";
  if (status.silent) {
    onAir.classList.add("alarm-text");
    onAir.textContent = `DEAD AIR${state.silentSince ? ` since ${clock(state.silentSince)}` : ""}`;
  } else if (status.source_down) {
    onAir.classList.add("alarm-text");
    onAir.textContent = `SOURCE DOWN${state.downSince ? ` since ${clock(state.downSince)}` : ""}`;
  } else if (status.title) {
    onAir.textContent = `♪ ${status.title}`;
  } else if (state.lastEvent) {
    onAir.textContent = `${clock(began(state.lastEvent))} ${eventText(state.lastEvent)}`;
  } else {
    onAir.textContent = "";
  }
  onAir.title = onAir.textContent;
}

function drawAlarms() {
  let count = 0;
  let behind = 0;
  for (const state of streams.values()) {
    if (state.status.silent || state.status.source_down) count += 1;
    if (state.row.dataset.status === "behind") behind += 1;  // as drawHealth found it
  }
  const node = document.getElementById("alarms");
  node.hidden = count === 0;
  node.textContent = `${count} alarm${count === 1 ? "" : "s"}`;
  // Streams the worker tags far behind their audio: it has more than it can tag.
  const late = document.getElementById("behind");
  late.hidden = behind === 0;
  late.textContent = `${behind} behind`;
}

function hopSeconds(state) {
  const h = state.history;
  const diffs = [];
  for (let i = Math.max(1, h.length - 20); i < h.length; i++) diffs.push(h[i].end_s - h[i - 1].end_s);
  return median(diffs);
}

function drawBars(state) {
  const u = state.latest;
  const order = u.smoothed.map((p, i) => i).sort((a, b) => u.smoothed[b] - u.smoothed[a]);
  const rows = state.section.querySelectorAll(".bar");
  rows.forEach((row, rank) => {
    const i = order[rank];
    if (i === undefined) { row.hidden = true; return; }
    row.hidden = false;
    const p = u.smoothed[i];
    row.dataset.tag = u.tags[i];
    row.dataset.value = p.toFixed(4);
    row.querySelector(".name").textContent = u.tags[i];
    row.querySelector(".name").title = u.tags[i];
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".value").textContent = p.toFixed(2);
  });
}

function addChange(state, change) {
  state.changes.push(change);
  if (state.changes.length > MAX_CHANGES) state.changes.shift();
  const list = state.section.querySelector(".changes");
  const item = el("li");
  item.dataset.tag = change.tag;
  item.append(el("span", "when", `${clock(change.published_time)} · ${audioTime(change.end_s)}`));
  if (change.previous !== null) item.append(el("span", "from", `${change.previous} → `));
  else item.append(el("span", "from", "starts with "));
  item.append(el("span", "to", change.tag), el("span", "p", ` ${change.probability.toFixed(2)}`));
  list.prepend(item);
  while (list.children.length > MAX_CHANGES) list.lastElementChild.remove();
}

function drawHeatmap(state) {
  state.drawPending = false;
  const canvas = state.section.querySelector(".heatmap");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 640;
  const height = canvas.clientHeight || 240;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const h = state.history;
  if (!h.length || !state.latest) return;
  const tags = state.latest.tags;
  // rows: the tags with the highest mean over the visible history
  const mean = tags.map((_, i) => h.reduce((sum, e) => sum + e.probabilities[i], 0) / h.length);
  const rows = mean.map((m, i) => i).sort((a, b) => mean[b] - mean[a]).slice(0, HEATMAP_TAGS);
  let scale = 0.1;
  for (const e of h) for (const i of rows) scale = Math.max(scale, e.probabilities[i]);
  const plotWidth = width - LABEL_WIDTH;
  const rowHeight = (height - AXIS_HEIGHT) / rows.length;
  const end = h[h.length - 1].end_s;
  const start = end - historySeconds;
  const hop = hopSeconds(state) || 0.5;
  const columnWidth = Math.max(1, (plotWidth * hop) / historySeconds);
  const x = (t) => LABEL_WIDTH + ((t - start) / historySeconds) * plotWidth;
  for (const e of h) {
    const x1 = x(e.end_s);
    rows.forEach((i, r) => {
      ctx.fillStyle = colour(e.probabilities[i] / scale);
      ctx.fillRect(x1 - columnWidth, r * rowHeight, columnWidth + 0.5, rowHeight + 0.5);
    });
  }
  ctx.fillStyle = "#182028";
  ctx.fillRect(0, 0, LABEL_WIDTH, height);
  ctx.font = "12px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillStyle = "#e4e8ec";
  rows.forEach((i, r) => ctx.fillText(tags[i], 4, (r + 0.5) * rowHeight, LABEL_WIDTH - 8));
  ctx.fillStyle = "#8a96a3";
  ctx.textBaseline = "bottom";
  ctx.textAlign = "left";
  ctx.fillText(`-${historySeconds} s`, LABEL_WIDTH + 2, height - 2);
  ctx.textAlign = "center";
  ctx.fillText(`-${historySeconds / 2} s`, LABEL_WIDTH + plotWidth / 2, height - 2);
  ctx.textAlign = "right";
  ctx.fillText(`now (${audioTime(end)}) · full colour = ${scale.toFixed(2)}`, width - 2, height - 2);
  ctx.textAlign = "left";
  canvas.dataset.columns = String(h.length);
}

function scheduleHeatmap(state) {
  if (state.drawPending || document.body.dataset.view === "overview") return;
  state.drawPending = true;
  window.requestAnimationFrame(() => drawHeatmap(state));
}

function drawHealth(state, now) {
  const u = state.latest;
  if (!u) return;
  const node = state.section.querySelector(".health");
  const age = (now - state.arrivedAt) / 1000;
  const hop = hopSeconds(state) || 0.5;
  // "behind": updates come, but the worker tags the stream far behind its audio.
  const behind = (u.behind_s ?? 0) > BEHIND_AFTER_S;
  const status = age > STALE_AFTER_S ? "stale"
    : age > Math.max(1, LATE_AFTER_HOPS * hop) ? "late" : behind ? "behind" : "ok";
  node.dataset.status = status;
  state.row.dataset.status = status;
  const rowState = state.row.querySelector(".row-state");
  rowState.textContent = status;
  rowState.title = behind ? `tagged ${u.behind_s.toFixed(1)} s behind its audio · shed ${u.shed ?? 0}` : "";
  node.replaceChildren(
    el("span", "status", status === "behind" ? `behind ${u.behind_s.toFixed(1)} s` : status),
    document.createTextNode(` · updated ${age.toFixed(1)} s ago · latency ${(u.latency_s * 1000).toFixed(0)} ms`),
  );
  for (const name of ["gaps", "dropped", "shed", "missed", "restarts"]) {
    node.append(document.createTextNode(" · "));
    node.append(el("span", u[name] ? "bad" : "", `${name} ${u[name] ?? 0}`));
  }
}

function applyUpdate(state, u, arrivedAt) {
  if (state.latest && (u.seq <= state.latest.seq || u.end_s < state.latest.end_s)) {
    state.history = [];  // the stream started over
  }
  state.latest = u;
  state.arrivedAt = arrivedAt;
  state.history.push({ end_s: u.end_s, probabilities: u.probabilities });
  while (state.history.length && state.history[0].end_s < u.end_s - historySeconds) state.history.shift();
  state.section.dataset.seq = String(u.seq);
  state.section.dataset.dominant = u.dominant || "";
  state.section.querySelector(".stream-model").textContent =
    `${u.model} · ${audioTime(u.start_s)}–${audioTime(u.end_s)}`;
  drawBars(state);
  drawHealth(state, arrivedAt);
  drawContent(state, u);
  scheduleHeatmap(state);
}

// Keep the stream's status (content, level, title, dead air, source) from updates and events.
function mergeStatus(state, status) {
  for (const key of ["content", "level_dbfs", "title", "silent", "source_down"]) {
    if (status[key] !== undefined && status[key] !== null) state.status[key] = status[key];
  }
}

// What the stream plays: content and level of the latest window, the title, dead air.
function drawContent(state, status) {
  mergeStatus(state, status);
  const node = state.section.querySelector(".content");
  if (status.content !== undefined && status.content !== null) {
    const level = status.level_dbfs === null || status.level_dbfs === undefined
      ? "" : ` · ${status.level_dbfs.toFixed(1)} dBFS`;
    node.dataset.content = status.content;
    node.textContent = `${status.content}${level}`;
  }
  if (status.title !== undefined && status.title !== null) {
    state.section.querySelector(".now-playing").textContent = `♪ ${status.title}`;
  }
  if (status.silent !== undefined) state.section.dataset.silent = String(status.silent);
  if (status.source_down !== undefined) {
    state.section.dataset.sourceDown = String(status.source_down);
  }
  drawRow(state);
  drawAlarms();
}

function eventText(e) {
  switch (e.event) {
    case "now_playing": return `now playing: ${e.title}`;
    case "content_change": return `${e.previous} → ${e.content}`;
    case "silence_start": return `dead air (below ${e.threshold_dbfs} dBFS)`;
    case "silence_end": return `audio back after ${e.duration_s.toFixed(1)} s`;
    case "source_down": return `source down: ${e.reason}`;
    case "source_up": return `source up after ${e.outage_s.toFixed(1)} s`;
    default: return e.event;
  }
}

// Where what an event reports began, as [Unix time, audio time]: the server's
// began_time and began_at_s (monitor.history.began_at: dead air from when the quiet
// began, a content change from where the content changed).
function beganAt(e) {
  return [
    typeof e.began_time === "number" ? e.began_time : e.time,
    typeof e.began_at_s === "number" ? e.began_at_s : e.at_s,
  ];
}

function began(e) {
  return beganAt(e)[0];
}

function noteEvent(state, e) {
  state.lastEvent = e;
  if (e.event === "silence_start") state.silentSince = began(e);
  if (e.event === "source_down") state.downSince = began(e);
}

function addFeed(e) {
  const feed = document.getElementById("feed");
  const item = el("li");
  item.dataset.event = e.event;
  item.dataset.stream = e.stream;
  item.append(el("span", "when", clock(began(e))), el("span", "feed-stream", e.stream),
    el("span", "what", eventText(e)));
  feed.prepend(item);
  while (feed.children.length > MAX_FEED) feed.lastElementChild.remove();
}

function addEvent(state, e) {
  noteEvent(state, e);
  const list = state.section.querySelector(".events");
  const item = el("li");
  item.dataset.event = e.event;
  const [time, atS] = beganAt(e);
  item.append(el("span", "when", `${clock(time)} · ${audioTime(atS)} `), el("span", "what", eventText(e)));
  list.prepend(item);
  while (list.children.length > MAX_CHANGES) list.lastElementChild.remove();
}

// -- events -------------------------------------------------------------------------------

function onSnapshot(snapshot) {
  historySeconds = snapshot.history_seconds;
  for (const id of [...streams.keys()]) removeStream(id);
  const now = performance.now();
  for (const [id, s] of Object.entries(snapshot.streams)) {
    const state = createStream(id);
    state.history = s.history;
    for (const change of s.changes) addChange(state, change);
    state.history.pop();  // applyUpdate adds the latest again
    applyUpdate(state, s.latest, now);
    for (const e of s.status.events) addEvent(state, e);
    drawContent(state, s.status);
  }
  document.getElementById("feed").replaceChildren();
  Object.values(snapshot.streams).flatMap((s) => s.status.events)
    .sort((a, b) => a.time - b.time).slice(-MAX_FEED).forEach(addFeed);
  drawSummary();
}

function onUpdate(u) {
  updatesSeen += 1;
  const state = streams.get(u.stream) || createStream(u.stream);
  applyUpdate(state, u, performance.now());
  if (u.change) addChange(state, u.change);
  drawSummary();
}

function onEvent(payload) {
  const state = streams.get(payload.event.stream) || createStream(payload.event.stream);
  addEvent(state, payload.event);
  addFeed(payload.event);
  drawContent(state, payload.status);
}

function drawSummary() {
  const n = streams.size;
  document.getElementById("summary").textContent =
    `${n} stream${n === 1 ? "" : "s"} · ${updatesSeen} updates since this page opened`;
}

function setConnection(state, text) {
  const node = document.getElementById("connection");
  node.dataset.state = state;
  node.textContent = text;
}

function connect() {
  const url = token ? `events?token=${encodeURIComponent(token)}` : "events";
  const source = new EventSource(url);
  source.onopen = () => setConnection("live", "live");
  source.onerror = () => setConnection("connecting", "reconnecting…");
  source.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
  source.addEventListener("update", (e) => onUpdate(JSON.parse(e.data)));
  source.addEventListener("forget", (e) => removeStream(JSON.parse(e.data).stream));
  source.addEventListener("event", (e) => onEvent(JSON.parse(e.data)));
}

window.setInterval(() => {
  const now = performance.now();
  for (const state of streams.values()) drawHealth(state, now);
  drawAlarms();
  document.getElementById("clock").textContent = clock(Date.now() / 1000);
}, 500);
for (const button of document.querySelectorAll(".views button")) {
  button.addEventListener("click", () => setView(button.dataset.view));
}
applyView();
window.addEventListener("resize", () => streams.forEach(scheduleHeatmap));
connect();
