// The layerswarm dashboard: renders GET /v1/swarm/events snapshots; chats
// through the gateway's own /v1/chat/completions. No dependencies, no CDN.
"use strict";
const $ = (s) => document.querySelector(s);
const short = (p) => (p ? String(p).slice(0, 6) + "…" + String(p).slice(-4) : "?");
const mib = (b) => (b === undefined ? "–" : b >= 2 ** 30 ? (b / 2 ** 30).toFixed(1) + " GiB" : (b / 2 ** 20).toFixed(0) + " MiB");
// Everything in a snapshot comes from nodes, which may be hostile (a node named
// "<img src=x onerror=...>"): markup is built only with html``, which escapes
// every value put into it; only other html`` results pass through as markup.
class Html { constructor(s) { this.s = s; } toString() { return this.s; } }
const esc = (v) => String(v).replace(/[&<>"'`]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "`": "&#96;" }[c]));
const show = (v) => (v instanceof Html ? v.s : Array.isArray(v) ? v.map(show).join("") : esc(v ?? ""));
const html = (strings, ...vals) => new Html(strings.reduce((out, s, i) => out + s + (i < vals.length ? show(vals[i]) : ""), ""));
const keyInput = $("#api-key");
keyInput.value = localStorage.getItem("layerswarm-key") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("layerswarm-key", keyInput.value); connect(); });
const colors = ["#58a6ff", "#3fb950", "#d29922", "#bc8cff", "#39c5cf", "#ff7b72", "#e3b341", "#79c0ff"]; // style.css .c0 to .c7
const nodeColor = new Map();
const colorIndex = (peer) => { if (!nodeColor.has(peer)) nodeColor.set(peer, nodeColor.size % colors.length); return nodeColor.get(peer); };
const colorOf = (peer) => colors[colorIndex(peer)];

function renderMap(s) {
  const svg = $("#map"), L = Number(s.model.layers), W = svg.clientWidth || 800;
  const nodes = s.nodes, rowH = 14, top = 18, H = top + rowH * Math.max(1, nodes.length) + 4;
  svg.setAttribute("height", H); svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const x = (l) => 110 + ((W - 120) * Number(l)) / L;
  const parts = [];
  // coverage strip: red = a gap, darker = held by several nodes
  s.coverage.perLayer.forEach((c, i) => {
    const fill = c === 0 ? "#f85149" : c === 1 ? "#2ea043" : "#1a7f37";
    parts.push(html`<rect x="${x(i)}" y="2" width="${Math.max(1, x(i + 1) - x(i) - 1)}" height="10" fill="${fill}"><title>layer ${i}: ${c} node(s)</title></rect>`);
  });
  parts.push(html`<text x="0" y="11" fill="#8a93a0" font-size="10">coverage</text>`);
  nodes.forEach((n, r) => {
    const y = top + r * rowH;
    parts.push(html`<text x="0" y="${y + 10}" fill="#8a93a0" font-size="10">${short(n.peer)}</text>`);
    for (const rg of n.ranges) {
      const lost = n.state === "lost" || n.state === "banned";
      parts.push(html`<rect data-testid="map-range" x="${x(rg.start)}" y="${y}" width="${x(rg.end) - x(rg.start) - 1}" height="${rowH - 3}" rx="2" fill="${lost ? "#444" : colorOf(n.peer)}" opacity="${lost ? 0.5 : 0.9}"><title>[${rg.start}, ${rg.end})</title></rect>`);
    }
    if (n.loading) parts.push(html`<rect x="${x(0)}" y="${y + rowH - 4}" width="${((x(L) - x(0)) * n.loading.bytes) / Math.max(1, n.loading.totalBytes)}" height="2" fill="#d29922"/>`);
  });
  for (let l = 0; l <= L; l += Math.max(1, Math.ceil(L / 16))) parts.push(html`<text x="${x(l)}" y="${H}" fill="#555" font-size="9">${l}</text>`);
  svg.innerHTML = html`${parts}`;
}

const rangesText = (ranges, sep) => ranges.map((r) => `[${r.start},${sep}${r.end})`).join(" ");

