// Two models' behavioral diff: the HTML report (the same rendering as `diffroute diff --format
// html`) in a sandboxed frame; the URL (#/diff?a=A&b=B) links to it.
import { getJSON, request } from "/ui/api.js";
import { errorBox, h } from "/ui/dom.js";

export async function renderDiff(root, params) {
  const pool = await getJSON("/v1/pool");
  const names = pool.models.map((m) => m.name);
  const a = names.includes(params.get("a")) ? params.get("a") : names[0];
  const b = names.includes(params.get("b")) && params.get("b") !== a ? params.get("b") : names.find((n) => n !== a);
  const select = (id, chosen) => h("select", { id, "aria-label": id === "diff-a" ? "model a" : "model b" },
    names.map((n) => h("option", { value: n, selected: n === chosen }, n)));
  const selectA = select("diff-a", a), selectB = select("diff-b", b);
  const go = () => { location.hash = `#/diff?a=${encodeURIComponent(selectA.value)}&b=${encodeURIComponent(selectB.value)}`; };
  selectA.addEventListener("change", go);
  selectB.addEventListener("change", go);
  const out = h("div", { class: "report" }, h("p", { class: "muted" }, `Diffing ${a} and ${b}…`));
  root.append(h("div", { class: "toolbar" }, h("h1", {}, "Diff"),
    h("label", {}, "a ", selectA), h("label", {}, "b ", selectB),
    h("a", { id: "diff-json", href: "#", class: "small" }, "as JSON")), out);
  if (!a || !b) {
    out.replaceChildren(h("p", {}, "The pool needs two models."));
    return;
  }
  const query = `a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`;
  root.querySelector("#diff-json").addEventListener("click", async (event) => {
    event.preventDefault();
    try {
      const json = await getJSON(`/v1/profiles/diff?${query}`);
      const blob = new Blob([JSON.stringify(json, null, 2)], { type: "application/json" });
      window.open(URL.createObjectURL(blob));
    } catch (error) {
      out.replaceChildren(errorBox(error)); // e.g. no profile: said on the page, not lost
    }
  });
  try {
    const html = await request(`/v1/profiles/diff?${query}&format=html`, { text: true });
    // no scripts may run in it (the report has none): the frame is read only for its height
    const frame = h("iframe", { id: "diff-report", title: `diff ${a} ${b}`, sandbox: "allow-same-origin" });
    frame.srcdoc = html;
    frame.addEventListener("load", () => {
      const doc = frame.contentDocument;
      if (doc && doc.body) frame.style.height = `${doc.documentElement.scrollHeight + 20}px`;
    });
    out.replaceChildren(frame);
  } catch (error) {
    out.replaceChildren(errorBox(error));
  }
}
