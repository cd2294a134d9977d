// Small DOM helpers: every text goes in through textContent, never innerHTML.
const SVG_NS = "http://www.w3.org/2000/svg";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  return fill(el, attrs, children);
}

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.setAttribute("class", value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const fmt = (x, digits = 2) =>
  x === null || x === undefined || Number.isNaN(x) ? "n/a" : Number(x).toFixed(digits);

export const pct = (x) => (x === null || x === undefined ? "n/a" : `${(x * 100).toFixed(1)}%`);

export function ago(epochSeconds) {
  if (!epochSeconds) return "n/a";
  const s = Math.max(0, Date.now() / 1000 - epochSeconds);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

// A moment as the reader's clock shows it: the time of day if it is today, else with its date
// (a diff three days old must not read as one of this evening's).
export function time(epochSeconds) {
  const when = new Date(epochSeconds * 1000);
  return when.toDateString() === new Date().toDateString() ? when.toLocaleTimeString() : when.toLocaleString();
}

// A colour for a similarity: white (chance) to blue (alike); below chance, red.
export function heat(value) {
  if (value === null || value === undefined) return "#eaeef2";
  if (value < 0) return `hsl(0 75% ${(96 - Math.min(1, -value) * 30).toFixed(0)}%)`;
  return `hsl(212 80% ${(97 - Math.min(1, value) * 42).toFixed(0)}%)`;
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.message || String(error));
}