function render(s) {
  $("#model").textContent = `${s.model.name} · ${s.model.layers} layers · dim ${s.model.dim}${s.model.id ? ` · model ${s.model.id.slice(0, 12)}…` : ""}`;
  $("#tps").textContent = s.totals.tokPerSec;
  $("#reqs").textContent = s.totals.requests;
  $("#active").textContent = s.totals.activeRequests;
  const cov = $("#coverage");
  cov.textContent = s.coverage.covered ? "all layers covered" : "missing " + rangesText(s.coverage.missing, "");
  cov.className = "badge " + (s.coverage.covered ? "ok" : "bad");
  const sp = s.totals.speculation;
  if (sp) $("#spec").textContent = sp.drafted ? `${sp.accepted} / ${sp.drafted}` : "–";
  const v = s.totals.verify;
  if (v) {
    $("#verify").textContent = v.mode === "off" ? "not verifying nodes" : `${v.mode === "strict" ? "strict: every step on two routes" : "auditing"} · ${v.audits} audits · ${v.bans} banned`;
    $("#verify").className = "badge " + (v.bans ? "bad" : v.mode === "off" ? "" : "ok");
  }
  renderMap(s);
  $("#nodes tbody").innerHTML = html`${s.nodes.map((n) => html`<tr data-testid="node" data-peer="${n.peer}" data-state="${n.state}" data-ranges="${n.ranges.map((r) => r.start + ":" + r.end).join(",")}">
    <td><span class="c${colorIndex(n.peer)}">■</span> <span data-testid="node-name">${n.name || ""}</span> <span class="muted">${short(n.peer)}</span></td>
    <td>${rangesText(n.ranges, " ")}</td>
    <td class="state-${n.state}">${n.state}${n.banned ? html`<br><span data-testid="node-banned" class="differs" title="${n.banned.reason}">${n.banned.proven ? "proven: " : ""}${n.banned.reason} (after ${n.banned.steps} steps)</span>` : ""}${n.loading ? ` ${n.loading.layers}/${n.loading.of}` : ""}${(n.differs || []).length ? html`<br><span data-testid="node-differs" class="differs" title="${n.differs.map((d) => `layer ${d.layer}: its ${d.theirs}, ours ${d.ours}`).join("\n")}">other weights: layer${n.differs.length > 1 ? "s" : ""} ${n.differs.map((d) => d.layer).join(", ")} (not used for them)</span>` : ""}</td>
    <td>${mib(n.memory.freeBytes)}</td><td>${mib(n.memory.kvUsedBytes)} / ${mib(n.memory.kvBudgetBytes)}</td>
    <td>${n.layersPerSec} layers/s</td><td>${n.rttMs === undefined ? "–" : n.rttMs + " ms"}</td><td data-testid="node-reach" class="reach-${n.reach || "none"}">${n.reach || "–"}</td>
    <td>${(n.links || []).length ? (n.links || []).map((l, i) => html`${i ? html`<br>` : ""}→${short(l.peer)} ${l.rttMs} ms`) : "–"}</td><td>${n.batchMs === undefined ? "–" : n.batchMs + " ms"}</td>
    <td>${n.sessions}</td><td class="addr" title="${n.addrs.join(" ")}">${n.addrs[0] || ""}</td></tr>`)}`;
  $("#sessions tbody").innerHTML = s.sessions.length ? html`${s.sessions.map((x) => {
    const at = new Set(x.inflight.map((f) => f.stage));
    const hops = x.route.map((h, i) => html`<span class="hop${at.has(i) ? " now" : ""}" title="${h.peer}">${at.has(i) ? "▶" : ""}${short(h.peer)} ${h.start}-${h.end}</span>`);
    const chunks = x.inflight.map((f) => `${f.pos}+${f.T}`).join(", ");
    return html`<tr data-testid="session" data-route="${x.route.map((h) => h.peer).join(",")}"><td>${x.id}${x.epoch ? html` <span class="muted">(rerouted ×${x.epoch})</span>` : ""}</td><td>${x.positions}</td><td>${x.tokPerSec}</td><td>${hops} <span class="muted">${chunks}</span></td></tr>`;
  })}` : html`<tr><td colspan="4" class="muted">no active sessions</td></tr>`;
  drawChart(s.series);
  $("#events").innerHTML = html`${s.events.slice().reverse().map((e) => html`<li data-testid="event" class="ev-${e.type}">${new Date(e.t).toLocaleTimeString()} ${e.type} ${describe(e)}</li>`)}`;
}

