// Renders one run record {workflow, question, events, result} into a container.
// The same code serves the live page (events arrive over SSE) and the report file.
"use strict";
const LANE_LIMIT = 24;
function esc(s) { return String(s == null ? "" : s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c])); }
function renderRun(root, rec) {
  const ev = rec.events || [], res = rec.result;
  const nodes = new Map(), calls = new Map(), agents = new Map();
  let tokens = 0, ncalls = 0, tmax = 0, vote = null;
  const rounds = new Map();
  for (const e of ev) {
    const t = e.t || 0; tmax = Math.max(tmax, t);
    if (e.type === "node_started") nodes.set(e.node, "active");
    else if (e.type === "node_finished") nodes.set(e.node, "done");
    else if (e.type === "call_started") calls.set(e.key + "|" + e.agent, {agent: e.agent, start: t, end: null, tokens: 0, model: e.model});
    else if (e.type === "call_finished" || e.type === "call_failed" || e.type === "call_replayed") {
      const c = calls.get(e.key + "|" + e.agent) || {agent: e.agent, start: t, model: ""};
      c.end = t; c.tokens = (e.prompt_tokens || 0) + (e.completion_tokens || 0); c.failed = e.type === "call_failed";
      calls.set(e.key + "|" + e.agent, c); ncalls += 1; tokens += c.tokens;
    } else if (e.type === "turn" && e.round != null) {
      if (!rounds.has(e.round)) rounds.set(e.round, []);
      rounds.get(e.round).push(e);
    } else if (e.type === "vote") vote = e;
  }
  for (const c of calls.values()) {
    const a = agents.get(c.agent) || {name: c.agent, calls: []}; a.calls.push(c); agents.set(c.agent, a);
  }
  if (res) { ncalls = res.calls; tokens = res.usage.prompt_tokens + res.usage.completion_tokens; if (res.votes) vote = res.votes; }
  const saw = new Map();
  for (const turn of (res && res.transcript) || []) if (turn.round != null) saw.set(turn.round + "|" + turn.agent, turn.saw);
  const span = Math.max(tmax, (res && res.elapsed_s) || 0, 1e-6);
  let h = `<section class="stats"><span id="s-calls">${ncalls} calls</span> · <span id="s-tokens">${tokens} tokens</span> · <span id="s-elapsed">${span.toFixed(2)} s</span>`;
  h += !res ? ` · <i>running…</i>` : isResearch(res) ? ` · the report is above` : ` · answer <b id="answer">${esc(res.answer)}</b>`;
  h += `</section><section><h3>Graph</h3><div class="graph">`;
  for (const [n, st] of nodes) h += `<span class="node ${st}" data-node="${esc(n)}">${esc(n)}</span>`;
  h += `</div></section><section><h3>Agents</h3><div class="lanes">`;
  const sorted = [...agents.values()].sort((x, y) => y.calls.length - x.calls.length);
  const shown = sorted.slice(0, LANE_LIMIT), rest = sorted.slice(LANE_LIMIT);
  const bar = c => { const end = c.end == null ? tmax : c.end; const l = 100 * c.start / span, w = Math.max(0.5, 100 * (end - c.start) / span);
    return `<span class="call${c.end == null ? " open" : ""}${c.failed ? " failed" : ""}" style="left:${l}%;width:${w}%" title="${esc(c.model)} ${c.start.toFixed(3)}–${end.toFixed(3)} s, ${c.tokens} tokens"></span>`; };
  for (const a of shown) h += `<div class="lane" data-agent="${esc(a.name)}"><span class="who">${esc(a.name)} (${a.calls.length})</span><span class="track">${a.calls.map(bar).join("")}</span></div>`;
  if (rest.length) { const n = rest.reduce((s, a) => s + a.calls.length, 0);
    h += `<div class="lane summary" data-more="${rest.length}"><span class="who">${rest.length} more agents (${n} calls)</span><span class="track"></span></div>`; }
  h += `</div></section><section><h3>Rounds</h3>`;
  for (const [r, turns] of [...rounds].sort((x, y) => x[0] - y[0])) {
    h += `<div class="round" data-round="${r}"><h4>Round ${r}</h4><table><tr><th>agent</th><th>answer</th><th>saw</th></tr>`;
    for (const t of turns) { const s = saw.get(r + "|" + t.agent);
      h += `<tr class="turn" data-agent="${esc(t.agent)}"><td>${esc(t.agent)}</td><td class="ans" title="${esc(t.text)}">${esc(t.answer)}</td><td>${esc(Array.isArray(s) ? s.join(", ") : (s == null ? "" : s))}</td></tr>`; }
    h += `</table></div>`;
  }
  h += `</section><section><h3>Vote</h3>`;
  if (vote && vote.counts) {
    const entries = Object.entries(vote.counts).sort((x, y) => y[1] - x[1]); const top = Math.max(...entries.map(e => e[1]), 1);
    h += `<svg class="vote" width="420" height="${24 * entries.length + 4}" role="img">`;
    entries.forEach(([k, v], i) => { h += `<g class="bar" data-answer="${esc(k)}" data-count="${v}"><text x="0" y="${24 * i + 16}">${esc(k).slice(0, 16)}</text><rect x="120" y="${24 * i + 4}" height="16" width="${250 * v / top}" class="${k === vote.winner ? "win" : ""}"></rect><text x="${125 + 250 * v / top}" y="${24 * i + 16}">${v}</text></g>`; });
    h += `</svg>`;
  } else h += `<p>no vote yet</p>`;
  root.innerHTML = (isResearch(res) ? renderResearch(rec) : "") + h + `</section>`;
  root.onclick = e => {
    const a = e.target.closest("a.cite");
    if (a) { e.preventDefault(); showPassage(root, rec, Number(a.dataset.n)); }
  };
}

