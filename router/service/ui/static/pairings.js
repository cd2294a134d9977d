// Pairings: the policy's current choice per primary and role; pins and exclusions, saved with
// the admin key (PUT /v1/pairings).
import { ApiError, getJSON, request } from "/ui/api.js";
import { errorBox, fmt, h } from "/ui/dom.js";

const ROLES = ["audit", "assist"];

export async function renderPairings(root) {
  const current = await getJSON("/v1/pairings/current");
  const names = [...new Set(current.data.map((row) => row.primary))];
  const draft = structuredClone(current.pairings);
  const status = h("p", { id: "pairings-status", class: "muted", role: "status" });
  const save = h("button", { id: "save-pairings", type: "button", disabled: true }, "Save (admin key)");
  const dirty = () => { save.disabled = false; status.textContent = "unsaved changes"; };

  const rows = current.data.map((row) => {
    const pin = h("select", { class: "pin", "data-primary": row.primary, "data-role": row.role, "aria-label": `pin ${row.role} partner of ${row.primary}` },
      h("option", { value: "" }, "(policy decides)"),
      names.filter((n) => n !== row.primary).map((n) => h("option", { value: n, selected: row.pinned === n }, n)));
    pin.addEventListener("change", () => {
      const roles = { ...(draft.pinned[row.primary] || {}) };
      if (pin.value) roles[row.role] = pin.value; else delete roles[row.role];
      if (Object.keys(roles).length) draft.pinned[row.primary] = roles; else delete draft.pinned[row.primary];
      dirty();
    });
    return h("tr", { class: row.error ? "nopair" : "", "data-primary": row.primary, "data-role": row.role },
      h("td", {}, row.primary), h("td", {}, h("span", { class: `role ${row.role}` }, row.role)),
      h("td", { class: "partner" }, row.partner || "—"),
      h("td", { class: "num score" }, row.score === null ? "n/a" : fmt(row.score, 3)),
      h("td", { class: "reason" }, row.reason),
      h("td", {}, pin));
  });

  const excludedList = h("ul", { id: "exclusions" });
  const drawExclusions = () => excludedList.replaceChildren(...(draft.excluded.length ? draft.excluded.map(([x, y], k) =>
    h("li", {}, `${x} ⟷ ${y} `, h("button", { type: "button", class: "link", onclick: () => { draft.excluded.splice(k, 1); drawExclusions(); dirty(); } }, "remove"))) : [h("li", { class: "muted" }, "no exclusions")]));
  drawExclusions();
  const exA = h("select", { id: "exclude-a", "aria-label": "exclude model" }, names.map((n) => h("option", { value: n }, n)));
  const exB = h("select", { id: "exclude-b", "aria-label": "from model" }, names.map((n, k) => h("option", { value: n, selected: k === 1 }, n)));
  const addExclusion = h("button", { id: "add-exclusion", type: "button" }, "exclude pair");
  addExclusion.addEventListener("click", () => {
    if (exA.value === exB.value) { status.textContent = "a model cannot be excluded from itself"; return; }
    draft.excluded.push([exA.value, exB.value]);
    drawExclusions();
    dirty();
  });

  save.addEventListener("click", async () => {
    save.disabled = true;
    status.textContent = "saving…";
    try {
      await request("/v1/pairings", { method: "PUT", body: draft, kind: "admin" });
      status.textContent = "saved";
      root.replaceChildren();
      await renderPairings(root);
      root.querySelector("#pairings-status").textContent = "saved: the policy now decides with these pairings";
    } catch (error) {
      save.disabled = false;
      status.replaceChildren(error instanceof ApiError && (error.status === 401 || error.status === 403) ? errorBox(new Error(`refused: ${error.message}`)) : errorBox(error));
    }
  });

  root.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Pairings"), h("span", { class: "muted" }, `profiles ${current.profile_version}`)),
    h("p", { class: "muted" }, "The partner the policy picks now for each primary and role (no task text: all domains weigh alike). Pin a partner to override it; excluded pairs are never chosen."),
    h("table", { class: "data", id: "pairings-table" },
      h("thead", {}, h("tr", {}, ["primary", "role", "partner", "score", "reason", "pin"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows)),
    h("h2", {}, "Exclusions"), excludedList,
    h("div", { class: "toolbar" }, exA, exB, addExclusion),
    h("div", { class: "toolbar" }, save, status));
}