function describe(e) {
  switch (e.type) {
    case "node-joined": return `${short(e.peer)} with ${rangesText(e.ranges, "")}`;
    case "node-lost": return `${short(e.peer)}: ${e.reason}`;
    case "node-loaded": return `${short(e.peer)} now holds ${rangesText(e.ranges, "")}`;
    case "reroute": return `${String(e.session).slice(0, 4)}… ${e.from.map(short).join("→")} ⇒ ${e.to.map(short).join("→")}`;
    case "replay": return `${String(e.session).slice(0, 4)}… ${e.positions} positions in ${e.ms} ms`;
    case "node-banned": return `${short(e.peer)}: ${e.reason}${e.proven ? " (fraud proof)" : ""} after ${e.steps} steps`;
    case "audit": return `${String(e.session).slice(0, 4)}… ${e.verdict}${e.peer ? ` ${short(e.peer)}` : ""}`;
    default: return "";
  }
}

function drawChart(series) {
  const c = $("#chart"), ctx = c.getContext("2d"), W = c.width, H = c.height;
  ctx.clearRect(0, 0, W, H);
  if (!series.length) return;
  const t1 = Date.now(), t0 = t1 - 600_000;
  const line = (key, color) => {
    const vals = series.filter((p) => p[key] !== null);
    const max = Math.max(1, ...vals.map((p) => p[key]));
    ctx.strokeStyle = color; ctx.beginPath();
    const pts = vals.map((p) => [((p.t - t0) / (t1 - t0)) * W, H - 4 - ((H - 18) * p[key]) / max]);
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
    ctx.fillStyle = color;
    for (const [x, y] of pts) ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    ctx.fillStyle = color; ctx.fillText(`max ${Math.round(max)}`, key === "tokPerSec" ? 4 : W - 70, 12);
  };
  line("tokPerSec", "#58a6ff");
  line("ttftMs", "#d29922");
}

let es;
function connect() {
  if (es) es.close();
  const key = keyInput.value;
  es = new EventSource("/v1/swarm/events" + (key ? "?api_key=" + encodeURIComponent(key) : ""));
  es.addEventListener("snapshot", (m) => { $("#conn").textContent = "live"; $("#conn").className = "badge ok"; render(JSON.parse(m.data)); });
  es.onerror = () => { $("#conn").textContent = "reconnecting…"; $("#conn").className = "badge bad"; };
}
connect();

const history = [];
$("#chat-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("#chat-input").value.trim();
  if (!text) return;
  $("#chat-input").value = "";
  history.push({ role: "user", content: text });
  const log = $("#chat-log");
  const mine = document.createElement("div");
  mine.className = "msg-user"; mine.textContent = "› " + text;
  log.appendChild(mine);
  const out = document.createElement("div");
  out.className = "msg-assistant"; out.dataset.testid = "chat-output"; out.dataset.done = "false";
  log.appendChild(out);
  const body = { messages: history, stream: true, max_tokens: Number($("#max-tokens").value) || 256 };
  if ($("#greedy").checked) body.temperature = 0;
  const headers = { "content-type": "application/json" };
  if (keyInput.value) headers.authorization = "Bearer " + keyInput.value;
  let reply = "";
  try {
    const r = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(body) });
    if (!r.ok) throw new Error((await r.json()).error.message);
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        const d = j.choices[0]?.delta?.content;
        if (d) { reply += d; out.textContent = reply; log.scrollTop = log.scrollHeight; }
      }
    }
    history.push({ role: "assistant", content: reply });
  } catch (e) {
    out.className = "msg-error"; out.textContent = (reply ? reply + "\n" : "") + "error: " + e.message;
  }
  out.dataset.done = "true";
});
