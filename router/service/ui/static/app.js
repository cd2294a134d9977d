// The dashboard's router: #/pool, #/diff?a=A&b=B, #/pairings, #/live.
import { forgetKeys } from "/ui/api.js";
import { errorBox } from "/ui/dom.js";
import { renderPool } from "/ui/pool.js";
import { renderDiff } from "/ui/diff.js";
import { renderPairings } from "/ui/pairings.js";
import { renderLive } from "/ui/live.js";

const PAGES = { pool: renderPool, diff: renderDiff, pairings: renderPairings, live: renderLive };
let cleanup = null;
let shown = 0; // which show() is the current one: a page that finishes after a newer one started
               // is cleaned up at once (its stream and timers would be left running)

function route() {
  const [path, query] = (location.hash.replace(/^#\/?/, "") || "pool").split("?");
  const page = PAGES[path] ? path : "pool";
  return { page, params: new URLSearchParams(query || "") };
}

async function show() {
  const mine = ++shown;
  if (cleanup) cleanup();
  cleanup = null;
  const { page, params } = route();
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
  const view = document.getElementById("view");
  const root = document.createElement("section");
  root.className = `page page-${page}`;
  view.replaceChildren(root);
  document.body.dataset.page = page;
  document.body.dataset.ready = "false";
  let done = null;
  try {
    done = (await PAGES[page](root, params)) || null;
  } catch (error) {
    root.append(errorBox(error));
  }
  if (mine !== shown) { // another page was asked for meanwhile: this one is already gone
    if (done) done();
    return;
  }
  cleanup = done;
  document.body.dataset.ready = "true";
}

document.getElementById("forget-keys").addEventListener("click", () => {
  forgetKeys();
  show();
});
window.addEventListener("hashchange", show);
show();
