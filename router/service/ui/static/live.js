// Live: drift alarms, disagreement rates over time (Wilson band, profile prediction), and the
// feed of live diffs — newest first, paged, with new ones arriving over /v1/diffs/stream.
import { getJSON, openStream } from "/ui/api.js";
import { errorBox, fmt, h, pct, s, time } from "/ui/dom.js";

const PAGE = 25;
// drift events read: each drifted pair's alarm is looked up among them (the API's maximum)
const DRIFT_EVENTS = 1000;
const MAX_SHOWN = 200; // live diffs kept on the page as new ones arrive
const RATES_REFRESH_MS = 15000;
const LIVE_REFRESH_MS = 1000; // after a live diff arrives: its rate and drift state, at most once a second
const WINDOWS = { "15 min": 900, "1 h": 3600, "6 h": 21600, "24 h": 86400, "7 days": 604800 };

export async function renderLive(root, params) {
  const window_s = Object.values(WINDOWS).includes(Number(params.get("window"))) ? Number(params.get("window")) : 3600;
  const filter = { pair: params.get("pair") || "", domain: params.get("domain") || "" };
  const listQuery = new URLSearchParams({ order: "desc", limit: String(PAGE) });
  if (filter.pair) listQuery.set("pair", filter.pair);
  if (filter.domain) listQuery.set("domain", filter.domain);
  // the first render's three requests, in parallel
  const [page, series, drift] = await Promise.all([
    getJSON(`/v1/diffs?${listQuery}`),
    getJSON(`/v1/stats/disagreements/series?window=${window_s}&buckets=30`),
    getJSON(`/v1/drift?limit=${DRIFT_EVENTS}`),
  ]);

  const windowSelect = h("select", { id: "window", "aria-label": "window" },
    Object.entries(WINDOWS).map(([label, value]) => h("option", { value, selected: value === window_s }, label)));
  // another window keeps the pair and domain filters
  const withParams = (change) => {
    const q = new URLSearchParams(params);
    change(q);
    return `#/live?${q}`;
  };
  windowSelect.addEventListener("change", () => { location.hash = withParams((q) => q.set("window", windowSelect.value)); });
  const pill = (name) => filter[name]
    ? h("span", { class: "pill", id: `filter-${name}` }, `${name} ${filter[name]} `, h("a", { href: withParams((q) => q.delete(name)), title: `all ${name}s` }, "×"))
    : "";
  const streamState = h("span", { id: "stream-state", class: "pill" }, "connecting");
  const feed = h("ol", { id: "feed", class: "feed" });
  const more = h("button", { id: "older", type: "button" }, "older diffs");
  let oldest = null;
  const append = (diffs) => {
    for (const diff of diffs) feed.append(shownItem(diff, false));
    if (diffs.length) oldest = diffs[diffs.length - 1].seq;
    more.hidden = diffs.length < PAGE;
  };
  append(page.data);
  // a page left open keeps the newest MAX_SHOWN pushed diffs; the ones it drops are a click on
  // "older diffs" away again (left open for days, the feed would otherwise grow without end)
  const trim = () => {
    if (feed.childElementCount <= MAX_SHOWN) return;
    while (feed.childElementCount > MAX_SHOWN) feed.lastElementChild.remove();
    const last = [...feed.querySelectorAll("li[data-seq]")].pop();
    if (last) oldest = Number(last.dataset.seq);
    more.hidden = false;
  };
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const q = new URLSearchParams(listQuery);
      q.set("cursor", String(oldest));
      append((await getJSON(`/v1/diffs?${q}`)).data);
    } catch (error) {
      feed.append(errorBox(error));
    }
    more.disabled = false;
  });

  root.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Live"), h("label", {}, "window ", windowSelect), streamState,
      pill("pair"), pill("domain")),
    alarms(drift),
    h("h2", {}, "Disagreement rate over time"),
    h("p", { class: "muted small" }, "Per pair and domain, per time bucket: the observed rate, its 95% Wilson band (shaded) and the rate the profile predicts (dashed)."),
    h("div", { class: "charts", id: "rates" }, series.data.length ? series.data.map((row) => shownChart(row, series)) : h("p", { class: "muted" }, "No paired comparison in this window.")),
    h("h2", {}, "Live diffs"),
    feed.childElementCount ? "" : h("p", { class: "muted", id: "feed-empty" }, "No live diff yet: make a paired call (model audit:… or assist:…)."),
    feed, more);

  // from the newest diff shown (0: none), so none recorded since the list was read is missed
  const newest = page.data.length ? page.data[0].seq : 0;
  const streamQuery = new URLSearchParams();
  if (filter.pair) streamQuery.set("pair", filter.pair);
  if (filter.domain) streamQuery.set("domain", filter.domain);
  // the rates and the drift alarms move as comparisons arrive: redraw them now and then, and
  // soon after live diffs arrive (the feed itself is pushed)
  const charts = root.querySelector("#rates");
  const refresh = async () => {
    try {
      const [fresh, freshDrift] = await Promise.all([
        getJSON(`/v1/stats/disagreements/series?window=${window_s}&buckets=30`),
        getJSON(`/v1/drift?limit=${DRIFT_EVENTS}`),
      ]);
      if (fresh.data.length) charts.replaceChildren(...fresh.data.map((row) => shownChart(row, fresh)));
      const shown = root.querySelector("#drift"), now = alarms(freshDrift);
      // replaced only when it changed: an alert is announced again each time it is replaced
      if (shown && shown.textContent !== now.textContent) shown.replaceWith(now);
    } catch (error) { /* keep the last drawing; the next tick retries */ }
  };
  let soon = null;
  const refreshSoon = () => { soon = soon || setTimeout(() => { soon = null; refresh(); }, LIVE_REFRESH_MS); };
  const stream = openStream(`/v1/diffs/stream?${streamQuery}`, (event, diff) => {
    if (event !== "live_diff") return;
    root.querySelector("#feed-empty")?.remove();
    feed.prepend(shownItem(diff, true));
    trim();
    refreshSoon();
  }, (state) => { streamState.textContent = state === "connected" ? "live" : state; streamState.dataset.state = state; }, String(newest));
  const timer = setInterval(refresh, RATES_REFRESH_MS);
  return () => { stream.abort(); clearInterval(timer); clearTimeout(soon); };
}

