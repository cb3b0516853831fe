// moaa view: keyboard review and the review API. Plain JavaScript, no build step.
(function () {
  "use strict";
  const body = document.body;
  const HEADERS = { "Content-Type": "application/json", "X-Moaa-Review": "1" };

  function typing(e) {
    const t = e.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }

  async function post(url, payload) {
    const res = await fetch(url, { method: "POST", headers: HEADERS, body: JSON.stringify(payload || {}) });
    const data = await res.json().catch(() => ({ error: "the viewer answered " + res.status }));
    if (!res.ok) throw new Error(data.error || ("HTTP " + res.status));
    return data;
  }

  function badge(state) {
    const span = document.createElement("span");
    const d = state && state.decision;
    span.className = "decision d-" + (d || "none");
    span.textContent = d ? d + (state.edits && Object.keys(state.edits).length ? " ✎" : "") : "–";
    if (state && state.note) span.title = state.note;
    return span;
  }

  function say(el, text, bad) {
    if (!el) { if (bad) alert(text); return; }
    el.textContent = text;
    el.style.color = bad ? "#c0362c" : "";
  }

  // ---------------------------------------------------------------- keys help
  const keys = document.getElementById("keys");
  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "?") { keys.hidden = !keys.hidden; e.preventDefault(); }
    else if (e.key === "Escape" && keys && !keys.hidden) keys.hidden = true;
    else if (e.key === "/") { const s = document.getElementById("search"); if (s) { s.focus(); e.preventDefault(); } }
  });

  // ---------------------------------------------------------------- apply
  const apply = document.getElementById("apply");
  if (apply) {
    apply.addEventListener("click", async () => {
      const out = document.getElementById("apply-result");
      if (!confirm("Write the next version with these decisions applied? (this version is kept as it is)")) return;
      apply.disabled = true;
      say(out, "writing…");
      try {
        const done = await post(apply.dataset.url);
        say(out, "wrote " + done.version);
        if (done.url) location.href = done.url;
      } catch (err) { say(out, err.message, true); apply.disabled = false; }
    });
  }

  // ---------------------------------------------------------------- a version's table
  if (body.dataset.page === "table") {
    const api = body.dataset.api, config = body.dataset.config;
    const rows = Array.from(document.querySelectorAll("#rows tbody tr[data-pid]"));
    let at = -1;
    function move(to) {
      if (!rows.length) return;
      if (at >= 0) rows[at].classList.remove("cursor");
      at = Math.max(0, Math.min(rows.length - 1, to));
      rows[at].classList.add("cursor");
      rows[at].scrollIntoView({ block: "nearest" });
    }
    async function decide(action, note) {
      if (at < 0 || !api || (config !== "sft" && config !== "dpo")) return;
      const row = rows[at];
      try {
        const state = await post(api, { config: config, prompt_id: row.dataset.pid, action: action, note: note || "" });
        const cell = row.querySelector("td.state");
        cell.replaceChildren(badge(state));
        move(at + 1);
      } catch (err) { alert(err.message); }
    }
    rows.forEach((row, i) => row.addEventListener("click", (e) => {
      if (e.target.closest("a")) return;
      move(i);
      location.href = row.dataset.href;
    }));
    document.addEventListener("keydown", (e) => {
      if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
      const k = e.key;
      if (k === "j" || k === "ArrowDown") move(at + 1);
      else if (k === "k" || k === "ArrowUp") move(at - 1);
      else if ((k === "Enter" || k === "o") && at >= 0) location.href = rows[at].dataset.href;
      else if (k === "e" && at >= 0) location.href = rows[at].dataset.href + "#edit";
      else if (k === "a") decide("accept");
      else if (k === "r") decide("reject");
      else if (k === "c") decide("clear");
      else if (k === "f" && at >= 0) { const note = prompt("Flag with a note (the row is kept):"); if (note !== null) decide("flag", note); }
      else if (k === "ArrowRight" || k === "]") { const n = document.getElementById("next-page"); if (n) location.href = n.href; }
      else if (k === "ArrowLeft" || k === "[") { const p = document.getElementById("prev-page"); if (p) location.href = p.href; }
      else return;
      e.preventDefault();
    });
  }

  // ---------------------------------------------------------------- a row
  const review = document.getElementById("review");
  if (body.dataset.page === "row" && review) {
    const api = review.dataset.api, config = review.dataset.config, pid = review.dataset.promptId;
    const editor = document.getElementById("editor");
    const saved = document.getElementById("saved");
    const texts = JSON.parse((document.getElementById("current-texts") || { textContent: "{}" }).textContent);
    let edits = {};

    async function decide(payload) {
      try {
        const state = await post(api, Object.assign({ config: config, prompt_id: pid }, payload));
        document.getElementById("state").replaceChildren(badge(state));
        edits = state.edits || {};
        say(saved, "saved " + new Date().toLocaleTimeString());
        return state;
      } catch (err) { say(saved, err.message, true); }
    }
    function openEditor() {
      editor.hidden = false;
      const field = editor.elements.field;
      const fill = () => { editor.elements.text.value = edits[field.value] || texts[field.value] || ""; };
      if (field.tagName === "SELECT") field.onchange = fill;
      fill();
      editor.elements.text.focus();
    }
    function flag() {
      const note = prompt("Flag with a note (the row is kept):");
      if (note !== null) decide({ action: "flag", note: note });
    }
    review.querySelectorAll("button[data-action]").forEach((b) => b.addEventListener("click", () => {
      const action = b.dataset.action;
      if (action === "edit") openEditor();
      else if (action === "flag") flag();
      else decide({ action: action });
    }));
    editor.addEventListener("submit", async (e) => {
      e.preventDefault();
      const state = await decide({ action: "edit", field: editor.elements.field.value, text: editor.elements.text.value });
      if (state) editor.hidden = true;
    });
    editor.querySelector("[data-cancel]").addEventListener("click", () => { editor.hidden = true; });
    editor.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { editor.requestSubmit(); e.preventDefault(); }
      else if (e.key === "Escape") { editor.hidden = true; e.preventDefault(); }
    });
    document.addEventListener("keydown", (e) => {
      if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
      const k = e.key;
      if (k === "a") decide({ action: "accept" });
      else if (k === "r") decide({ action: "reject" });
      else if (k === "c") decide({ action: "clear" });
      else if (k === "f") flag();
      else if (k === "e") openEditor();
      else if ((k === "n" || k === "j") && review.dataset.next) location.href = review.dataset.next;
      else if ((k === "p" || k === "k") && review.dataset.prev) location.href = review.dataset.prev;
      else return;
      e.preventDefault();
    });
    if (location.hash === "#edit") openEditor();
  }
})();
