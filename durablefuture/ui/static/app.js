/* DurableFuture web UI: one page, vanilla JS, no build step.
 *
 * Routes: "/" (runs with filters), "/workflows/<id>[?run_id=]" (one run), "/schedules" and
 * "/schedules/<id>" (schedules: next runs, recent actions, pause/unpause/trigger). Data comes from
 * the JSON API next to this file's server; a run page follows live updates through
 * Server-Sent Events (falling back to polling). Everything user-supplied is inserted as text
 * (textContent), never as HTML.
 */
"use strict";

(() => {
  const app = document.getElementById("app");
  const tooltip = document.getElementById("tooltip");
  const STATUSES = ["running", "completed", "failed", "cancelled", "terminated", "timed_out", "continued_as_new", "corrupt"];
  const PAGE = 200; // runs per page of the list (the API's default limit)
  let cleanup = [];

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "style") Object.assign(node.style, v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  /** Where to sign in, coming back to this page afterwards. */
  const loginUrl = () => "/login?next=" + encodeURIComponent(location.pathname + location.search);

  async function api(path, options) {
    const res = await fetch(path, options);
    if (res.status === 401) { location.assign(loginUrl()); } // the session expired
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      const err = new Error((body && body.error) || `${res.status} ${res.statusText}`);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  function toast(message, bad) {
    const t = el("div", { class: "toast" + (bad ? " bad" : "") }, message);
    document.getElementById("toasts").append(t);
    setTimeout(() => t.remove(), 4500);
  }

  const pad = (n, w = 2) => String(n).padStart(w, "0");

  function fmtTime(ts) {
    if (ts === null || ts === undefined) return "—";
    const d = new Date(ts * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtClock(ts) {
    const d = new Date(ts * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function fmtDur(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "—";
    const s = Math.max(0, seconds);
    if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 1 : 0)} ms`;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.round((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.round((s % 86400) / 3600)}h`;
  }

  function fmtAgo(ts) {
    const s = Date.now() / 1000 - ts;
    if (s < 5) return "just now";
    if (s < 60) return `${Math.round(s)}s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  const statusLabel = (s) => (s || "").replace(/_/g, " ");
  const badge = (status, lg) => el("span", { class: `badge ${status}${lg ? " lg" : ""}`, dataset: { status } }, statusLabel(status));

  /** Pretty-printed, highlighted JSON, built as text nodes. */
  function jsonView(value) {
    const pre = el("pre", { class: "json" });
    const text = JSON.stringify(value, null, 2);
    if (text === undefined) { pre.append("null"); return pre; }
    const re = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false)\b|\bnull\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
    let last = 0;
    for (const m of text.matchAll(re)) {
      pre.append(text.slice(last, m.index));
      let cls = "j-num";
      if (m[1]) cls = m[2] ? "j-key" : "j-str";
      else if (m[3]) cls = "j-bool";
      else if (m[0] === "null") cls = "j-null";
      if (m[1] && m[2]) {
        pre.append(el("span", { class: cls }, m[1]), m[2]);
      } else {
        pre.append(el("span", { class: cls }, m[0]));
      }
      last = m.index + m[0].length;
    }
    pre.append(text.slice(last));
    return pre;
  }

  function showTip(evt, parts) {
    tooltip.replaceChildren(...parts.map((p) => (p instanceof Node ? p : el("div", null, p))));
    tooltip.hidden = false;
    moveTip(evt);
  }
  function moveTip(evt) {
    const w = tooltip.offsetWidth, h = tooltip.offsetHeight;
    let x = evt.clientX + 14, y = evt.clientY + 14;
    if (x + w > window.innerWidth - 8) x = evt.clientX - w - 14;
    if (y + h > window.innerHeight - 8) y = evt.clientY - h - 14;
    tooltip.style.left = `${x}px`;
    tooltip.style.top = `${y}px`;
  }
  function hideTip() { tooltip.hidden = true; }
  function withTip(node, partsFn) {
    node.addEventListener("mouseenter", (e) => showTip(e, partsFn()));
    node.addEventListener("mousemove", moveTip);
    node.addEventListener("mouseleave", hideTip);
    return node;
  }

  // ------------------------------------------------------------------ first data

  // The server puts the first page's data into the HTML (a JSON script), so the page is whole
  // by the time it has loaded; live updates and refreshes follow as usual.
  let initial = (() => {
    const node = document.getElementById("df-initial");
    if (!node) return null;
    node.remove();
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  })();

  /** The embedded data if it is for ``route`` and ``matches`` (only once: later pages fetch). */
  function takeInitial(route, matches) {
    const found = initial;
    initial = null;
    return found && found.route === route && matches(found) ? found : null;
  }

  // ------------------------------------------------------------------ routing

  function navigate(url, replace) {
    if (replace) history.replaceState(null, "", url);
    else history.pushState(null, "", url);
    route();
  }

  document.addEventListener("click", (e) => {
    const a = e.target.closest("a[data-link]");
    if (!a || e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    navigate(a.getAttribute("href"));
  });
  window.addEventListener("popstate", route);
  // Leaving the page closes its live stream: a page kept in the back/forward cache would
  // otherwise hold one of the browser's few connections to this server open.
  window.addEventListener("pagehide", () => {
    for (const fn of cleanup) fn();
    cleanup = [];
  });
  window.addEventListener("pageshow", (e) => { if (e.persisted) route(); });

  function route() {
    for (const fn of cleanup) fn();
    cleanup = [];
    hideTip();
    const path = location.pathname;
    if (path === "/schedules" || path === "/schedules/") {
      schedulesPage();
    } else if (path.startsWith("/schedules/")) {
      schedulePage(decodeURIComponent(path.slice("/schedules/".length)));
    } else if (path.startsWith("/workflows/")) {
      const id = decodeURIComponent(path.slice("/workflows/".length));
      const runId = new URLSearchParams(location.search).get("run_id");
      runPage(id, runId);
    } else {
      listPage();
    }
  }

  const runUrl = (id, runId) => `/workflows/${encodeURIComponent(id)}` + (runId ? `?run_id=${encodeURIComponent(runId)}` : "");
  // The id is always the last part of an API path ("/api/<what>/<id>"), so no id can be
  // mistaken for another route: "/api/workflows/<id>" (the run), "/api/live/<id>" (its
  // Server-Sent Events), "/api/signal|cancel|terminate/<id>" (POST).
  const apiRun = (what, id, runId) => `/api/${what}/${encodeURIComponent(id)}` + (runId ? `?run_id=${encodeURIComponent(runId)}` : "");

  // ------------------------------------------------------------------ list page

  function listPage() {
    document.title = "Workflows · DurableFuture";
    const params = new URLSearchParams(location.search);
    const state = { status: params.get("status") || "", type: params.get("type") || "", q: params.get("q") || "" };
    const searchSvg = () => {
      const ns = "http://www.w3.org/2000/svg";
      const svg = document.createElementNS(ns, "svg");
      svg.setAttribute("viewBox", "0 0 20 20");
      svg.setAttribute("fill", "none");
      svg.setAttribute("stroke", "currentColor");
      svg.setAttribute("stroke-width", "2");
      const c = document.createElementNS(ns, "circle");
      c.setAttribute("cx", "8.5"); c.setAttribute("cy", "8.5"); c.setAttribute("r", "5.5");
      const l = document.createElementNS(ns, "path");
      l.setAttribute("d", "M13 13l4 4"); l.setAttribute("stroke-linecap", "round");
      svg.append(c, l);
      return svg;
    };
    const search = el("input", { type: "search", placeholder: "Workflow id, or a query: WorkflowType = 'order' AND ExecutionStatus = 'Failed'", value: state.q, id: "search", "aria-label": "Search" });
    const typeSel = el("select", { id: "type-filter", "aria-label": "Workflow type" }, el("option", { value: "" }, "All types"));
    const chips = el("div", { class: "chips", id: "status-filter" });
    const sub = el("div", { class: "sub" }, "\u00a0");
    const live = el("span", { class: "live on" }, "Auto-refresh");
    const tbody = el("tbody");
    const table = el("table", { class: "runs", id: "runs" },
      el("thead", null, el("tr", null,
        el("th", null, "Status"), el("th", null, "Workflow ID"), el("th", null, "Type"),
        el("th", null, "Task queue"), el("th", null, "Started"), el("th", { class: "num" }, "Duration"),
        el("th", { class: "num" }, "Events"), el("th", null, "Run ID"))),
      tbody);
    const empty = el("div", { class: "empty", hidden: true });
    const more = el("button", { class: "btn more", id: "more", hidden: true, onclick: () => loadMore() }, "More");
    const banner = el("div", { class: "banner", hidden: true });
    app.replaceChildren(
      el("div", { class: "page-head" },
        el("div", null, el("h1", null, "Workflow runs"), sub),
        el("div", { class: "spacer" }),
        live,
        el("button", { class: "btn", onclick: () => load() }, "Refresh")),
      banner,
      el("div", { class: "card" },
        el("div", { class: "filters" },
          el("div", { class: "search" }, searchSvg(), search), typeSel, chips),
        el("div", { class: "card-body flush" }, table, empty,
          el("div", { class: "more-row" }, more))));

    let timer = null;
    let seq = 0;
    // rows shown beyond the first page ("More"): a refresh asks for as many again, at most 1000
    let shown = 0;
    let next = null;
    function filters() {
      const qs = new URLSearchParams();
      if (state.status) qs.set("status", state.status);
      if (state.type) qs.set("type", state.type);
      if (state.q) qs.set("q", state.q);
      return qs;
    }
    async function load(fresh) {
      const mine = ++seq;
      const qs = filters();
      history.replaceState(null, "", "/" + (qs.toString() ? "?" + qs : ""));
      if (fresh !== false) shown = 0;
      if (shown > PAGE) qs.set("limit", String(Math.min(shown, 1000)));
      let data;
      try {
        data = await api("/api/workflows?" + qs);
        banner.hidden = true;
      } catch (e) {
        banner.hidden = false;
        banner.textContent = `Could not load runs: ${e.message}`;
        live.className = "live warn";
        return;
      }
      if (mine !== seq) return;
      show(data);
    }

    async function loadMore() {
      if (!next) return;
      const mine = ++seq;
      const qs = filters();
      qs.set("next", next);
      qs.set("limit", String(PAGE));
      more.disabled = true;
      try {
        const data = await api("/api/workflows?" + qs);
        if (mine !== seq) return;
        tbody.append(...data.workflows.map(row));
        shown = tbody.children.length;
        next = data.next_page_token || null;
        more.hidden = !next;
      } catch (e) {
        toast(`Could not load more runs: ${e.message}`, true);
      } finally {
        more.disabled = false;
      }
    }

    function show(data) {
      live.className = "live on";
      if (data.note) { banner.hidden = false; banner.textContent = data.note; }
      document.getElementById("namespace").textContent = data.namespace;
      const total = Object.values(data.counts).reduce((a, b) => a + b, 0);
      sub.textContent = `${data.total} of ${total} run${total === 1 ? "" : "s"} · namespace ${data.namespace}`;
      const known = new Set([...typeSel.options].map((o) => o.value));
      for (const t of data.types) if (!known.has(t)) typeSel.append(el("option", { value: t }, t));
      typeSel.value = state.type;
      chips.replaceChildren(
        chip("", "All", total),
        ...STATUSES.filter((s) => data.counts[s] > 0 || ["running", "completed", "failed"].includes(s) || s === state.status)
          .map((s) => chip(s, statusLabel(s), data.counts[s] || 0)));
      tbody.replaceChildren(...data.workflows.map(row));
      shown = data.workflows.length;
      next = data.next_page_token || null;
      more.hidden = !next;
      table.hidden = data.workflows.length === 0;
      empty.hidden = data.workflows.length !== 0;
      empty.replaceChildren(
        el("b", null, total === 0 ? "No workflow runs yet" : "No runs match these filters"),
        total === 0 ? "Start one with: df workflow start order_workflow --id o-1 --task-queue examples --input '[\"o-1\", 42.0]'" : "Clear the search or pick another status.");
    }

    function chip(value, label, n) {
      return el("button", {
        class: "chip" + (state.status === value ? " active" : ""), dataset: { status: value },
        onclick: () => { state.status = value; load(); },
      }, label, el("span", { class: "n" }, n));
    }

    function row(w) {
      const end = w.close_time || Date.now() / 1000;
      const url = runUrl(w.workflow_id, w.run_id);
      return el("tr", { dataset: { workflowId: w.workflow_id }, onclick: (e) => { if (!e.target.closest("a")) navigate(url); } },
        el("td", null, badge(w.status)),
        el("td", { class: "id" }, el("a", { href: url, "data-link": true }, w.workflow_id),
          w.archived ? el("span", { class: "tag archived", title: "read from the archive: retention removed it from the stream" }, "archived") : null),
        el("td", null, w.workflow_type),
        el("td", { class: "muted" }, w.task_queue),
        el("td", { title: fmtTime(w.start_time) }, fmtAgo(w.start_time), el("div", { class: "faint", style: { fontSize: "12px" } }, fmtTime(w.start_time))),
        el("td", { class: "num" }, fmtDur(end - w.start_time)),
        el("td", { class: "num" }, w.history_length),
        el("td", { class: "run" }, w.run_id.slice(0, 12) + "…"));
    }

    let debounce = null;
    search.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { state.q = search.value.trim(); load(); }, 200);
    });
    typeSel.addEventListener("change", () => { state.type = typeSel.value; load(); });
    const first = takeInitial("list", (i) => i.query === location.search.replace(/^\?/, ""));
    if (first) show(first.data); else load();
    timer = setInterval(() => { if (!document.hidden && shown <= 1000) load(false); }, 3000);
    cleanup.push(() => clearInterval(timer), () => clearTimeout(debounce));
  }

  // ------------------------------------------------------------------ run page

  function runPage(id, runId) {
    document.title = `${id} · DurableFuture`;
    const view = { data: null, receivedAt: 0, expanded: new Set(), live: "connecting" };
    // the time-travel card lives as long as the page: re-renders move around it, never through it
    view.travel = createTravel(id, view, moved);
    app.replaceChildren(el("div", { class: "loading" }, "Loading run…"));

    const render = () => {
      if (!view.data) return;
      const scrollY = window.scrollY;
      hideTip();
      place(renderRun(id, runId, view).filter(Boolean), view.travel.node);
      view.travel.sync();
      fitLabels(app);
      window.scrollTo(0, scrollY);
    };

    /** After a step in time: mark the event in the history and on the timeline. */
    function moved() {
      for (const row of document.querySelectorAll("#history tr.travel-current")) row.classList.remove("travel-current");
      const chosen = view.travel.chosen();
      const row = chosen === null ? null : document.querySelector(`#history tr.ev[data-event-id="${chosen}"]`);
      if (row) row.classList.add("travel-current");
      redrawTimeline();
    }

    // arrow keys step through the events (unless a field, the slider included, takes them)
    const onKey = (e) => {
      if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey || !view.data) return;
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      if (e.target.closest && e.target.closest("input, textarea, select, dialog, [contenteditable]")) return;
      e.preventDefault();
      view.travel.go(e.key === "ArrowLeft" ? -1 : 1);
    };
    document.addEventListener("keydown", onKey);

    let source = null;
    let poll = null;
    let clock = null;
    const accept = (data) => {
      view.data = data;
      view.receivedAt = Date.now() / 1000;
      document.getElementById("namespace").textContent = data.namespace;
      render();
    };
    const fail = (message) => {
      app.replaceChildren(
        el("div", { class: "crumbs" }, el("a", { href: "/", "data-link": true }, "Workflows"), " / ", id),
        el("div", { class: "card" }, el("div", { class: "empty" }, el("b", null, "Cannot show this run"), message)));
    };

    const first = takeInitial("run", (i) => i.workflow_id === id && (i.run_id || null) === (runId || null));
    if (first && first.error) fail(first.error);
    else if (first) { accept(first.data); follow(); }
    else api(apiRun("workflows", id, runId)).then(accept).catch((e) => fail(e.message)).finally(follow);

    function follow() {
      if (view.data && view.data.archived) return; // closed and gone from the engine: nothing moves
      if (!window.EventSource) { startPolling(); return; }
      source = new EventSource(apiRun("live", id, runId));
      source.addEventListener("update", (e) => { view.live = "on"; accept(JSON.parse(e.data)); });
      source.addEventListener("failure", (e) => {
        const err = JSON.parse(e.data);
        if (err.status === 404) { source.close(); if (!view.data) fail(err.error); }
        else { view.live = "warn"; render(); }
      });
      source.onerror = () => {
        view.live = "warn";
        render();
        // a refused stream (e.g. the session expired) is not retried: poll, which signs in again
        if (source.readyState === EventSource.CLOSED && !poll) startPolling();
      };
    }

    function startPolling() {
      poll = setInterval(() => api(apiRun("workflows", id, runId)).then(accept).catch(() => {}), 2000);
    }

    // while the run is open, move "now" along between server updates
    clock = setInterval(() => {
      if (!view.data || view.data.timeline.status !== "running" || document.hidden) return;
      if (!tooltip.hidden) return; // keep what the user is reading
      redrawTimeline();
    }, 1000);
    const redrawTimeline = () => {
      const tl = document.getElementById("timeline");
      if (!tl || !view.data) return;
      const now = liveNow(view);
      const fresh = renderTimeline(view, now);
      tl.replaceWith(fresh.chart);
      document.getElementById("legend").replaceWith(fresh.legend);
      fitLabels(fresh.chart);
      const duration = document.getElementById("run-duration");
      if (duration) duration.replaceWith(runDuration(view, now));
    };
    window.addEventListener("resize", redrawTimeline);
    cleanup.push(() => document.removeEventListener("keydown", onKey), () => view.travel.stop());

    cleanup.push(() => {
      if (source) source.close();
      clearInterval(poll);
      clearInterval(clock);
      window.removeEventListener("resize", redrawTimeline);
    });
  }

  function renderRun(id, runId, view) {
    const d = view.data;
    const w = d.workflow;
    const open = w.status === "running";
    const liveText = { on: "Live", warn: "Reconnecting…", connecting: "Connecting…" }[view.live];
    const live = d.archived
      ? el("span", { class: "tag archived", id: "archived", title: `retention removed this run from the engine; read from the archive ${d.archive}` }, "Archived")
      : open
        ? el("span", { class: `live ${view.live === "on" ? "on" : "warn"}`, id: "live" }, liveText)
        : el("span", { class: "live", id: "live" }, "Closed");
    // one moment and one span for the header and the timeline, so their durations agree
    const now = liveNow(view);
    const span = runSpan(view, now);

    const meta = el("dl", { class: "meta" },
      metaItem("Type", w.workflow_type),
      metaItem("Run ID", w.run_id, true),
      metaItem("Task queue", w.task_queue),
      metaItem("Started", fmtTime(span.start)),
      metaItem("Closed", span.open ? "—" : fmtTime(span.end)),
      metaItem(span.open ? "Running for" : "Duration", runDuration(view, now)),
      metaItem("Events", String(w.history_length)),
      w.new_run_id ? metaItem("Continued as", el("a", { href: runUrl(w.workflow_id, w.new_run_id), "data-link": true, class: "mono" }, w.new_run_id)) : null,
      ...Object.entries(w.search_attributes || {}).map(([k, v]) => metaItem(k, fmtAttr(v), true)),
      ...Object.entries(w.memo || {}).map(([k, v]) => metaItem(`memo ${k}`, JSON.stringify(v), true)));

    const head = el("div", { class: "card run-head", id: "run-header" },
      el("div", { class: "run-title" },
        badge(w.status, true),
        el("h1", { id: "run-title" }, w.workflow_id),
        el("div", { class: "run-actions" }, live,
          el("button", { class: "btn", id: "btn-signal", disabled: !open, onclick: () => openAction("signal", w) }, "Signal"),
          el("button", { class: "btn", id: "btn-cancel", disabled: !open, onclick: () => openAction("cancel", w) }, "Cancel"),
          el("button", { class: "btn danger", id: "btn-terminate", disabled: !open, onclick: () => openAction("terminate", w) }, "Terminate"))),
      meta);

    const timeline = renderTimeline(view, now);
    return [
      el("div", { class: "crumbs" }, el("a", { href: "/", "data-link": true }, "Workflows"), " / ", el("span", { class: "mono" }, w.workflow_id)),
      head,
      renderWhy(d),
      el("div", { class: "grid2 section" },
        el("div", { class: "card", id: "input" },
          el("div", { class: "card-head" }, el("h2", null, "Input"), el("span", { class: "sub" }, `${(d.input || []).length} argument(s)`)),
          jsonView(d.input)),
        renderOutcome(w)),
      renderPending(w),
      el("div", { class: "card" },
        el("div", { class: "card-head" }, el("h2", null, "Timeline"),
          el("span", { class: "sub" }, "hover a bar for details"), timeline.legend),
        timeline.chart),
      view.travel.node,
      renderHistory(d, view),
    ];
  }

  /** "Now" on the server's clock: the payload's time plus what has passed here since. */
  function liveNow(view) {
    const tl = view.data.timeline;
    return Math.max(tl.now, tl.end) + (Date.now() / 1000 - view.receivedAt);
  }

  /** The run's span from its history: first event to the close, or to ``now`` while open. */
  function runSpan(view, now) {
    const wf = view.data.timeline.workflow;
    const open = wf.end === null || wf.end === undefined;
    return { start: wf.start, end: open ? now : wf.end, open };
  }

  function runDuration(view, now) {
    const span = runSpan(view, now);
    return el("span", { id: "run-duration", dataset: { seconds: span.end - span.start } }, fmtDur(span.end - span.start));
  }

  function fmtAttr(v) {
    return Array.isArray(v) ? v.join(", ") : typeof v === "string" ? v : JSON.stringify(v);
  }

  function metaItem(label, value, mono) {
    return el("div", null, el("dt", null, label), el("dd", { class: mono ? "mono" : null }, value));
  }

  // Every timeline segment is drawn in one of these colours (class "c-<key>" in app.css, nowhere
  // else), and the legend names each colour the timeline draws, in this order.
  const SEGMENT_COLOURS = [
    ["completed", "completed"],
    ["running", "running"],
    ["scheduled", "waiting for a worker"],
    ["backoff", "retry backoff"],
    ["failed", "failed"],
    ["timed_out", "timed out"],
    ["cancelled", "cancelled"],
    ["terminated", "terminated"],
    ["continued_as_new", "continued as new"],
    ["abandoned", "abandoned"],
    ["timer", "timer"],
    ["timer_pending", "timer pending"],
    ["wait", "signal wait"],
    ["wait_pending", "waiting for a signal"],
    ["child", "child workflow"],
  ];

  /** The colour key of a segment of ``kind`` ("attempt", "workflow", "timer", ...) in ``status``. */
  function segmentColour(kind, status) {
    if (kind === "attempt") return status === "not_run" ? "backoff" : status;
    if (kind === "timer") return status === "pending" ? "timer_pending" : (status === "abandoned" ? "abandoned" : "timer");
    if (kind === "signal_wait") return { waiting: "wait_pending", timed_out: "timed_out", abandoned: "abandoned" }[status] || "wait";
    if (kind === "child") return { failed: "failed", timed_out: "timed_out", abandoned: "abandoned" }[status] || "child";
    return status; // the run itself: running, completed, failed, cancelled, ...
  }

  function renderLegend(used, signals) {
    const known = new Map(SEGMENT_COLOURS);
    const keys = [...SEGMENT_COLOURS.map(([k]) => k).filter((k) => used.has(k)),
      ...[...used].filter((k) => !known.has(k))];
    const items = keys.map((k) => el("span", { dataset: { legend: k } }, el("i", { class: `c-${k}` }), known.get(k) || statusLabel(k)));
    if (signals) items.push(el("span", { dataset: { legend: "signal" } }, el("i", { class: "diamond" }), "signal"));
    return el("div", { class: "legend", id: "legend" }, items);
  }

  function renderWhy(d) {
    const w = d.workflow;
    const open = w.status === "running";
    const tone = open ? "running" : (w.status === "completed" || w.status === "continued_as_new" ? "closed-ok" : "closed-bad");
    const title = open ? "Why it is where it is" : "Outcome";
    const items = d.why.map((r) => {
      let icon = ["info", "i"];
      if (/fail|error|no worker|nondetermin/i.test(r)) icon = ["bad", "!"];
      else if (/retry|waiting|sleeping|cancel/i.test(r)) icon = ["warn", "…"];
      if (!open) icon = w.status === "completed" ? ["ok", "✓"] : ["bad", "!"];
      return el("li", null, el("span", { class: `icon ${icon[0]}` }, icon[1]), el("span", null, r));
    });
    return el("div", { class: `card why-card ${tone}`, id: "why" },
      el("div", { class: "card-head" }, el("h2", null, title), el("span", { class: "sub" }, open ? "from history and live task-queue state · df why" : "df why")),
      el("div", { class: "card-body" }, el("ul", { class: "why" }, items)));
  }

  function renderFailure(f) {
    return el("div", { class: "failure-box" },
      el("div", { class: "ftype" }, f.type),
      el("div", { class: "fmsg" }, f.message),
      ...causes(f).map((c) => el("div", { class: "fcause" }, "caused by ", el("span", { class: "mono" }, `${c.type}: ${c.message}`))),
      f.stack ? el("details", { class: "stack" }, el("summary", null, "Stack trace"), el("pre", null, f.stack)) : null);
  }

  function causes(f) {
    const out = [];
    for (let c = f.cause; c && out.length < 16; c = c.cause) out.push(c);
    return out;
  }

  function renderOutcome(w) {
    let body;
    let title = "Result";
    if (w.failure) { title = "Failure"; body = renderFailure(w.failure); }
    else if (w.status === "completed") body = jsonView(w.result);
    else if (w.status === "running") body = el("div", { class: "card-body muted" }, "The run has not finished yet.");
    else body = el("div", { class: "card-body muted" }, `The run ended: ${statusLabel(w.status)}.`);
    return el("div", { class: "card", id: "result" },
      el("div", { class: "card-head" }, el("h2", null, title), w.close_time ? el("span", { class: "sub" }, fmtTime(w.close_time)) : null),
      body);
  }

  function renderPending(w) {
    const acts = w.pending_activities || [];
    const timers = w.pending_timers || [];
    if (!acts.length && !timers.length && !w.last_workflow_task_failure) return null;
    const rows = [
      ...acts.map((a) => el("tr", null,
        el("td", null, el("span", { class: "etag activity" }, "activity")),
        el("td", { class: "mono" }, `${a.name} #${a.activity_id}`),
        el("td", null, `attempt ${a.attempt}`, a.started ? " · running" : " · waiting for a worker"),
        el("td", null, a.next_retry_time ? `next retry ${fmtTime(a.next_retry_time)}` : "—"),
        el("td", { class: "mono", style: { color: "var(--failed)" } }, a.last_failure ? a.last_failure.describe : ""))),
      ...timers.map((t) => el("tr", null,
        el("td", null, el("span", { class: "etag timer" }, "timer")),
        el("td", { class: "mono" }, `timer #${t.seq}`),
        el("td", null, "sleeping"),
        el("td", null, `fires ${fmtTime(t.fire_at)}`),
        el("td", null, ""))),
    ];
    if (w.last_workflow_task_failure) {
      rows.push(el("tr", null,
        el("td", null, el("span", { class: "etag bad" }, "task")),
        el("td", { class: "mono" }, "workflow task"),
        el("td", null, "failing, retried with backoff"),
        el("td", null, ""),
        el("td", { class: "mono", style: { color: "var(--failed)" } }, w.last_workflow_task_failure.describe)));
    }
    return el("div", { class: "card", id: "pending" },
      el("div", { class: "card-head" }, el("h2", null, "Pending"), el("span", { class: "sub" }, "what the run waits on now")),
      el("div", { class: "card-body flush" }, el("table", { class: "pending" },
        el("thead", null, el("tr", null, el("th", null, "Kind"), el("th", null, "What"), el("th", null, "State"), el("th", null, "When"), el("th", null, "Last failure"))),
        el("tbody", null, rows))));
  }

  // ------------------------------------------------------------------ timeline

  function niceStep(span, target) {
    const raw = span / target;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (raw <= m * mag) return m * mag;
    return 10 * mag;
  }

  function fmtOffset(s, step) {
    if (s === 0) return "0";
    if (step < 1) return `+${(s * 1000).toFixed(step * 1000 < 1 ? 1 : 0)} ms`;
    if (step < 60) return `+${s.toFixed(step < 10 && s % 1 ? 1 : 0)} s`;
    if (step < 3600) return `+${(s / 60).toFixed(s % 60 ? 1 : 0)} min`;
    return `+${(s / 3600).toFixed(s % 3600 ? 1 : 0)} h`;
  }

  function renderTimeline(view, liveTime) {
    const tl = view.data.timeline;
    const runTime = runSpan(view, liveTime);
    const open = runTime.open;
    const now = runTime.end;
    const t0 = tl.start;
    const t1 = Math.max(now, t0 + 0.001);
    const span = t1 - t0;
    const pct = (t) => `${(Math.min(Math.max(t, t0), t1) - t0) / span * 100}%`;
    const width = (a, b) => `${(Math.min(b, t1) - Math.max(a, t0)) / span * 100}%`;
    const rel = (t) => fmtDur(t - t0);

    const grid = el("div", { class: "tl-grid" });
    const axis = el("div", { class: "tl-axis" });
    const step = niceStep(span, 9);
    for (let s = 0; s <= span + 1e-9; s += step) {
      const cls = s === 0 ? "tick first" : (span - s < step * 0.35 ? "tick last" : "tick");
      if (cls === "tick last" && s !== 0 && span - s > 1e-9) continue;
      axis.append(el("span", { class: cls, style: { left: pct(t0 + s) } }, fmtOffset(s, step)));
      if (s > 0) grid.append(el("div", { class: "gridline", style: { left: pct(t0 + s) } }));
    }
    if (open) grid.append(el("div", { class: "nowline", style: { left: "100%" } }));
    const travelAt = view.travel ? view.travel.chosenAt() : null;
    if (travelAt !== null) grid.append(el("div", { class: "travel-cursor", id: "travel-cursor", style: { left: pct(travelAt) } }));

    const used = new Set();
    /** A segment bar, coloured by its legend key (and only by it). */
    const seg = (kind, status, cls, attrs, ...children) => {
      const colour = segmentColour(kind, status);
      used.add(colour);
      const bar = el("div", { ...attrs, class: `bar ${cls} c-${colour}`.replace(/ +/g, " ").trim() }, ...children);
      bar.dataset.colour = colour;
      return bar;
    };
    const rows = [];
    const addRow = (label, track, dataset) => {
      rows.push(el("div", { class: "tl-label", dataset }, label), el("div", { class: "tl-track", dataset }, track));
    };

    // workflow row: start, close, and the run-level markers
    const wf = tl.workflow;
    const wfEnd = runTime.end;
    const wfTrack = [
      withTip(seg("workflow", wf.status, "wf", { style: { left: pct(wf.start), width: width(wf.start, wfEnd) }, dataset: { status: wf.status } }),
        () => [el("b", null, `workflow ${statusLabel(wf.status)}`), `started ${fmtClock(wf.start)}`, wf.end ? `closed ${fmtClock(wf.end)} (+${rel(wf.end)})` : "still running"]),
      withTip(el("div", { class: "mark dot", style: { left: pct(wf.start) } }), () => [el("b", null, "WorkflowStarted"), fmtClock(wf.start)]),
    ];
    if (wf.end) {
      wfTrack.push(withTip(el("div", { class: `mark dot ${wf.status}`, style: { left: pct(wf.end) } }),
        () => [el("b", null, `workflow ${statusLabel(wf.status)}`), `${fmtClock(wf.end)} (+${rel(wf.end)})`,
          wf.failure ? el("div", { class: "tt-err" }, wf.failure.describe) : null, wf.reason ? `reason: ${wf.reason}` : null].filter(Boolean)));
    }
    for (const m of tl.markers) {
      wfTrack.push(withTip(el("div", { class: `mark flag ${m.kind}`, style: { left: pct(m.at) } }),
        () => [el("b", null, m.label), `event ${m.event_id} · +${rel(m.at)}`,
          m.detail && m.detail.describe ? el("div", { class: "tt-err" }, m.detail.describe) : (m.detail ? JSON.stringify(m.detail) : null)].filter(Boolean)));
    }
    addRow([el("div", { class: "nm" }, view.data.workflow.workflow_type),
      el("div", { class: "sm" }, el("span", { class: "kind workflow" }, "run"), `${statusLabel(wf.status)} · `,
        el("span", { class: "run-duration", dataset: { seconds: runTime.end - runTime.start } }, fmtDur(runTime.end - runTime.start)))],
    wfTrack, { kind: "workflow" });

    for (const r of tl.rows) {
      const rEnd = r.end === null ? now : r.end;
      const track = [];
      let sm = "";
      if (r.kind === "activity") {
        const n = r.attempts.length;
        const tries = r.attempts.filter((a) => a.status !== "backoff" && a.status !== "not_run").length;
        sm = `${statusLabel(r.status)}${tries > 1 ? ` · ${tries} attempts` : ""} · ${fmtDur(rEnd - r.start)}`;
        track.push(el("div", { class: "span", style: { left: pct(r.start), width: width(r.start, rEnd) } }));
        r.attempts.forEach((a, i) => {
          const aEnd = a.end === null ? (a.status === "backoff" ? Math.max(a.start, now) : now) : a.end;
          if (a.status === "backoff" && a.end === null) {
            // the gap before this attempt is the backoff: draw it as dashed up to the retry time
            const prev = r.attempts[i - 1];
            const from = prev && prev.end ? prev.end : r.start;
            track.push(withTip(seg("attempt", "backoff", "", { style: { left: pct(from), width: width(from, Math.min(a.start, t1)) }, dataset: { status: "backoff" } }, "backoff"),
              () => [el("b", null, `attempt ${a.attempt} scheduled`), `retry at ${fmtClock(a.start)}`]));
            return;
          }
          const bar = seg("attempt", a.status, "", {
            style: { left: pct(a.start), width: width(a.start, aEnd) },
            dataset: { activity: r.name, attempt: a.attempt, status: a.status },
          }, a.status === "running" || a.status === "scheduled" ? `#${a.attempt}` : `#${a.attempt} · ${fmtDur(aEnd - a.start)}`);
          if (!a.failure) bar.dataset.note = "1";
          withTip(bar, () => [
            el("b", null, `${r.name} · attempt ${a.attempt}${n > 1 ? ` of ${n}` : ""}`),
            `${statusLabel(a.status)} · ${fmtDur(aEnd - a.start)}`,
            `${fmtClock(a.start)} → ${a.end ? fmtClock(a.end) : "now"}`,
            a.failure ? el("div", { class: "tt-err" }, a.failure.describe) : null,
            a.retry_at ? `next attempt at ${fmtClock(a.retry_at)} (backoff ${fmtDur(a.retry_at - a.end)})` : null,
          ].filter(Boolean));
          track.push(bar);
          if (a.failure) {
            track.push(withTip(el("div", { class: "mark x", style: { left: pct(aEnd) }, dataset: { failure: a.attempt } }, "×"),
              () => [el("b", null, `attempt ${a.attempt} ${statusLabel(a.status)}`), el("div", { class: "tt-err" }, a.failure.describe)]));
          }
        });
      } else if (r.kind === "timer") {
        const fireAt = r.detail.fire_at;
        const drawEnd = r.end === null ? Math.min(fireAt, t1) : r.end;
        sm = r.end === null ? `fires ${fmtClock(fireAt)}` : `fired after ${fmtDur(r.end - r.start)}`;
        track.push(withTip(seg("timer", r.status, "timer", { style: { left: pct(r.start), width: width(r.start, drawEnd) }, dataset: { timer: r.seq, status: r.status } }, r.name),
          () => [el("b", null, `timer #${r.seq}: ${r.name}`), `started ${fmtClock(r.start)}`, r.end ? `fired ${fmtClock(r.end)}` : `fires ${fmtClock(fireAt)}`]));
        if (r.end === null && fireAt > t1) track.push(el("span", { class: "bar-note", style: { left: "100%" } }, "→"));
      } else if (r.kind === "signal_wait") {
        sm = r.status === "received" ? `received after ${fmtDur(rEnd - r.start)}` : statusLabel(r.status);
        track.push(withTip(seg("signal_wait", r.status, "wait", { style: { left: pct(r.start), width: width(r.start, rEnd) }, dataset: { status: r.status } }, r.detail.signal),
          () => [el("b", null, `wait for signal ${r.name}`), statusLabel(r.status), r.detail.deadline ? `times out ${fmtClock(r.detail.deadline)}` : "no timeout"]));
      } else if (r.kind === "child") {
        sm = `${r.detail.workflow_id} · ${statusLabel(r.status)}`;
        track.push(withTip(seg("child", r.status, "child", { style: { left: pct(r.start), width: width(r.start, rEnd) }, dataset: { status: r.status } }, statusLabel(r.status)),
          () => [el("b", null, `child ${r.name}`), `id ${r.detail.workflow_id}`, statusLabel(r.status)]));
      } else {
        // any other command (df.wait_condition, ...): one bar from its event to its end
        sm = r.status === "waiting" ? (r.detail.deadline ? `times out ${fmtClock(r.detail.deadline)}` : "waiting") : statusLabel(r.status);
        track.push(withTip(seg("signal_wait", r.status, "wait", { style: { left: pct(r.start), width: width(r.start, rEnd) }, dataset: { status: r.status } }, r.name),
          () => [el("b", null, r.name), statusLabel(r.status), r.detail.deadline ? `times out ${fmtClock(r.detail.deadline)}` : "no timeout"]));
      }
      const kindLabel = { activity: "activity", timer: "timer", signal_wait: "wait", child: "child", command: "wait" }[r.kind] || r.kind;
      const name = r.kind === "child" ? el("a", { href: runUrl(r.detail.workflow_id), "data-link": true }, r.name) : r.name;
      addRow([el("div", { class: "nm", title: `${r.name} #${r.seq}` }, name, el("span", { class: "faint" }, ` #${r.seq}`)),
        el("div", { class: "sm" }, el("span", { class: `kind ${r.kind}` }, kindLabel), sm)], track, { kind: r.kind, name: r.name, status: r.status });
    }

    if (tl.signals.length) {
      const track = tl.signals.map((s) => withTip(
        el("div", { class: "mark diamond", style: { left: pct(s.at) }, dataset: { signal: s.name } }),
        () => [el("b", null, `signal ${s.name}`), `event ${s.event_id} · ${fmtClock(s.at)}`, `args ${JSON.stringify(s.args)}`]));
      addRow([el("div", { class: "nm" }, [...new Set(tl.signals.map((s) => s.name))].join(", ")),
        el("div", { class: "sm" }, el("span", { class: "kind signals" }, "signals"), `${tl.signals.length} received`)], track, { kind: "signals" });
    }

    const chart = el("div", { class: "tl", id: "timeline", dataset: { testid: "timeline" } },
      grid, el("div", { class: "tl-axis-label" }, "since start"), axis, ...rows);
    return { chart, legend: renderLegend(used, tl.signals.length > 0) };
  }

  // ------------------------------------------------------------------ history

  const EVENT_TAG = (t) => {
    if (/Failed|TimedOut|Terminated/.test(t)) return "bad";
    if (t.startsWith("Activity")) return "activity";
    if (t.startsWith("Timer")) return "timer";
    if (t.startsWith("Signal")) return "signal";
    if (t.startsWith("ChildWorkflow")) return "child";
    if (t.startsWith("Workflow")) return "wf";
    return "";
  };

  function summarize(e) {
    const a = (args) => (args && args.length ? `(${args.map((x) => JSON.stringify(x)).join(", ")})` : "()");
    switch (e.t) {
      case "WorkflowStarted": return `${e.workflow_type}${a(e.args)} on ${e.task_queue}`;
      case "ActivityScheduled": return `${e.name}${a(e.args)} #${e.seq}`;
      case "ActivityStarted": return `#${e.seq} attempt ${e.attempt}${e.worker ? ` on ${e.worker}` : ""}`;
      case "ActivityCompleted": return `#${e.seq} attempt ${e.attempt} → ${JSON.stringify(e.result)}`;
      case "ActivityRetryScheduled": return `#${e.seq} attempt ${e.attempt} failed: ${e.failure.type}: ${e.failure.message} — retry in ${fmtDur(e.delay)}`;
      case "ActivityFailed": case "ActivityTimedOut": return `#${e.seq} attempt ${e.attempt}: ${e.failure.type}: ${e.failure.message}`;
      case "TimerStarted": return `#${e.seq} for ${fmtDur(e.duration)}, fires ${fmtClock(e.fire_at)}`;
      case "TimerFired": case "SignalWaitTimedOut": return `#${e.seq}`;
      case "SignalWaitStarted": return `#${e.seq} ${e.name}${e.timeout ? `, timeout ${fmtDur(e.timeout)}` : ""}`;
      case "SignalReceived": return `${e.name}${a(e.args)}`;
      case "WorkflowCompleted": return `→ ${JSON.stringify(e.result)}`;
      case "WorkflowFailed": case "WorkflowTaskFailed": return `${e.failure.type}: ${e.failure.message}`;
      case "WorkflowTerminated": case "CancelRequested": return e.reason || "";
      case "WorkflowContinuedAsNew": return `as run ${e.new_run_id}${a(e.args)}`;
      case "ChildWorkflowScheduled": return `${e.workflow_type} id ${e.workflow_id} #${e.seq}`;
      case "ChildWorkflowCompleted": return `#${e.seq} → ${JSON.stringify(e.result)}`;
      case "ChildWorkflowFailed": return `#${e.seq} ${e.failure.type}: ${e.failure.message}`;
      default: {
        const rest = Object.fromEntries(Object.entries(e).filter(([k]) => !["t", "event_id", "at", "based_on"].includes(k)));
        return JSON.stringify(rest);
      }
    }
  }

  /** Labels that do not fit inside their bar go right of it (or away, for failed attempts). */
  function fitLabels(root) {
    for (const bar of root.querySelectorAll(".tl-track .bar")) {
      if (!bar.textContent || bar.scrollWidth <= bar.clientWidth + 1) continue;
      const text = bar.textContent;
      bar.textContent = "";
      bar.setAttribute("aria-label", text);
      if (bar.dataset.note) {
        const note = el("span", { class: "bar-note" }, text);
        note.style.left = `${bar.offsetLeft + bar.offsetWidth}px`;
        bar.after(note);
        const track = bar.parentElement;
        if (bar.offsetLeft + bar.offsetWidth + note.offsetWidth > track.clientWidth) {
          note.style.left = `${Math.max(0, bar.offsetLeft - note.offsetWidth - 4)}px`;
        }
      }
    }
  }

  const HISTORY_PAGE = 500;

  function renderHistory(d, view) {
    const t0 = d.history.length ? d.history[0].at : 0;
    const rows = [];
    const shown = view.allEvents ? d.history : d.history.slice(0, HISTORY_PAGE);
    const travelled = view.travel ? view.travel.chosen() : null;
    for (const e of shown) {
      const expanded = view.expanded.has(e.event_id);
      const detail = summarize(e);
      rows.push(el("tr", {
        class: "ev" + (expanded ? " expanded" : "") + (e.event_id === travelled ? " travel-current" : ""),
        dataset: { eventId: e.event_id, type: e.t },
        onclick: () => {
          if (view.expanded.has(e.event_id)) view.expanded.delete(e.event_id); else view.expanded.add(e.event_id);
          document.getElementById("history").replaceWith(renderHistory(d, view));
        },
      },
      el("td", { class: "eid" }, e.event_id),
      el("td", { class: "time" }, fmtClock(e.at), el("div", { class: "rel" }, `+${fmtDur(e.at - t0)}`)),
      el("td", { class: "etype" }, el("span", { class: `etag ${EVENT_TAG(e.t)}` }, e.t)),
      el("td", { class: "detail" }, detail.length > 240 ? detail.slice(0, 240) + "…" : detail)));
      if (expanded) rows.push(el("tr", { class: "raw" }, el("td", { colspan: 4 }, jsonView(e))));
    }
    if (shown.length < d.history.length) {
      rows.push(el("tr", null, el("td", { colspan: 4, class: "more" },
        el("button", {
          class: "btn", onclick: () => {
            view.allEvents = true;
            document.getElementById("history").replaceWith(renderHistory(d, view));
          },
        }, `Show all ${d.history.length} events`))));
    }
    return el("div", { class: "card", id: "history" },
      el("div", { class: "card-head" }, el("h2", null, "Event history"), el("span", { class: "sub" }, `${d.history.length} events · click a row for its JSON`)),
      el("div", { class: "card-body flush" }, el("table", { class: "events" },
        el("thead", null, el("tr", null, el("th", { class: "num" }, "#"), el("th", null, "Time"), el("th", null, "Event"), el("th", null, "Details"))),
        el("tbody", null, rows))));
  }

  // ------------------------------------------------------------------ time travel

  /** Show ``nodes`` as the page; ``keep`` (one of them, already shown) is never taken out of
   * the document, so a focused or dragged control inside it stays focused or dragged. */
  function place(nodes, keep) {
    const i = nodes.indexOf(keep);
    if (i < 0 || keep.parentNode !== app) { app.replaceChildren(...nodes); return; }
    while (keep.previousSibling) keep.previousSibling.remove();
    while (keep.nextSibling) keep.nextSibling.remove();
    keep.before(...nodes.slice(0, i));
    keep.after(...nodes.slice(i + 1));
  }

  /**
   * The time-travel card: a slider (with buttons, and the arrow keys) over the run's events.
   * At each event it shows the run as it was then, from GET /api/history-state/<id>?event=N:
   * the state history records and, when the UI has the workflow code, where the code was
   * paused and what its query handlers answered. At the last event it follows the run.
   */
  function createTravel(id, view, moved) {
    const t = { step: null, shown: null, cache: new Map(), runId: null, seq: 0, timer: null };
    const slider = el("input", { type: "range", id: "travel-slider", min: "1", max: "1", step: "1", "aria-label": "Event in history" });
    const button = (bid, label, title, where) => el("button", { class: "btn", id: bid, title, "aria-label": title, onclick: () => go(where) }, label);
    const buttons = [
      button("travel-first", "First", "First event", "first"),
      button("travel-prev", "◀", "Previous event (←)", -1),
      button("travel-next", "▶", "Next event (→)", 1),
      button("travel-last", "Last", "Last event", "last"),
    ];
    const position = el("div", { class: "travel-position", id: "travel-position" });
    const statePane = el("div", { class: "travel-pane", id: "travel-state" });
    const codePane = el("div", { class: "travel-pane", id: "travel-code" });
    const node = el("div", { class: "card", id: "travel" },
      el("div", { class: "card-head" }, el("h2", null, "Time travel"),
        el("span", { class: "sub" }, "the run as it was after each event · ← → to step")),
      el("div", { class: "card-body" },
        el("div", { class: "travel-controls" }, buttons[0], buttons[1], slider, buttons[2], buttons[3]),
        position,
        el("div", { class: "travel-panes" }, statePane, codePane)));
    slider.addEventListener("input", () => to(Number(slider.value)));

    const total = () => view.data.history.length;
    /** The event shown: the one chosen, or the latest while following the run. */
    const current = () => (t.step === null ? total() : Math.min(t.step, total()));

    function go(where) {
      if (!view.data) return;
      if (where === "first") to(1);
      else if (where === "last") to(total());
      else to(Math.min(total(), Math.max(1, current() + where)));
    }

    function to(k) {
      t.step = k >= total() ? null : k;
      sync();
      moved();
    }

    /** Bring the card up to date with the run's data and the chosen event. */
    function sync() {
      const d = view.data;
      if (!d) return;
      if (d.workflow.run_id !== t.runId) {
        t.runId = d.workflow.run_id;
        t.cache.clear();
        t.step = null;
        t.shown = null;
      }
      const n = total();
      const k = current();
      slider.max = String(n);
      slider.value = String(k);
      buttons[0].disabled = buttons[1].disabled = k <= 1;
      buttons[2].disabled = buttons[3].disabled = k >= n;
      const e = d.history[k - 1];
      position.dataset.event = k;
      const following = t.step === null && d.workflow.status === "running";
      position.replaceChildren(...[
        el("b", null, `Event ${k} of ${n}`),
        el("span", { class: `etag ${EVENT_TAG(e.t)}` }, e.t),
        el("span", { class: "muted" }, `${summarize(e).slice(0, 120)} · +${fmtDur(e.at - d.history[0].at)} · ${fmtClock(e.at)}`),
        following ? el("span", { class: "travel-following" }, "following the run") : null,
      ].filter(Boolean));
      if (t.shown && t.shown.event_id === k && t.shown.events === n) return;
      const hit = t.cache.get(k);
      if (hit) { show(hit); return; }
      load(k);
    }

    function load(k) {
      node.classList.add("busy");
      if (!t.shown) statePane.replaceChildren(el("p", { class: "muted" }, `Replaying the run to event ${k}…`));
      clearTimeout(t.timer);
      const mine = ++t.seq;
      const runId = t.runId;
      // while the slider is dragged, ask for where it stops, not for every event it passes
      t.timer = setTimeout(() => {
        const qs = new URLSearchParams({ run_id: runId, event: String(k) });
        api(`/api/history-state/${encodeURIComponent(id)}?${qs}`)
          .then((body) => {
            if (body.event_id < body.events) t.cache.set(k, body); // the last one may still change
            if (mine === t.seq && runId === t.runId) show(body);
          })
          .catch((err) => {
            if (mine !== t.seq) return;
            node.classList.remove("busy");
            codePane.replaceChildren(el("div", { class: "banner", id: "travel-error" }, `Could not read event ${k}: ${err.message}`));
          });
      }, t.shown ? 60 : 0);
    }

    function show(body) {
      if (body.event_id !== current()) return;
      t.shown = body;
      node.classList.remove("busy");
      node.dataset.shown = body.event_id;
      statePane.replaceChildren(...renderTravelState(body));
      codePane.replaceChildren(...renderTravelCode(body));
    }

    return {
      node,
      sync,
      go,
      /** The event chosen on the slider, or null while following the latest. */
      chosen: () => (t.step === null || !view.data ? null : current()),
      chosenAt: () => (t.step === null || !view.data ? null : view.data.history[current() - 1].at),
      stop: () => { clearTimeout(t.timer); t.seq++; },
    };
  }

  function renderTravelState(s) {
    const st = s.state;
    const item = (kind, name, tag, ...rest) => el("li", { dataset: { kind, name } }, el("span", { class: `etag ${tag}` }, kind.replace("_", " ")), " ", ...rest);
    const items = [
      ...st.pending_activities.map((a) => {
        const how = a.started ? "running" : (a.next_retry_time ? `retry due ${fmtClock(a.next_retry_time)}` : "waiting for a worker");
        const li = item("activity", a.name, "activity", el("span", { class: "mono" }, `${a.name} #${a.activity_id}`), ` · attempt ${a.attempt} · ${how}`,
          a.last_failure ? el("div", { class: "travel-failure" }, `last failure: ${a.last_failure.describe}`) : null);
        li.dataset.attempt = a.attempt;
        return li;
      }),
      ...st.pending_timers.map((tm) => item("timer", String(tm.seq), "timer", el("span", { class: "mono" }, `timer #${tm.seq}`), ` · fires ${fmtClock(tm.fire_at)}`)),
      ...st.signal_waits.map((w) => item("signal_wait", w.name, "signal", el("span", { class: "mono" }, w.name), ` · waiting since ${fmtClock(w.since)}`,
        w.deadline ? ` · times out ${fmtClock(w.deadline)}` : " · no timeout")),
      ...st.children.map((c) => item("child", c.workflow_id, "child", el("span", { class: "mono" }, c.workflow_type), ` · id ${c.workflow_id}`,
        c.run_id ? ` · run ${c.run_id.slice(0, 12)}…` : " · starting")),
      ...Object.entries(st.buffered_signals).map(([name, count]) => item("signal", name, "signal", el("span", { class: "mono" }, name),
        ` · ${count} received, not taken by a wait yet`)),
      st.cancel_requested ? item("cancel", "", "bad", "cancellation requested") : null,
      st.last_workflow_task_failure ? item("task", "", "bad", `workflow task failing: ${st.last_workflow_task_failure.describe}`) : null,
    ].filter(Boolean);
    const out = [
      el("div", { class: "travel-status", id: "travel-status", dataset: { status: st.status } }, badge(st.status),
        el("span", { class: "muted" }, ` after event ${s.event_id} (${s.event.t})`)),
      el("h3", null, "Pending then"),
      items.length ? el("ul", { class: "travel-list", id: "travel-pending" }, items)
        : el("p", { class: "muted", id: "travel-pending" }, "Nothing pending."),
    ];
    if (st.status === "completed") out.push(el("h3", null, "Result"), jsonView(st.result));
    else if (st.failure) out.push(el("h3", null, "Failure"), el("div", { class: "travel-failure" }, st.failure.describe));
    return out;
  }

  function renderTravelCode(s) {
    const c = s.code;
    const out = [el("h3", null, "In the code")];
    if (!c.available) {
      out.push(el("p", { class: "travel-note", id: "travel-note" }, c.note));
      return out;
    }
    if (c.error) {
      out.push(el("div", { class: "failure-box", id: "travel-replay-error" },
        el("div", { class: "ftype" }, "The code does not replay to this event"), el("div", { class: "fmsg mono" }, c.error)));
      return out;
    }
    if (c.finished) {
      out.push(el("p", { id: "travel-where", dataset: { finished: "1" } }, "Finished: ", el("span", { class: "mono" }, c.outcome || "")));
    } else if (c.stack.length) {
      const chain = [];
      c.stack.forEach((f, i) => {
        if (i) chain.push(" → ");
        chain.push(el("span", { class: "mono", title: f.file }, `${f.display}:${f.line}`), el("span", { class: "muted" }, ` in ${f.function}`));
      });
      const inner = c.stack[c.stack.length - 1];
      out.push(el("p", { id: "travel-where", dataset: { file: inner.display, line: inner.line } }, "Paused at ", ...chain));
      if (c.source) out.push(renderSource(c.source));
      if (c.waiting_for.length) {
        out.push(el("p", { class: "muted", id: "travel-waiting" }, "Waiting on ",
          c.waiting_for.map((w) => `${w.kind} ${w.name ? `${w.name} ` : ""}#${w.seq}`).join(", ")));
      }
    }
    out.push(el("h3", null, "Queries then"));
    if (!c.queries.length) {
      out.push(el("p", { class: "muted", id: "travel-queries" }, "No query handler registered yet."));
    } else {
      out.push(el("table", { class: "travel-queries", id: "travel-queries" }, el("tbody", null, c.queries.map((q) =>
        el("tr", { dataset: { query: q.name, ok: q.ok ? "1" : "0" } },
          el("td", { class: "mono" }, q.name),
          el("td", null, q.ok ? jsonView(q.result) : el("span", { class: "travel-failure" }, q.error)))))));
    }
    return out;
  }

  /** Source lines with numbers, the paused one marked (text only, never HTML). */
  function renderSource(src) {
    const pre = el("pre", { class: "travel-source", id: "travel-source" });
    src.lines.forEach((text, i) => {
      const n = src.first + i;
      pre.append(el("div", { class: n === src.line ? "current" : null, dataset: { line: n } },
        el("span", { class: "ln" }, String(n)), text || " "));
    });
    return pre;
  }

  // ------------------------------------------------------------------ schedules

  const scheduleUrl = (id) => `/schedules/${encodeURIComponent(id)}`;
  // as for runs, the id is the last part of every schedule API path
  const apiSchedule = (what, id) => `/api/${what}/${encodeURIComponent(id)}`;

  function specText(spec) {
    const every = (s) => fmtDur(s).replace(/\.00 s$/, " s");
    const parts = [
      ...spec.cron.map((c) => `cron "${c}"`),
      ...spec.intervals.map((i) => `every ${every(i.every_s)}` + (i.offset_s ? ` + ${every(i.offset_s)}` : "")),
    ];
    let text = parts.join(", ") + (spec.timezone !== "UTC" ? ` (${spec.timezone})` : "");
    if (spec.jitter_s) text += `, jitter ${every(spec.jitter_s)}`;
    if (spec.start_at) text += `, from ${fmtTime(spec.start_at)}`;
    if (spec.end_at) text += `, until ${fmtTime(spec.end_at)}`;
    return text;
  }

  /** "in 5s", "in 3 min", ... for a time ahead (the next runs). */
  function fmtIn(ts) {
    const s = ts - Date.now() / 1000;
    if (s < 1) return "due now";
    return `in ${fmtDur(s).replace(/\.\d+ s$/, " s")}`;
  }

  const scheduleBadge = (s) => badge(s.paused ? "paused" : (s.status || (s.next_action_times.length ? "active" : "ended")));

  async function scheduleAction(kind, id, body) {
    const res = await api(apiSchedule(`schedule-${kind}`, id), {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
    });
    toast(res.message);
    return res;
  }

  function scheduleButtons(s, after) {
    const act = (kind, body) => scheduleAction(kind, s.schedule_id, body).then(after).catch((e) => toast(e.message, true));
    return el("div", { class: "run-actions" },
      s.paused
        ? el("button", { class: "btn primary btn-unpause", dataset: { schedule: s.schedule_id }, onclick: (e) => { e.stopPropagation(); act("unpause"); } }, "Unpause")
        : el("button", { class: "btn btn-pause", dataset: { schedule: s.schedule_id }, onclick: (e) => { e.stopPropagation(); act("pause", { note: "paused from the web UI" }); } }, "Pause"),
      el("button", { class: "btn btn-trigger", dataset: { schedule: s.schedule_id }, onclick: (e) => { e.stopPropagation(); act("trigger"); } }, "Trigger now"));
  }

  function schedulesPage() {
    document.title = "Schedules · DurableFuture";
    const sub = el("div", { class: "sub" }, "\u00a0");
    const tbody = el("tbody");
    const table = el("table", { class: "runs", id: "schedules" },
      el("thead", null, el("tr", null,
        el("th", null, "State"), el("th", null, "Schedule"), el("th", null, "Workflow"),
        el("th", null, "Spec"), el("th", null, "Next runs"), el("th", null, "Last action"),
        el("th", { class: "num" }, "Taken / skipped / missed"), el("th", null, ""))),
      tbody);
    const empty = el("div", { class: "empty", hidden: true },
      el("b", null, "No schedules yet"),
      "Create one with: df schedule create nightly --workflow report --cron \"30 2 * * *\"");
    const banner = el("div", { class: "banner", hidden: true });
    app.replaceChildren(
      el("div", { class: "page-head" },
        el("div", null, el("h1", null, "Schedules"), sub),
        el("div", { class: "spacer" }),
        el("button", { class: "btn", onclick: () => load() }, "Refresh")),
      banner,
      el("div", { class: "card" }, el("div", { class: "card-body flush" }, table, empty)));

    let seq = 0;
    async function load() {
      const mine = ++seq;
      try {
        const data = await api("/api/schedules");
        banner.hidden = true;
        if (mine === seq) show(data);
      } catch (e) {
        banner.hidden = false;
        banner.textContent = `Could not load schedules: ${e.message}`;
      }
    }

    function show(data) {
      document.getElementById("namespace").textContent = data.namespace;
      const n = data.schedules.length;
      sub.textContent = `${n} schedule${n === 1 ? "" : "s"} · namespace ${data.namespace}`;
      tbody.replaceChildren(...data.schedules.map(row));
      table.hidden = n === 0;
      empty.hidden = n !== 0;
    }

    function row(s) {
      const url = scheduleUrl(s.schedule_id);
      const last = s.last_action;
      return el("tr", { dataset: { scheduleId: s.schedule_id }, onclick: (e) => { if (!e.target.closest("a, button")) navigate(url); } },
        el("td", null, scheduleBadge(s)),
        el("td", { class: "id" }, el("a", { href: url, "data-link": true }, s.schedule_id)),
        el("td", null, s.workflow_type, el("div", { class: "faint", style: { fontSize: "12px" } }, s.task_queue)),
        el("td", { class: "muted" }, specText(s.spec), el("div", { class: "faint", style: { fontSize: "12px" } }, `overlap ${s.overlap}`)),
        el("td", { class: "next-runs" }, s.next_action_times.length ? s.next_action_times.map((t) => el("div", null, fmtTime(t))) : (s.paused ? "paused" : "none")),
        el("td", null, last ? [badge(last.status), " ", el("a", { href: runUrl(last.workflow_id, last.run_id || null), "data-link": true, class: "mono" }, last.workflow_id)] : "—"),
        el("td", { class: "num" }, `${s.actions_taken} / ${s.actions_skipped} / ${s.actions_missed}`),
        el("td", null, scheduleButtons(s, load)));
    }

    const first = takeInitial("schedules", () => true);
    if (first) show(first.data); else load();
    const timer = setInterval(() => { if (!document.hidden) load(); }, 3000);
    cleanup.push(() => clearInterval(timer));
  }

  function schedulePage(id) {
    document.title = `${id} · Schedules · DurableFuture`;
    app.replaceChildren(el("div", { class: "loading" }, "Loading schedule…"));
    const crumbs = () => el("div", { class: "crumbs" }, el("a", { href: "/schedules", "data-link": true }, "Schedules"), " / ", el("span", { class: "mono" }, id));
    let seq = 0;

    const fail = (message) => app.replaceChildren(crumbs(),
      el("div", { class: "card" }, el("div", { class: "empty" }, el("b", null, "Cannot show this schedule"), message)));

    function load() {
      const mine = ++seq;
      return api(apiSchedule("schedules", id)).then((d) => { if (mine === seq) show(d); })
        .catch((e) => { if (e.status === 404) fail(e.message); else toast(`Could not refresh: ${e.message}`, true); });
    }

    function actionRows(actions, empty) {
      if (!actions.length) return el("p", { class: "muted" }, empty);
      return el("table", { class: "runs" },
        el("thead", null, el("tr", null, el("th", null, "Status"), el("th", null, "Workflow ID"), el("th", null, "Scheduled"), el("th", null, "Taken"), el("th", null, "By"))),
        el("tbody", null, actions.map((a) => el("tr", { dataset: { workflowId: a.workflow_id, status: a.status } },
          el("td", null, badge(a.status)),
          el("td", { class: "id" }, a.run_id ? el("a", { href: runUrl(a.workflow_id, a.run_id), "data-link": true }, a.workflow_id) : a.workflow_id),
          el("td", null, fmtTime(a.scheduled_time)),
          el("td", { class: "muted" }, fmtAgo(a.taken_at)),
          el("td", { class: "muted" }, a.source)))));
    }

    function show(d) {
      document.getElementById("namespace").textContent = d.namespace;
      const scrollY = window.scrollY;
      const card = (cid, title, subText, body) => el("div", { class: "card", id: cid },
        el("div", { class: "card-head" }, el("h2", null, title), subText ? el("span", { class: "sub" }, subText) : null),
        el("div", { class: "card-body" }, body));
      const head = el("div", { class: "card run-head", id: "schedule-header" },
        el("div", { class: "run-title" }, scheduleBadge(d), el("h1", { id: "schedule-title" }, d.schedule_id), scheduleButtons(d, load)),
        el("dl", { class: "meta" },
          metaItem("Starts", d.action.workflow_type),
          metaItem("Task queue", d.action.task_queue),
          metaItem("Workflow ids", `${d.action.id_prefix}-<scheduled time>`, true),
          metaItem("Spec", specText(d.spec)),
          metaItem("Overlap", d.policy.overlap),
          metaItem("Catch-up window", fmtDur(d.policy.catchup_window_s)),
          metaItem("Pause on failure", d.policy.pause_on_failure ? "yes" : "no"),
          metaItem("Taken / skipped / missed", `${d.actions_taken} / ${d.actions_skipped} / ${d.actions_missed}`),
          d.note ? metaItem("Note", d.note) : null));
      const why = el("div", { class: `card why-card ${d.paused ? "closed-bad" : "running"}`, id: "why" },
        el("div", { class: "card-head" }, el("h2", null, "Why it fires (or not)"), el("span", { class: "sub" }, "df why --schedule")),
        el("div", { class: "card-body" }, el("ul", { class: "why" }, d.why.map((r) => {
          const bad = /paused|no df-server|missed|did not complete|ended|not been taken/i.test(r);
          const warn = /skipped|buffered|running|cancellation|termination/i.test(r);
          const icon = bad ? ["bad", "!"] : (warn ? ["warn", "…"] : ["info", "i"]);
          return el("li", null, el("span", { class: `icon ${icon[0]}` }, icon[1]), el("span", null, r));
        }))));
      const next = d.next_action_times.length
        ? el("ol", { class: "next-runs", id: "next-runs" }, d.next_action_times.map((t) => el("li", { dataset: { at: t } }, fmtTime(t), el("span", { class: "muted" }, ` · ${fmtIn(t)}`))))
        : el("p", { class: "muted", id: "next-runs" }, d.paused ? "Paused: no next runs until it is unpaused." : "No more scheduled times.");
      const journal = el("table", { class: "events", id: "journal" }, el("tbody", null, d.journal.map((j) =>
        el("tr", { dataset: { kind: j.kind } },
          el("td", { class: "time" }, fmtTime(j.at)),
          el("td", { class: "etype" }, el("span", { class: "etag" }, j.kind)),
          el("td", { class: "detail" }, [j.nominal ? `scheduled ${fmtTime(j.nominal)}` : "", j.detail].filter(Boolean).join(" · "))))));
      app.replaceChildren(
        crumbs(), head, why,
        el("div", { class: "grid2 section" },
          card("next", "Next runs", d.paused ? "paused" : `next ${d.next_action_times.length}`, next),
          card("running", "Running", d.buffered.length ? `${d.buffered.length} buffered` : null,
            actionRows(d.running_actions, "No action is running."))),
        card("recent", "Recent actions", "newest first", actionRows(d.recent_actions, "No action has finished yet.")),
        card("journal-card", "Journal", "created, paused, skipped, missed, ... · newest first", journal));
      window.scrollTo(0, scrollY);
    }

    const first = takeInitial("schedule", (i) => i.schedule_id === id);
    if (first && first.error) fail(first.error);
    else if (first) show(first.data);
    else load();
    const timer = setInterval(() => { if (!document.hidden) load(); }, 2000);
    cleanup.push(() => clearInterval(timer));
  }

  // ------------------------------------------------------------------ actions

  const dialog = document.getElementById("action-dialog");
  const form = document.getElementById("action-form");
  let pending = null;

  function openAction(kind, w) {
    pending = { kind, w };
    const titles = { signal: "Send a signal", cancel: "Cancel this run", terminate: "Terminate this run" };
    const help = {
      signal: "The signal is recorded in history and delivered when the workflow waits for it.",
      cancel: "CancelledError is raised at the workflow's current yield, so it can run its cleanup.",
      terminate: "The run ends at once. No workflow code runs; in-flight activities are abandoned.",
    };
    document.getElementById("action-title").textContent = `${titles[kind]}: ${w.workflow_id}`;
    document.getElementById("action-help").textContent = help[kind];
    document.getElementById("signal-name-field").hidden = kind !== "signal";
    document.getElementById("signal-args-field").hidden = kind !== "signal";
    document.getElementById("reason-field").hidden = kind === "signal";
    const submit = document.getElementById("action-submit");
    submit.textContent = { signal: "Send signal", cancel: "Request cancellation", terminate: "Terminate" }[kind];
    submit.className = "btn " + (kind === "terminate" ? "danger" : "primary");
    document.getElementById("action-error").hidden = true;
    dialog.showModal();
  }

  document.getElementById("action-cancel").addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!pending) return;
    const { kind, w } = pending;
    const errBox = document.getElementById("action-error");
    let body;
    if (kind === "signal") {
      let args;
      try { args = JSON.parse(document.getElementById("signal-args").value || "[]"); } catch (err) {
        errBox.textContent = `Arguments are not valid JSON: ${err.message}`; errBox.hidden = false; return;
      }
      body = { name: document.getElementById("signal-name").value.trim(), args: Array.isArray(args) ? args : [args] };
    } else {
      body = { reason: document.getElementById("reason").value };
    }
    try {
      const res = await api(apiRun(kind, w.workflow_id, w.run_id), {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      dialog.close();
      toast(res.message);
    } catch (err) {
      errBox.textContent = err.message; errBox.hidden = false;
    }
  });

  route();
})();