function alarms(drift) {
  const drifted = drift.states.filter((st) => st.state === "drifted");
  const events = drift.data.slice(-5).reverse();
  const lastEvent = (st) => drift.data.filter((ev) => ev.primary_model === st.primary && ev.partner === st.partner && ev.domain === st.domain).pop();
  if (!drifted.length && !events.length) return h("p", { class: "ok-banner", id: "drift" }, "No drift: every pair's disagreement rate is where its profile predicts.");
  return h("section", { class: "alarm", id: "drift", role: "alert" },
    h("h2", {}, `Drift alarms (${drifted.length} pair${drifted.length === 1 ? "" : "s"} drifted)`),
    h("ul", {}, drifted.map((st) => {
      const ev = lastEvent(st);
      // the expected rate is the profile's only until a first alarm (or for an unprofiled pair,
      // ever): after one, it is the rate relearned from the comparisons that followed it
      const what = ev ? `disagreement rate ${ev.direction}: ${pct(ev.observed)} observed over ${ev.comparisons} comparisons where ${pct(ev.expected)} was expected (CUSUM ${fmt(ev.statistic)})` : `drifted (its alarm is older than the ${DRIFT_EVENTS} newest; ${st.comparisons} comparisons so far)`;
      const now = st.expected_rate === null ? "relearning its normal rate" : `its normal rate relearned since: ${pct(st.expected_rate)}`;
      return h("li", { class: "drifted" }, h("strong", {}, `${st.primary} ⟷ ${st.partner}`), ` on ${st.domain}: ${what}; ${now}`);
    }),
    events.map((ev) => h("li", {}, `${time(ev.at)} — ${ev.primary_model} ⟷ ${ev.partner} on ${ev.domain}: rate ${ev.direction}, expected ${pct(ev.expected)}, observed ${pct(ev.observed)}`))));
}

