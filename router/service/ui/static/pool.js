// The pool: similarity graph (families as groups), heatmap per domain, a card per model.
import { getJSON } from "/ui/api.js";
import { ago, fmt, h, heat, pct, s } from "/ui/dom.js";

const METRICS = {
  kappa: { label: "κp (chance-adjusted agreement)", low: "kappa_low", high: "kappa_high" },
  agreement: { label: "agreement", low: null, high: null },
  error_consistency: { label: "error consistency", low: null, high: null },
};

export async function renderPool(root, params) {
  const pool = await getJSON("/v1/pool");
  document.getElementById("profile-version").textContent = `profiles ${pool.profile_version}`;
  const sim = pool.similarity;
  const domains = Object.keys(sim.domains);
  const state = {
    domain: domains.includes(params.get("domain")) ? params.get("domain") : domains[0] || "all",
    metric: METRICS[params.get("metric")] ? params.get("metric") : "kappa",
  };
  const domainSelect = h("select", { id: "domain", "aria-label": "domain" },
    domains.map((d) => h("option", { value: d, selected: d === state.domain }, d)));
  const metricSelect = h("select", { id: "metric", "aria-label": "similarity" },
    Object.entries(METRICS).map(([k, m]) => h("option", { value: k, selected: k === state.metric }, m.label)));
  const graphBox = h("div", { class: "panel", id: "graph" });
  const heatBox = h("div", { class: "panel", id: "heatmap" });
  const redraw = () => {
    const m = sim.domains[state.domain];
    graphBox.replaceChildren(h("h2", {}, "Similarity graph"), graph(pool, m, state), legend(pool));
    heatBox.replaceChildren(h("h2", {}, `Pairwise ${METRICS[state.metric].label} — ${state.domain}`),
      heatmap(sim.models, m, state), counts(m));
    history.replaceState(null, "", `#/pool?domain=${encodeURIComponent(state.domain)}&metric=${state.metric}`);
  };
  domainSelect.addEventListener("change", () => { state.domain = domainSelect.value; redraw(); });
  metricSelect.addEventListener("change", () => { state.metric = metricSelect.value; redraw(); });
  root.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Pool"),
      h("label", {}, "domain ", domainSelect), h("label", {}, "similarity ", metricSelect),
      h("span", { class: "muted" }, `suite ${pool.suite} ${pool.suite_version}`)),
    h("div", { class: "grid2" }, graphBox, heatBox),
    h("h2", {}, "Models"),
    h("div", { class: "cards" }, pool.models.map(card)),
  );
  if (!sim.models.length) root.prepend(h("p", { class: "notice" }, "No model has a profile yet: run `diffroute profile build`."));
  redraw();
}

// A model's name as a label of the graph or the heatmap: long names (`org/model-…-q4_k_m`) are
// cut to fit (they ran off the drawing), the full name is in the label's tooltip
const LABEL_CHARS = 16;
const short = (name) => name.length > LABEL_CHARS ? `${name.slice(0, LABEL_CHARS - 1)}…` : name;

function value(m, key, n, i, j) {
  if (!m || !m[key]) return null;
  return m[key][i * n + j];
}

function families(pool) {
  const order = [];
  for (const [family, members] of Object.entries(pool.families)) order.push(...members.map((name) => ({ name, family })));
  return order;
}

