// tagllm gallery: filters over paged views, no server needed (data files are scripts, so file:// works).
// The first active filter with a view of its own picks the pages to read; the others narrow them.
"use strict";
(function () {
  const PER_SCREEN = 60;     // tiles per screen
  const MAX_PAGES = 200;     // page files read for one screen before asking to narrow the filters
  const pending = {};        // "view/k" -> {resolve, reject}
  const cache = {};          // "view/k" -> entries
  let meta = null;
  let screen = { cursor: [], shown: [] };

  const tagllm = window.tagllm = window.tagllm || {};
  tagllm.meta = function (data) { meta = data; };
  tagllm.page = function (view, k, entries) {
    const id = view + "/" + k;
    cache[id] = entries;
    if (pending[id]) { pending[id].resolve(entries); delete pending[id]; }
  };

  function loadPage(view, k) {
    const id = view + "/" + k;
    if (cache[id]) return Promise.resolve(cache[id]);
    return new Promise(function (resolve, reject) {
      pending[id] = { resolve: resolve, reject: reject };
      const s = document.createElement("script");
      s.src = "data/" + view + "/page-" + String(k).padStart(5, "0") + ".js";
      s.onerror = function () { delete pending[id]; reject(new Error("cannot load " + s.src)); };
      document.head.appendChild(s);
    });
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(score) { return score === null || score === undefined ? "n/s" : score.toFixed(2); }
  function threshold(name) { return (meta.thresholds && name in meta.thresholds) ? meta.thresholds[name] : meta.threshold; }

  // ---- filters ----------------------------------------------------------------------------------
  const FIELDS = ["label", "band", "disagree", "issue", "status"];
  function readState() {
    const state = { label: "", band: "", disagree: "", issue: "", status: "", screen: 0 };
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    FIELDS.forEach(function (f) { if (params.get(f)) state[f] = params.get(f); });
    state.screen = Math.max(0, parseInt(params.get("screen") || "0", 10) || 0);
    return state;
  }
  function writeState(state) {
    const params = new URLSearchParams();
    FIELDS.forEach(function (f) { if (state[f]) params.set(f, state[f]); });
    if (state.screen) params.set("screen", String(state.screen));
    const hash = params.toString();
    if (location.hash.replace(/^#/, "") !== hash) location.hash = hash;
    else render();
  }
  // Each active filter: the view holding its images (if any) and whether that view is exactly it.
  function conditions(state) {
    const out = [];
    const lab = !!state.label;
    if (state.label) out.push({ view: "label-" + state.label, exact: true });
    if (state.band) out.push({ view: state.band === "near" ? "near" : null, exact: state.band === "near" && !lab });
    if (state.disagree) {
      const view = { any: "disagree", false_pos: "false_pos", missed: "missed" }[state.disagree] || null;
      out.push({ view: lab && state.disagree !== "any" ? null : view, exact: !!view && !lab });
    }
    if (state.issue) out.push({ view: "issues", exact: state.issue === "ranked" });
    if (state.status) {
      const failed = state.status.indexOf("failed:") === 0 ? "failed-" + state.status.slice(7) : null;
      const view = failed || ({ failed: "failed", reviewed: "reviewed", sent: "sent" }[state.status] || null);
      out.push({ view: view, exact: !!view });
    }
    return out;
  }
  function baseView(state) {
    let best = "all";
    conditions(state).forEach(function (c) {
      if (!c.view) return;
      const count = meta.views[c.view] ? meta.views[c.view].count : 0;
      if (best === "all" || count < (meta.views[best] || { count: 0 }).count) best = c.view;
    });
    return best;
  }
  function exactView(state) {
    const conds = conditions(state);
    return conds.length === 0 || (conds.length === 1 && conds[0].exact);
  }
  function labelName(id) { const l = meta.labels.find(function (x) { return x.id === id; }); return l ? l.name : null; }

  function scoresOf(e, name) {
    const all = Object.assign({}, e.rejected || {}, e.labels || {});
    if (name) return name in all ? [all[name]] : [];
    return Object.keys(all).map(function (k) { return all[k]; });
  }
  function matches(e, state) {
    const name = state.label ? labelName(state.label) : null;
    if (name) {
      const shown = Object.keys(e.labels || {}).concat(Object.keys(e.rejected || {}), e.human || [],
        (e.review && e.review.labels) || []);
      if (shown.indexOf(name) < 0) return false;
    }
    if (state.band) {
      const names = name ? [name] : Object.keys(Object.assign({}, e.rejected || {}, e.labels || {}));
      const ok = names.some(function (n) {
        const s = scoresOf(e, n)[0];
        if (s === undefined || s === null) return false;
        if (state.band === "near") return Math.abs(s - threshold(n)) < meta.near;
        const lo = parseFloat(state.band.split("-")[0]), hi = parseFloat(state.band.split("-")[1]);
        return s >= lo && (s < hi || (hi >= 1 && s <= 1));
      });
      if (!ok) return false;
    }
    if (state.disagree) {
      if (!e.human) return false;
      const fp = e.false_pos || [], miss = e.missed || [];
      const has = function (list) { return name ? list.indexOf(name) >= 0 : list.length > 0; };
      if (state.disagree === "any" && !(has(fp) || has(miss))) return false;
      if (state.disagree === "false_pos" && !has(fp)) return false;
      if (state.disagree === "missed" && !has(miss)) return false;
      if (state.disagree === "agree" && (has(fp) || has(miss))) return false;
    }
    if (state.issue) {
      if (!e.issue) return false;
      if (state.issue === "over-half" && e.issue.score < 0.5) return false;
      if (state.issue.indexOf("top-") === 0 && e.issue.rank > parseInt(state.issue.slice(4), 10)) return false;
    }
    if (state.status) {
      if (state.status === "ok" && e.status !== "ok") return false;
      if (state.status === "failed" && e.status === "ok") return false;
      if (state.status.indexOf("failed:") === 0 && e.error !== state.status.slice(7)) return false;
      if ((state.status === "reviewed" || state.status === "sent") && !(e.review && e.review.status === state.status)) return false;
    }
    return true;
  }

  // ---- tiles ------------------------------------------------------------------------------------
  function tile(e) {
    const fig = el("figure", "tile" + (e.status === "ok" ? "" : " failed"));
    fig.dataset.key = e.key;
    const pic = el("div", "pic");
    if (e.thumb) {
      const img = el("img");
      img.src = e.thumb; img.alt = e.key; img.loading = "lazy";
      pic.appendChild(img);
    } else {
      pic.appendChild(el("div", "none", e.status === "ok" ? "no thumbnail" : "failed: no image stored"));
    }
    fig.appendChild(pic);
    const cap = el("figcaption");
    cap.appendChild(el("div", "key", e.key));
    const chips = el("div", "chips");
    if (e.status !== "ok") {
      cap.appendChild(el("span", "badge error", "failed: " + e.error));
      if (e.detail) cap.appendChild(el("div", "detail", e.detail));
    } else {
      const fp = e.false_pos || [];
      Object.keys(e.labels || {}).forEach(function (n) {
        const wrong = fp.indexOf(n) >= 0;
        const c = el("span", "chip " + (wrong ? "fp" : "ok"), (wrong ? "\u2717 " : "\u2713 ") + n + " " + fmt(e.labels[n]));
        c.dataset.label = n; c.title = wrong ? "machine label, not in the human labels (false positive)" : "machine label";
        chips.appendChild(c);
      });
      (e.missed || []).forEach(function (n) {
        const s = (e.rejected || {})[n];
        const c = el("span", "chip miss", "\u25cb " + n + (s !== undefined ? " " + fmt(s) : ""));
        c.dataset.label = n; c.title = "human label the machine missed"; chips.appendChild(c);
      });
      Object.keys(e.rejected || {}).forEach(function (n) {
        if ((e.missed || []).indexOf(n) >= 0) return;
        const c = el("span", "chip rej", "\u2013 " + n + " " + fmt(e.rejected[n]));
        c.dataset.label = n; c.title = "candidate rejected by stage 2"; chips.appendChild(c);
      });
      if (!chips.childNodes.length) chips.appendChild(el("span", "detail", "no label"));
      cap.appendChild(chips);
      if (e.review && e.review.status === "reviewed") {
        const r = el("div", "chips");
        r.appendChild(el("span", "badge review", "reviewed" + (e.review.by ? " by " + e.review.by : "")));
        (e.review.labels || []).forEach(function (n) { r.appendChild(el("span", "chip rev", n)); });
        cap.appendChild(r);
      } else if (e.review) {
        cap.appendChild(el("span", "badge review", "sent for review"));
      }
      if (e.issue && e.issue.score >= meta.issue_shown) {
        const kind = e.issue.kind === "reference" ? "human-label" : "machine-label";
        const b = el("span", "badge issue", kind + " issue #" + e.issue.rank + " \u00b7 " + e.issue.score.toFixed(2));
        b.title = e.issue.kind + " labels: " + e.issue.why; cap.appendChild(b);
      }
    }
    fig.appendChild(cap);
    fig.addEventListener("click", function () { showDetail(e); });
    return fig;
  }

  function showDetail(e) {
    const d = document.getElementById("detail");
    const body = document.getElementById("detail-body");
    body.textContent = "";
    body.appendChild(el("h3", null, e.key));
    if (e.thumb) { const img = el("img"); img.src = e.thumb; img.alt = e.key; body.appendChild(img); }
    const t = el("table");
    const row = function (a, b) { const tr = el("tr"); tr.appendChild(el("th", null, a)); tr.appendChild(el("td", null, b)); t.appendChild(tr); };
    row("status", e.status + (e.error ? " (" + e.error + ")" : ""));
    if (e.detail) row("detail", e.detail);
    if (e.size) row("size", e.size[0] + " x " + e.size[1]);
    Object.keys(e.labels || {}).forEach(function (n) { row("label " + n, fmt(e.labels[n]) + " (threshold " + threshold(n) + ")"); });
    Object.keys(e.rejected || {}).forEach(function (n) { row("rejected " + n, fmt(e.rejected[n]) + " (threshold " + threshold(n) + ")"); });
    if (e.human) row("human labels", e.human.join(", ") || "none");
    if (e.issue) row("label issue", "#" + e.issue.rank + " (" + e.issue.kind + ", " + e.issue.score + "): " + e.issue.why);
    if (e.review) row("review", e.review.status + (e.review.by ? " by " + e.review.by : "") +
      (e.review.labels ? ": " + e.review.labels.join(", ") : ""));
    body.appendChild(t);
    if (d.showModal) d.showModal();
  }

  // ---- screens ----------------------------------------------------------------------------------
  async function collect(state) {
    const view = baseView(state);
    const info = meta.views[view] || { count: 0, pages: 0 };
    if (exactView(state)) {  // the view is the answer: one page per screen, read directly
      const per = meta.page_size;
      const first = state.screen * PER_SCREEN;
      const pageFirst = Math.floor(first / per), pageLast = Math.floor((first + PER_SCREEN - 1) / per);
      let shown = [];
      for (let k = pageFirst; k <= pageLast && k < info.pages; k++) shown = shown.concat(await loadPage(view, k));
      const offset = first - pageFirst * per;
      return { view: view, total: info.count, exact: true, shown: shown.slice(offset, offset + PER_SCREEN), more: first + PER_SCREEN < info.count };
    }
    const want = (state.screen + 1) * PER_SCREEN;
    let found = [], read = 0, k = 0;
    for (; k < info.pages && found.length < want + 1 && read < MAX_PAGES; k++, read++) {
      (await loadPage(view, k)).forEach(function (e) { if (matches(e, state)) found.push(e); });
    }
    return { view: view, total: found.length, exact: k >= info.pages, scanned: k, pages: info.pages,
      shown: found.slice(state.screen * PER_SCREEN, want), more: found.length > want || k < info.pages };
  }

  async function render() {
    const state = readState();
    FIELDS.forEach(function (f) { const s = document.getElementById("f-" + f); if (s) s.value = state[f]; });
    const grid = document.getElementById("grid");
    const status = document.getElementById("status");
    status.textContent = "loading\u2026";
    document.body.dataset.state = "loading";
    try {
      const got = await collect(state);
      grid.textContent = "";
      got.shown.forEach(function (e) { grid.appendChild(tile(e)); });
      const from = got.shown.length ? state.screen * PER_SCREEN + 1 : 0;
      let text = "showing " + from + "\u2013" + (state.screen * PER_SCREEN + got.shown.length);
      text += got.exact ? " of " + got.total : " (searched " + got.scanned + " of " + got.pages + " pages of view '" + got.view + "')";
      status.textContent = got.shown.length ? text : "no image matches these filters";
      document.getElementById("prev").disabled = state.screen === 0;
      document.getElementById("next").disabled = !got.more;
      document.body.dataset.shown = String(got.shown.length);
      document.body.dataset.state = "ready";
    } catch (err) {
      status.textContent = String(err.message || err);
      document.body.dataset.state = "error";
      console.error("tagllm gallery: " + (err.message || err));
    }
  }

  function option(select, value, text) { const o = el("option", null, text); o.value = value; select.appendChild(o); }
  function controls() {
    const lab = document.getElementById("f-label");
    meta.labels.forEach(function (l) {
      if (meta.views["label-" + l.id]) option(lab, l.id, l.name + " (" + l.machine + (meta.has_human ? " / " + l.human : "") + ")");
    });
    const st = document.getElementById("f-status");
    Object.keys(meta.failed_by_reason).forEach(function (r) { option(st, "failed:" + r, "failed: " + r + " (" + meta.failed_by_reason[r] + ")"); });
    FIELDS.forEach(function (f) {
      document.getElementById("f-" + f).addEventListener("change", function () {
        const state = readState(); state[f] = this.value; state.screen = 0; writeState(state);
      });
    });
    document.getElementById("prev").addEventListener("click", function () { const s = readState(); s.screen = Math.max(0, s.screen - 1); writeState(s); });
    document.getElementById("next").addEventListener("click", function () { const s = readState(); s.screen += 1; writeState(s); });
    document.getElementById("reset").addEventListener("click", function () { location.hash = ""; });
    document.getElementById("detail-close").addEventListener("click", function () { document.getElementById("detail").close(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!meta) { document.getElementById("status").textContent = "data/meta.js did not load"; console.error("tagllm gallery: no meta"); return; }
    controls();
    window.addEventListener("hashchange", render);
    render();
  });
})();