function span(seconds) {
  return seconds >= 86400 ? `${seconds / 86400} d` : seconds >= 3600 ? `${seconds / 3600} h` : `${seconds / 60} min`;
}

function rateChart(row, series) {
  const w = 300, hgt = 120, pad = 26;
  const x = (t) => pad + ((t - series.start + series.bucket_s / 2) / series.window_s) * (w - pad - 6);
  const y = (r) => hgt - 16 - r * (hgt - 28);
  const pts = row.points;
  const top = pts.map((p) => `${x(p.start).toFixed(1)},${y(p.interval[1]).toFixed(1)}`);
  const bottom = pts.slice().reverse().map((p) => `${x(p.start).toFixed(1)},${y(p.interval[0]).toFixed(1)}`);
  const svg = s("svg", { viewBox: `0 0 ${w} ${hgt}`, class: "rate", role: "img", "aria-label": `rate ${row.primary} ${row.partner} ${row.domain}` },
    s("line", { x1: pad, y1: y(0), x2: w - 6, y2: y(0), class: "axis" }),
    s("line", { x1: pad, y1: y(1), x2: w - 6, y2: y(1), class: "grid" }),
    s("text", { x: pad - 4, y: y(0) + 4, "text-anchor": "end", class: "tick" }, "0"),
    s("text", { x: pad - 4, y: y(1) + 4, "text-anchor": "end", class: "tick" }, "1"),
    pts.length > 1 ? s("polygon", { points: [...top, ...bottom].join(" "), class: "band" }) : "",
    row.predicted_rate !== null ? s("line", { x1: pad, x2: w - 6, y1: y(row.predicted_rate), y2: y(row.predicted_rate), class: "predicted" },
      s("title", {}, `profile predicts ${pct(row.predicted_rate)}`)) : "",
    pts.length > 1 ? s("polyline", { points: pts.map((p) => `${x(p.start).toFixed(1)},${y(p.rate).toFixed(1)}`).join(" "), class: "observed" }) : "",
    s("text", { x: pad, y: hgt - 2, class: "tick" }, `−${span(series.window_s)}`),
    s("text", { x: w - 6, y: hgt - 2, "text-anchor": "end", class: "tick" }, "now"),
    pts.map((p) => s("line", { x1: x(p.start), x2: x(p.start), y1: y(p.interval[0]), y2: y(p.interval[1]), class: "whisker" })),
    pts.map((p) => s("circle", { cx: x(p.start), cy: y(p.rate), r: 2.5, class: "observed-dot" },
      s("title", {}, `${time(p.start)}: ${p.disagreements}/${p.comparisons} = ${pct(p.rate)} [${pct(p.interval[0])}, ${pct(p.interval[1])}]`))));
  const total = pts.reduce((a, p) => [a[0] + p.comparisons, a[1] + p.disagreements], [0, 0]);
  return h("figure", { class: `chart ${row.drift_state === "drifted" ? "drifted" : ""}`, "data-pair": `${row.primary},${row.partner}`, "data-domain": row.domain },
    h("figcaption", {}, h("strong", {}, `${row.primary} ⟷ ${row.partner}`), ` · ${row.domain} · ${total[1]}/${total[0]} · `,
      h("span", { class: `drift-state ${row.drift_state || ""}` }, row.drift_state || "no drift test")),
    svg);
}

// Word-level diff for the side-by-side answers: tokens are words with the spaces after them,
// compared without those spaces; the shared start and end are cut off, the rest aligned by
// longest common subsequence — or, past ALIGN_CELLS, marked changed as a whole (never shown
// as equal when it is not).
const ALIGN_CELLS = 250000;

function tokens(text) {
  return (text || "").match(/\S+\s*|\s+/g) || [];
}

const word = (t) => t.trim();

function align(x, y) {
  const n = x.length, m = y.length;
  if (n * m > ALIGN_CELLS) return [x.map((t) => [t, true]), y.map((t) => [t, true])];
  const table = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
    table[i][j] = word(x[i]) === word(y[j]) ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
  const left = [], right = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (word(x[i]) === word(y[j])) { left.push([x[i++], false]); right.push([y[j++], false]); }
    else if (table[i + 1][j] >= table[i][j + 1]) left.push([x[i++], true]);
    else right.push([y[j++], true]);
  }
  while (i < n) left.push([x[i++], true]);
  while (j < m) right.push([y[j++], true]);
  return [left, right];
}

