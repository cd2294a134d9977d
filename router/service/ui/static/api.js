// The page's one way to the JSON API: bearer keys from sessionStorage, asked for on a 401.
const KEYS = { client: "diffroute.key", admin: "diffroute.admin_key" };

export class ApiError extends Error {
  constructor(status, body) {
    const message = body && body.error ? body.error.message : `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function forgetKeys() {
  for (const name of Object.values(KEYS)) sessionStorage.removeItem(name);
}

let asking = null;

// Ask for a key in the page's dialog; resolves with the key or null when cancelled (the Cancel
// button, or Escape: whatever closes the dialog settles the question).
export function askKey(kind, why) {
  if (asking) return asking;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-title").textContent = kind === "admin" ? "Admin key" : "API key";
  document.getElementById("key-why").textContent = why || "";
  input.value = "";
  asking = new Promise((resolve) => {
    const form = document.getElementById("key-form");
    const cancel = document.getElementById("key-cancel");
    const done = (value) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("close", onCancel);
      if (dialog.open) dialog.close();
      asking = null;
      resolve(value);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (key) sessionStorage.setItem(KEYS[kind], key);
      done(key || null);
    };
    const onCancel = () => done(null);
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("close", onCancel); // Escape closes a modal dialog by itself
    dialog.showModal();
    input.focus();
  });
  return asking;
}

function headers(kind, extra) {
  const out = { Accept: "application/json", ...(extra || {}) };
  const key = sessionStorage.getItem(KEYS[kind]);
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

// fetch with the key of `kind`; on a 401 ask for it (again) and retry, up to 3 times.
export async function request(path, { method = "GET", body, kind = "client", text = false } = {}) {
  for (let attempt = 0; ; attempt++) {
    const init = { method, headers: headers(kind, body ? { "Content-Type": "application/json" } : {}) };
    if (body !== undefined) init.body = JSON.stringify(body);
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) { // no answer at all (fetch's own "Failed to fetch"): down or unreachable
      throw new ApiError(0, { error: { message: `the service does not answer (${error.message}): is diffroute serve running? Reload the page once it is.` } });
    }
    // 401: no or wrong key; 403: a client key where the admin key is needed (but no key helps
    // where the service has none configured: that 403 is shown as it is)
    const refused = response.status === 401 || (response.status === 403 && kind === "admin");
    const parsed = refused ? await response.json().catch(() => null) : null;
    const unconfigured = parsed && parsed.error && parsed.error.code === "admin_key_not_configured";
    if (refused && unconfigured) throw new ApiError(response.status, parsed);
    if (refused && attempt < 3) {
      sessionStorage.removeItem(KEYS[kind]);
      // the server's reason, from the first prompt on (e.g. that no admin key is configured)
      const reason = parsed && parsed.error ? parsed.error.message : "wrong key";
      const why = attempt ? `refused: ${reason}` : (parsed && parsed.error ? reason : "");
      const key = await askKey(kind, why);
      if (!key) throw new ApiError(401, parsed);
      continue;
    }
    if (!response.ok) {
      throw new ApiError(response.status, parsed || await response.json().catch(() => null));
    }
    return text ? response.text() : response.json();
  }
}

export const getJSON = (path) => request(path);

// Server-Sent Events over fetch (EventSource cannot send an Authorization header).
// Calls onEvent(event, data, id) per event; returns an AbortController. `cursor`: the last
// event already shown ("0": none), so that what is recorded before the stream connects (or
// while it reconnects) comes as its backlog.
export function openStream(path, onEvent, onState, cursor = null) {
  const controller = new AbortController();
  let lastId = cursor;
  const run = async () => {
    while (!controller.signal.aborted) {
      try {
        const url = new URL(path, location.origin);
        if (lastId) url.searchParams.set("cursor", lastId); // resume after the last event seen
        const response = await fetch(url, { headers: headers("client", { Accept: "text/event-stream" }), signal: controller.signal });
        if (response.status === 401) {
          sessionStorage.removeItem(KEYS.client);
          if (!(await askKey("client", "the live stream needs the API key"))) {
            // cancelled: not live, and not reconnecting either, until a key is given (here
            // or to any other call of the page, which keeps it in sessionStorage)
            onState && onState("no key");
            while (!controller.signal.aborted && !sessionStorage.getItem(KEYS.client)) {
              await new Promise((resolve) => setTimeout(resolve, 1000));
            }
          }
          continue;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        onState && onState("connected");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let event = "message", data = "", id = null;
            for (const line of block.split("\n")) {
              if (line.startsWith(":")) continue;
              const colon = line.indexOf(":");
              const field = colon < 0 ? line : line.slice(0, colon);
              const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
              if (field === "event") event = val;
              else if (field === "data") data += (data ? "\n" : "") + val;
              else if (field === "id") id = val;
            }
            if (id) lastId = id;
            if (data) onEvent(event, JSON.parse(data), id);
          }
        }
        // the server ended the stream (a shutdown, or a `resume` event): not live any more
        if (!controller.signal.aborted) onState && onState("reconnecting");
      } catch (error) {
        if (controller.signal.aborted) return;
        onState && onState("reconnecting");
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  };
  run();
  return controller;
}