// A research run (kind: research): the report with [n] citations that open the cited
// passage, and the verifier's verdict on each claim.
function isResearch(res) { return !!(res && res.details && Array.isArray(res.details.citations)); }
function claimVerdicts(res) {
  const by = new Map();
  for (const v of res.details.verdicts || []) {
    const c = by.get(v.claim) || {claim: v.claim, supported: true, checks: []};
    c.supported = c.supported && !!v.supported; c.checks.push(v); by.set(v.claim, c);
  }
  return by;
}
function citeLinks(html) { return html.replace(/\[(\d+)\]/g, (m, n) => `<a class="cite" href="#cite-${n}" data-n="${n}">[${n}]</a>`); }
function inlineMd(line, claims) {
  let s = esc(line);
  for (const c of claims.values()) {
    const e = esc(c.claim), at = s.indexOf(e);
    if (at < 0) continue;
    const p = c.checks.map(v => Number(v.p_yes).toFixed(2)).join(", ");
    s = s.slice(0, at) + `<span class="claim-s ${c.supported ? "supported" : "unsupported"}" title="P(yes) ${p}">` + e + `</span>` + s.slice(at + e.length);
  }
  s = citeLinks(s);
  return s.replace(/\*\*([^*]+)\*\*/g, "<b>$1</b>").replace(/\*([^*]+)\*/g, "<em>$1</em>");
}
function renderMarkdown(text, claims) {
  let h = "", para = [], list = null, bullets = null, sources = false;
  const flush = () => {
    if (para.length) { h += `<p>${para.map(l => inlineMd(l, claims)).join(" ")}</p>`; para = []; }
    if (list) { h += `<ol>${list.join("")}</ol>`; list = null; }
    if (bullets) { h += `<ul>${bullets.join("")}</ul>`; bullets = null; }
  };
  for (const line of String(text || "").split("\n")) {
    const head = /^(#{1,3})\s+(.*)$/s.exec(line), item = /^(\d+)\.\s+(.*)$/s.exec(line), bullet = /^\s*[-*]\s+(.*)$/s.exec(line);  // s: a U+2028 in a line is text
    if (head) { flush(); sources = head[1] === "##" && head[2].trim() === "Sources"; h += `<h${head[1].length + 3}>${inlineMd(head[2], claims)}</h${head[1].length + 3}>`; }
    else if (item) {
      if (para.length) flush();
      list = list || [];
      list.push(sources ? `<li value="${item[1]}" id="cite-${item[1]}"><a class="cite source" href="#cite-${item[1]}" data-n="${item[1]}">${esc(item[2])}</a></li>` : `<li value="${item[1]}">${inlineMd(item[2], claims)}</li>`);
    } else if (bullet) {
      if (para.length || list) flush();
      bullets = bullets || [];
      bullets.push(`<li>${inlineMd(bullet[1], claims)}</li>`);
    } else if (!line.trim()) flush();
    else para.push(line);
  }
  flush();
  return h;
}
function renderResearch(rec) {
  const res = rec.result, d = res.details, claims = claimVerdicts(res);
  let h = `<section class="research"><h3>Research report</h3><div class="report">${renderMarkdown(res.answer, claims)}</div>`;
  h += `<div class="passage" hidden></div>`;
  const n = [...claims.values()], ok = n.filter(c => c.supported).length;
  h += `<h4>Claims</h4><p class="claims-summary">${ok} of ${n.length} claims supported by their cited passages</p><table class="claims"><tr><th>claim</th><th>cited</th><th>P(yes)</th><th>verdict</th></tr>`;
  for (const c of n) {
    const cites = c.checks.map(v => { const s = (d.citations || []).find(x => x.passage_id === v.passage); return s ? `<a class="cite" href="#cite-${s.number}" data-n="${s.number}">[${s.number}]</a>` : esc(v.passage); }).join(" ");
    h += `<tr class="claim ${c.supported ? "supported" : "unsupported"}" data-supported="${c.supported}"><td>${esc(c.claim.replace(/\s*\[\d+\]/g, ""))}</td><td>${cites}</td><td>${c.checks.map(v => Number(v.p_yes).toFixed(2)).join(", ")}</td><td>${c.supported ? "✓ supported" : "✗ unsupported"}</td></tr>`;
  }
  h += `</table>`;
  if ((d.fabricated || []).length) h += `<p class="fabricated">citations removed (no such passage): ${d.fabricated.map(esc).join(", ")}</p>`;
  return h + `</section>`;
}
function showPassage(root, rec, n) {
  const panel = root.querySelector(".passage"), src = (rec.sources || []).find(s => s.number === n)
    || ((rec.result.details.citations || []).find(s => s.number === n));
  if (!panel || !src) return;
  let h = `<p class="where"><b>[${n}]</b> <span class="doc">${esc(src.document)}</span>, <span class="loc">${esc(src.where || src.location)}</span> <code>${esc(src.passage_id)}</code></p>`;
  if (src.text) {
    h += `<blockquote>${src.before ? `<p class="ctx">${esc(src.before)}</p>` : ""}<p class="cited"><mark>${esc(src.text)}</mark></p>${src.after ? `<p class="ctx">${esc(src.after)}</p>` : ""}</blockquote>`;
  } else h += `<p class="missing">the passage's text is not in this record (its documents were not at hand)</p>`;
  panel.innerHTML = h; panel.dataset.n = String(n); panel.hidden = false; panel.scrollIntoView({block: "nearest"});
}