function graph(pool, m, state) {
  const size = 420, cx = size / 2, cy = size / 2, radius = 140;
  const nodes = families(pool);
  const names = pool.similarity.models;
  const n = names.length;
  const familyNames = Object.keys(pool.families);
  const pos = {};
  nodes.forEach((node, k) => {
    const angle = (2 * Math.PI * k) / Math.max(1, nodes.length) - Math.PI / 2;
    pos[node.name] = { x: cx + radius * Math.cos(angle), y: cy + radius * Math.sin(angle), family: node.family };
  });
  const svg = s("svg", { viewBox: `-60 0 ${size + 120} ${size}`, role: "img", "aria-label": "similarity graph", class: "graph" });
  // families as groups: a soft band through each family's members (they sit side by side)
  familyNames.forEach((family, f) => {
    const members = pool.families[family].map((name) => pos[name]);
    const path = members.map((p, k) => `${k ? "L" : "M"}${p.x.toFixed(1)} ${p.y.toFixed(1)}`).join("") + (members.length === 1 ? "l0.1 0" : "");
    const colour = `hsl(${(f * 67 + 140) % 360} 55% 55%)`;
    svg.append(s("g", { class: "family", "data-family": family },
      s("title", {}, `family ${family}: ${pool.families[family].join(", ")}`),
      s("path", { d: path, fill: "none", stroke: colour, "stroke-opacity": 0.22, "stroke-width": 46, "stroke-linecap": "round", "stroke-linejoin": "round" }),
      familyLabel(family, pool.families[family], members, cx, cy, colour)));
  });
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const v = value(m, state.metric, n, i, j);
      if (v === null) continue;
      const a = pos[names[i]], b = pos[names[j]];
      const w = Math.max(0.5, Math.abs(v) * 8);
      const low = METRICS[state.metric].low ? value(m, METRICS[state.metric].low, n, i, j) : null;
      const high = METRICS[state.metric].high ? value(m, METRICS[state.metric].high, n, i, j) : null;
      svg.append(s("g", { class: "edge", "data-a": names[i], "data-b": names[j], "data-value": v },
        s("title", {}, `${names[i]} — ${names[j]}: ${fmt(v, 3)}${low !== null ? ` [${fmt(low, 3)}, ${fmt(high, 3)}]` : ""}`),
        s("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, stroke: v >= 0 ? "#0969da" : "#cf222e", "stroke-width": w, "stroke-opacity": 0.25 + 0.6 * Math.min(1, Math.abs(v)) }),
        s("text", { x: a.x + (b.x - a.x) * 0.38, y: a.y + (b.y - a.y) * 0.38 - 3, class: "edge-label", "text-anchor": "middle" }, fmt(v))));
    }
  }
  for (const node of nodes) {
    const p = pos[node.name];
    const profiled = names.includes(node.name);
    svg.append(s("g", { class: "node", "data-model": node.name },
      s("title", {}, `${node.name} (family ${node.family})${profiled ? "" : ", no profile"}`),
      s("circle", { cx: p.x, cy: p.y, r: 9, class: profiled ? "" : "unprofiled" }),
      s("text", { x: p.x, y: p.y + (p.y > cy ? 24 : -15), "text-anchor": "middle" }, short(node.name))));
  }
  return svg;
}

function familyLabel(family, names, members, cx, cy, colour) {
  if (names.length === 1 && names[0] === family) return ""; // a family of one, by default
  const mx = members.reduce((a, p) => a + p.x, 0) / members.length;
  const my = members.reduce((a, p) => a + p.y, 0) / members.length;
  const d = Math.hypot(mx - cx, my - cy) || 1;
  const x = mx + ((mx - cx) / d) * 62, y = my + ((my - cy) / d) * 62;
  return s("text", { x, y, "text-anchor": "middle", class: "family-label", fill: colour }, `family ${family}`);
}

function legend(pool) {
  const communities = pool.communities.map((c) => c.join(", ")).join(" · ");
  return h("p", { class: "muted small" }, "Edge width and number: similarity on the chosen domain (blue: alike, red: less than chance). ",
    "Shaded bands: configured families. ", communities ? `Detected communities: ${communities}.` : "");
}

