// The live dashboard page a node serves at GET /dashboard: one self-contained HTML document (no
// CDN, no build step, no dependency) that polls ./v1/dashboard every DASHBOARD_POLL_INTERVAL_MS
// and renders leader, term, members with lag and state, agents per node, inbox depths, message
// and commit rates, dead letters, spool, rounds in flight and coordinator events. Every value is
// written with textContent, never as HTML, so agent and node ids cannot inject markup.

/** How often the page asks its node for a snapshot. */
export const DASHBOARD_POLL_INTERVAL_MS = 1000;
/**
 * The page waits at least this many times the node's snapshot build time between polls, so a
 * node whose bus is large (a slow build) spends at most 1/20 of a core on one open dashboard.
 */
export const DASHBOARD_POLL_COST_FACTOR = 20;

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cfn dashboard</title>
<style>
  :root { color-scheme: light dark; --ok: #2e9d4f; --bad: #d0342c; --warn: #d08a1c; --muted: #888; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5rem 2rem; }
  header { display: flex; gap: 1.5rem; align-items: baseline; flex-wrap: wrap; border-bottom: 1px solid #8884; padding: .8rem 0; }
  h1 { font-size: 1.2rem; margin: 0; }
  h2 { font-size: 1rem; margin: 1.4rem 0 .4rem; }
  .tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: .6rem; margin-top: 1rem; }
  .tile { border: 1px solid #8884; border-radius: 6px; padding: .5rem .7rem; }
  .tile .v { font-size: 1.4rem; font-variant-numeric: tabular-nums; }
  .tile .k { color: var(--muted); font-size: .8rem; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: .2rem .6rem .2rem 0; border-bottom: 1px solid #8882; }
  th { color: var(--muted); font-weight: 500; }
  .up, .active, .leader { color: var(--ok); } .down, .bad, .unreachable { color: var(--bad); } .warn { color: var(--warn); }
  .bar { background: #4a90d9; height: .6rem; display: inline-block; vertical-align: middle; }
  #error { color: var(--bad); }
  .muted { color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>cfn · <span id="node">…</span></h1>
  <span>cluster <b id="cluster">…</b></span>
  <span>role <b id="role">…</b></span>
  <span>leader <b id="leader">…</b></span>
  <span>term <b id="term">…</b></span>
  <span class="muted">updated <span id="updated">never</span></span>
  <span id="error"></span>
</header>
<div class="tiles" id="tiles"></div>
<h2>Members <span class="muted" id="members-note"></span></h2>
<table><thead><tr><th>id</th><th>state</th><th>role</th><th>match</th><th>lag</th><th>last heard</th><th>agents up</th><th>agents down</th><th>teams</th></tr></thead><tbody id="members"></tbody></table>
<h2>Inboxes on this node <span class="muted" id="inbox-note"></span></h2>
<table><thead><tr><th>agent</th><th>depth</th><th></th><th>claimed</th><th>dead letters</th><th>last seen</th></tr></thead><tbody id="inboxes"></tbody></table>
<h2>Teams</h2>
<table><thead><tr><th>team</th><th>coordinator</th><th>epoch</th><th>checkpoint seq</th></tr></thead><tbody id="teams"></tbody></table>
<h2>Rounds in flight</h2>
<table><thead><tr><th>swarm</th><th>round</th><th>checkpoint records</th><th>last log index</th></tr></thead><tbody id="rounds"></tbody></table>
<h2>Cross-node spool</h2>
<table><thead><tr><th>destination</th><th>pending</th><th>in flight</th><th>acked</th></tr></thead><tbody id="spool"></tbody></table>
<h2>Coordinator events</h2>
<table><thead><tr><th>log index</th><th>event</th></tr></thead><tbody id="events"></tbody></table>
<script>
"use strict";
const POLL_MS = ${DASHBOARD_POLL_INTERVAL_MS};
const POLL_COST_FACTOR = ${DASHBOARD_POLL_COST_FACTOR};
let delayMs = POLL_MS;
let previous = null;
const $ = (id) => document.getElementById(id);
// Match index and lag are the leader's replication progress: a follower does not know them.
function membersNote(s) {
  const note = $("members-note");
  note.replaceChildren();
  const leader = s.members.find((m) => m.leader);
  if (!leader || leader.id === s.node.id) return;
  note.append("match and lag are tracked by the leader");
  const api = String(leader.apiUrl || "");
  if (api.startsWith("http://") || api.startsWith("https://")) {
    const link = document.createElement("a");
    link.href = (api.endsWith("/") ? api.slice(0, -1) : api) + "/dashboard";
    link.textContent = leader.id + "'s dashboard";
    note.append(": ", link);
  }
}

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "—" : String(value);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}
function fill(id, items, render) {
  const body = $(id);
  const rows = items.map((item) => { const row = document.createElement("tr"); render(row, item); return row; });
  if (rows.length === 0) { const row = document.createElement("tr"); cell(row, "none", "muted").colSpan = 9; rows.push(row); }
  body.replaceChildren(...rows);
}
function ago(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(1) + " s";
}
function rate(now, before, key) {
  if (!before) return "…";
  const seconds = (now.takenAtMs - before.takenAtMs) / 1000;
  if (seconds <= 0) return "…";
  const value = key === "commit" ? now.raft.commit - before.raft.commit : now.counters[key] - before.counters[key];
  return (Math.max(0, value) / seconds).toFixed(value / seconds < 10 ? 1 : 0) + "/s";
}
function render(s) {
  const raft = s.raft || {};
  $("node").textContent = s.node.id + " (" + s.node.state + ")";
  $("cluster").textContent = s.node.clusterId;
  $("role").textContent = raft.role;
  $("leader").textContent = raft.leader || "none";
  $("leader").className = raft.leader ? "leader" : "bad";
  $("term").textContent = raft.term;
  const up = s.members.reduce((n, m) => n + m.agentsUp, 0);
  const down = s.members.reduce((n, m) => n + m.agentsDown, 0);
  const tiles = [
    ["commit index", raft.commit], ["commits", rate(s, previous, "commit")],
    ["messages sent", rate(s, previous, "busMessagesSent")], ["messages received", rate(s, previous, "busMessagesReceived")],
    ["cross-node in", rate(s, previous, "deliveryInbound")], ["cross-node acked", rate(s, previous, "deliveryAcked")],
    ["agents up / down", up + " / " + down], ["inbox depth (total)", s.inboxes.depthTotal],
    ["dead letters", s.inboxes.deadLettersTotal], ["inbox overflows", s.counters.busInboxOverflows],
    ["spooled for peers", s.spool.spooled], ["leader changes", s.counters.raftLeaderChanges],
  ];
  $("tiles").replaceChildren(...tiles.map(([k, v]) => {
    const tile = document.createElement("div"); tile.className = "tile";
    const value = document.createElement("div"); value.className = "v"; value.textContent = String(v);
    const key = document.createElement("div"); key.className = "k"; key.textContent = k;
    if ((k === "dead letters" || k === "inbox overflows") && Number(v) > 0) value.classList.add("warn");
    tile.append(value, key); return tile;
  }));
  fill("members", s.members, (row, m) => {
    cell(row, m.id); cell(row, m.state, m.state);
    cell(row, m.leader ? "leader" : m.voter ? "voter" : "learner", m.leader ? "leader" : "");
    cell(row, m.match); cell(row, m.lag, m.lag > 100 ? "warn" : ""); cell(row, ago(m.lastHeardMsAgo));
    cell(row, m.agentsUp, "up"); cell(row, m.agentsDown, m.agentsDown > 0 ? "down" : ""); cell(row, (m.teams || []).join(", "));
  });
  membersNote(s);
  const maxDepth = Math.max(1, ...s.inboxes.deepest.map((a) => a.inboxDepth + a.claimed));
  $("inbox-note").textContent = s.inboxes.agents + " agents, " + s.inboxes.claimedTotal + " claimed" +
    (s.inboxes.agents > s.inboxes.deepest.length ? "; the " + s.inboxes.deepest.length + " deepest shown" : "");
  fill("inboxes", s.inboxes.deepest, (row, a) => {
    cell(row, a.agentId); cell(row, a.inboxDepth);
    const bar = document.createElement("span"); bar.className = "bar";
    bar.style.width = Math.round(((a.inboxDepth + a.claimed) / maxDepth) * 12) + "rem";
    cell(row, "").appendChild(bar);
    cell(row, a.claimed); cell(row, a.deadLetters, a.deadLetters > 0 ? "warn" : "");
    cell(row, a.lastSeenMs === null ? "never" : ago(s.takenAtMs - a.lastSeenMs) + " ago");
  });
  fill("teams", s.teams, (row, t) => {
    cell(row, t.id); cell(row, t.coordinator || "unassigned", t.coordinator ? "" : "bad");
    cell(row, t.epoch); cell(row, t.checkpoint ? t.checkpoint.seq : null);
  });
  fill("rounds", s.rounds, (row, r) => { cell(row, r.scope); cell(row, r.round); cell(row, r.records); cell(row, r.lastIndex); });
  fill("spool", s.spool.streams, (row, x) => { cell(row, x.dest); cell(row, x.pending); cell(row, x.inflight); cell(row, x.acked); });
  fill("events", s.events, (row, e) => {
    cell(row, e.index);
    const { index, ...rest } = e;
    cell(row, JSON.stringify(rest));
  });
  $("updated").textContent = new Date(s.takenAtMs).toLocaleTimeString();
}
async function poll() {
  try {
    const response = await fetch("v1/dashboard", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    const snapshot = await response.json();
    render(snapshot);
    previous = snapshot;
    delayMs = Math.max(POLL_MS, Math.round(snapshot.buildMs * POLL_COST_FACTOR));
    $("error").textContent = "";
  } catch (error) {
    $("error").textContent = "node unreachable: " + error.message;
  } finally {
    setTimeout(poll, delayMs);
  }
}
poll();
</script>
</body>
</html>
`;