export function wordDiff(a, b) {
  const x = tokens(a), y = tokens(b);
  let start = 0;
  while (start < x.length && start < y.length && word(x[start]) === word(y[start])) start++;
  let endX = x.length, endY = y.length;
  while (endX > start && endY > start && word(x[endX - 1]) === word(y[endY - 1])) { endX--; endY--; }
  const same = (ts) => ts.map((t) => [t, false]);
  const [left, right] = align(x.slice(start, endX), y.slice(start, endY));
  return [[...same(x.slice(0, start)), ...left, ...same(x.slice(endX))],
    [...same(y.slice(0, start)), ...right, ...same(y.slice(endY))]];
}

function marked(parts, cls) {
  return parts.flatMap(([t, changed]) => {
    const w = t.trimEnd();
    return changed && w.trim() ? [h("mark", { class: cls }, w), t.slice(w.length)] : [t];
  });
}

// Bidirectional controls (U+202A–202E, U+2066–2069) reorder what follows them: a model's answer
// is shown with them spelled out, so "gnp.exe" cannot pass for "exe.png".
const BIDI = /[\u202a-\u202e\u2066-\u2069]/g;
export const revealBidi = (text) => typeof text === "string"
  ? text.replace(BIDI, (c) => `⟨U+${c.charCodeAt(0).toString(16).toUpperCase()}⟩`) : text;

// One diff or chart that cannot be drawn (a field missing or of another type) is an error in
// its place, not an exception that replaces the whole page (or, from the stream, a reconnect).
function shownItem(diff, fresh) {
  try {
    return diffItem(diff, fresh);
  } catch (error) {
    return h("li", { class: "diff error", role: "alert", "data-id": diff && diff.id }, `live diff ${(diff && diff.id) || "?"} cannot be shown: ${error.message}`);
  }
}

function shownChart(row, series) {
  try {
    return rateChart(row, series);
  } catch (error) {
    return h("figure", { class: "chart error", role: "alert" }, `${(row && row.primary) || "?"} ⟷ ${(row && row.partner) || "?"}: cannot be drawn: ${error.message}`);
  }
}

function diffItem(diff, fresh) {
  const [left, right] = wordDiff(revealBidi(diff.primary_text), revealBidi(diff.partner_text));
  const prompt = revealBidi(diff.messages ? diff.messages.filter((m) => m.role === "user").map((m) => typeof m.content === "string" ? m.content : JSON.stringify(m.content)).join("\n") : `(redacted, digest ${diff.prompt_digest})`);
  return h("li", { class: `diff ${fresh ? "fresh" : ""}`, id: `diff-${diff.id}`, "data-id": diff.id, "data-seq": diff.seq },
    h("header", {},
      h("a", { href: `#/live?pair=${encodeURIComponent(`${diff.primary},${diff.partner}`)}` }, h("strong", {}, `${diff.primary} ⟷ ${diff.partner}`)),
      h("span", { class: `role ${diff.role}` }, diff.role),
      diff.domains.map((d) => h("span", { class: "domain" }, d)),
      h("span", { class: "muted small" }, `${time(diff.created_at)} · agreement ${fmt(diff.agreement)} · divergence ${fmt(diff.divergence, 3)} > ${fmt(diff.threshold, 3)} (${diff.method})`)),
    h("pre", { class: "prompt" }, prompt),
    h("div", { class: "sides" },
      h("div", { class: "side a" }, h("h4", {}, `${diff.primary} (primary)`), h("pre", { class: "answer primary-text" }, diff.primary_text === null ? "(redacted)" : marked(left, "del"))),
      h("div", { class: "side b" }, h("h4", {}, `${diff.partner} (${diff.role === "audit" ? "auditor" : "assistant"})`), h("pre", { class: "answer partner-text" }, diff.partner_text === null ? "(redacted)" : marked(right, "ins")))));
}