function heatmap(models, m, state) {
  const n = models.length, cell = 56, label = 130;
  const size = label + n * cell;
  const svg = s("svg", { viewBox: `0 0 ${size + 80} ${size}`, class: "heatmap", role: "img", "aria-label": "similarity matrix" });
  models.forEach((name, i) => {
    svg.append(s("text", { x: label - 6, y: label + i * cell + cell / 2 + 4, "text-anchor": "end" }, s("title", {}, name), short(name)));
    svg.append(s("text", { x: label + i * cell + cell / 2, y: label - 8, "text-anchor": "start", transform: `rotate(-40 ${label + i * cell + cell / 2} ${label - 8})` }, s("title", {}, name), short(name)));
  });
  const meta = METRICS[state.metric];
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const v = value(m, state.metric, n, i, j);
      const low = meta.low ? value(m, meta.low, n, i, j) : null;
      const high = meta.high ? value(m, meta.high, n, i, j) : null;
      const interval = low !== null && high !== null ? ` [${fmt(low, 3)}, ${fmt(high, 3)}] 95% bootstrap interval` : "";
      const x = label + j * cell, y = label + i * cell;
      const open = i === j ? null : () => { location.hash = `#/diff?a=${encodeURIComponent(models[i])}&b=${encodeURIComponent(models[j])}`; };
      // a cell that opens a diff is a link for the keyboard too (Tab to it, Enter)
      const key = open && ((event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(); } });
      svg.append(s("g", { class: `cell${open ? " link" : ""}`, onclick: open, onkeydown: key, tabindex: open ? 0 : null, role: open ? "link" : null, "aria-label": open ? `diff ${models[i]} and ${models[j]}: ${fmt(v, 3)}` : null, "data-a": models[i], "data-b": models[j], "data-value": v === null ? "" : v, "data-low": low === null ? "" : low, "data-high": high === null ? "" : high },
        s("title", {}, `${models[i]} × ${models[j]} (${state.domain}): ${meta.label} ${fmt(v, 3)}${interval}${i === j ? " (a model against its own samples)" : ""}`),
        s("rect", { x: x + 1, y: y + 1, width: cell - 2, height: cell - 2, fill: heat(v), rx: 3 }),
        s("text", { x: x + cell / 2, y: y + cell / 2 + 4, "text-anchor": "middle", class: "cell-value" }, fmt(v))));
    }
  }
  return svg;
}

function counts(m) {
  if (!m) return "";
  return h("p", { class: "muted small" }, `${m.n_kappa} gold choice probes (κp), ${m.n_gold} gold probes, ${m.n_categorical} categorical probes. Hover a cell for its interval; click it for the pair's diff.`);
}

// samples per probe the profile holds; an unfinished build holds fewer than were asked
const samplesShown = (p) => p.samples_held < p.samples ? `${p.samples_held} of ${p.samples} asked` : `${p.samples}`;

function card(model) {
  const p = model.profile;
  const st = model.status || { state: "unknown", detail: "" };
  const bad = !st.ok || /circuit|open|unreachable|missing/.test(st.state);
  return h("article", { class: "card", "data-model": model.name },
    h("header", {}, h("h3", {}, model.name), h("span", { class: `status ${bad ? "bad" : "ok"}`, title: st.detail || "" }, st.state)),
    h("dl", {},
      h("dt", {}, "family"), h("dd", {}, model.family),
      h("dt", {}, "backend"), h("dd", {}, model.backend),
      h("dt", {}, "profile"), h("dd", { class: "age" }, p ? (p.shipped ? "shipped with the package" : ago(p.observed_at)) : "none"),
      h("dt", {}, "coverage"), h("dd", { class: "coverage" }, p ? `${pct(p.coverage)} (${p.probes} probes × ${samplesShown(p)})` : "n/a"),
      h("dt", {}, "accuracy"), h("dd", { class: "accuracy" }, p ? pct(p.accuracy) : "n/a"),
      h("dt", {}, "refusal rate"), h("dd", { class: "refusal" }, p ? pct(p.refusal_rate) : "n/a"),
    ),
    st.detail && st.detail !== model.backend ? h("p", { class: "muted small status-detail" }, st.detail) : "",
    h("p", { class: "small" }, h("a", { href: `#/diff?a=${encodeURIComponent(model.name)}` }, "diff against…")));
}
