// The fleet page: polls taza-ingest's /api/v1 and draws it. No build step, no CDN: Leaflet and
// uPlot come from /static/vendor/. Every request goes to the page's own origin.
"use strict";

(function () {
  const API = "/api/v1";
  const body = document.body;
  const POLL_MS = 1000 * (Number(body.dataset.pollS) || 5);
  const SLOW_POLL_MS = 60000; // the plan runs a solver, collections change slowly
  const FULL_PCT = 80;
  const ROUTE_COLOURS = ["#6a3fb5", "#1f6fb2", "#b0306a", "#00838f", "#3d3d3d", "#8d5a2b"]; // none a fill colour
  const $ = (id) => document.getElementById(id);

  const state = {
    region: "",
    devices: [],
    fill: new Map(), // device_id -> fill-levels item
    alerts: [],
    collections: [],
    plans: [], // one GeoJSON FeatureCollection per region
    selected: null,
    fitted: false,
    errors: new Set(),
    me: null, // GET /api/v1/whoami: {name, role, region}
  };

  // ---- helpers -----------------------------------------------------------------------------

  /** A list endpoint's items: a bare array, or the first array member of an envelope. */
  function items(doc) {
    if (Array.isArray(doc)) return doc;
    if (doc && typeof doc === "object") {
      for (const key of ["items", "devices", "alerts", "collections", "points", "series"]) {
        if (Array.isArray(doc[key])) return doc[key];
      }
    }
    return [];
  }

  // ---- the API token (when the service has a tokens file) -----------------------------------

  const TOKEN_KEY = "taza.token";
  const storedToken = () => sessionStorage.getItem(TOKEN_KEY);

  /** A 401 asks for a token (the message says whether one was missing or refused). */
  function askToken(reason) {
    const form = $("auth");
    $("auth-message").textContent = reason === "token_invalid"
      ? "The API refused this token (unknown or revoked). Enter a valid one."
      : "This service needs an API token. Ask an operator for one (taza tokens add).";
    form.dataset.reason = reason;
    if (form.hidden) {
      form.hidden = false;
      $("auth-token").focus();
    }
  }

  async function getJSON(path) {
    const headers = { Accept: "application/json" };
    const token = storedToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    const resp = await fetch(path, { headers });
    if (!resp.ok) {
      let reason = resp.statusText;
      try {
        const err = await resp.json();
        reason = err.reason || err.detail || reason;
      } catch (_) { /* not JSON */ }
      if (typeof reason !== "string") reason = "";
      if (resp.status === 401) askToken(reason);
      if (resp.status === 403) reason = `${reason}: this token may not see it`;
      throw new Error(`${path}: HTTP ${resp.status} ${reason}`);
    }
    return resp.json();
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
    const s = q.toString();
    return s ? `?${s}` : "";
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  const num = (v, digits = 0) => (v == null || Number.isNaN(Number(v)) ? "–" : Number(v).toFixed(digits));
  const hhmm = (t) => (t ? new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" }) : "–");
  const fillOf = (d) => {
    const f = state.fill.get(d.device_id);
    const v = f ? f.fill_pct : d.fill_pct;
    return v == null ? null : Number(v);
  };
  const inRegion = (x) => !state.region || x.region === state.region;
  const isOffline = (d) => d.online === false;
  const thresholdOf = (d) => Number(d.full_threshold_pct) || FULL_PCT;

  function colour(pct) {
    if (pct == null) return "#9aa5a1";
    if (pct >= FULL_PCT) return "#d64541";
    if (pct >= 50) return "#e8a33a";
    return "#2fa36b";
  }

  const routeColour = (truck) => ROUTE_COLOURS[(Math.max(1, Number(truck) || 1) - 1) % ROUTE_COLOURS.length];

  function setStatus() {
    const s = $("status");
    if (state.errors.size) {
      s.textContent = [...state.errors].join(" · ");
      s.className = "status error";
    } else {
      s.textContent = `live · updated ${new Date().toLocaleTimeString([], { hourCycle: "h23" })}`;
      s.className = "status";
    }
  }

  // ---- map ---------------------------------------------------------------------------------

  const map = L.map("map", { preferCanvas: false, zoomSnap: 0.25, attributionControl: false });
  map.setView([48, 68], 4);
  L.control.scale({ imperial: false, position: "bottomright" }).addTo(map);
  const tiles = new URLSearchParams(location.search).get("tiles") || body.dataset.tiles;
  if (tiles) {
    L.tileLayer(tiles, { maxZoom: 19, attribution: "© OpenStreetMap contributors" }).addTo(map);
    L.control.attribution({ prefix: false }).addTo(map);
  } else {
    $("map").classList.add("no-tiles");
  }
  const routeLayer = L.layerGroup().addTo(map);
  const deviceLayer = L.layerGroup().addTo(map);
  const markers = new Map(); // device_id -> circleMarker

  function markerStyle(d) {
    const pct = fillOf(d);
    const rvm = d.kind === "rvm";
    const off = isOffline(d);
    return {
      radius: rvm ? 7 : 6,
      color: off ? "#5f6b67" : rvm ? "#4a6fd1" : "#ffffff",
      weight: d.device_id === state.selected ? 4 : rvm || off ? 2 : 1.5,
      dashArray: off ? "2 3" : null,
      fillColor: rvm ? "#dfe7fb" : colour(pct),
      fillOpacity: off ? 0.45 : 0.95,
      className: `dev dev-${rvm ? "rvm" : "ecobox"}${off ? " dev-offline" : ""}`,
    };
  }

  function tooltip(d) {
    const pct = fillOf(d);
    const f = state.fill.get(d.device_id);
    const lines = [`<b>${d.device_id}</b> · ${d.kind || ""}`, [d.site, d.fraction].filter(Boolean).join(" · ")];
    if (d.kind !== "rvm") lines.push(`fill ${num(pct)} %`);
    if (f && f.forecast_full_at) lines.push(`full at ${hhmm(f.forecast_full_at)}`);
    if (isOffline(d)) lines.push("<b>offline</b>");
    return lines.filter(Boolean).join("<br>");
  }

  function drawDevices() {
    const seen = new Set();
    for (const d of state.devices) {
      if (!inRegion(d) || d.lat == null || d.lon == null) continue;
      seen.add(d.device_id);
      let m = markers.get(d.device_id);
      if (!m) {
        m = L.circleMarker([d.lat, d.lon], markerStyle(d)).addTo(deviceLayer);
        m.on("click", () => selectDevice(d.device_id, false));
        markers.set(d.device_id, m);
        m.getElement().setAttribute("data-device-id", d.device_id);
      } else {
        m.setLatLng([d.lat, d.lon]);
        const s = markerStyle(d);
        m.setStyle(s);
        m.getElement().setAttribute("class", `${s.className} leaflet-interactive`);
      }
      m.device = d;
      m.bindTooltip(tooltip(d), { direction: "top", offset: [0, -6] });
    }
    for (const [id, m] of markers) {
      if (!seen.has(id)) {
        deviceLayer.removeLayer(m);
        markers.delete(id);
      }
    }
    if (!state.fitted && markers.size) state.fitted = fitTo(state.region || busiestRegion());
  }

  /** Regions are cities hundreds of km apart: the map shows one at a time (its card or the filter
   *  picks which), the others' markers stay on the map off-screen. */
  function fitTo(region) {
    const inside = [...markers.values()].filter((m) => m.device.region === region);
    if (!inside.length) return false;
    // maxZoom: bins at one site share coordinates; a zero-size box would ask for zoom ∞ (NaN)
    map.fitBounds(L.latLngBounds(inside.map((m) => m.getLatLng())).pad(0.08), { maxZoom: 17 });
    return true;
  }

  function busiestRegion() {
    const n = new Map();
    for (const d of state.devices) n.set(d.region, (n.get(d.region) || 0) + 1);
    return [...n].sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])))[0][0];
  }

  const DEPOT_STYLE = { radius: 9, color: "#ffffff", weight: 3, fillColor: "#1d2a26", fillOpacity: 1, className: "depot" };

  /** improvement_ratio = fallback km ÷ OR-Tools km: how much shorter the solver's routes are. */
  function gain(props) {
    const r = Number(props.improvement_ratio);
    if (props.solver !== "ortools" || !r) return "";
    if (Math.abs(r - 1) < 0.0005) return " · same as the fallback";
    return r > 1 ? ` · ${num((1 - 1 / r) * 100, 1)} % shorter than the fallback` : ` · ${num((1 / r - 1) * 100, 1)} % longer than the fallback`;
  }

  function drawRoutes() {
    routeLayer.clearLayers();
    const summary = $("plan");
    summary.replaceChildren();
    let drawn = 0;
    for (const plan of state.plans) {
      const props = plan.properties || {};
      const routes = (plan.features || []).filter((f) => f.geometry && f.geometry.type === "LineString");
      // stops are the bins' own markers; the depot and the lines are the plan's
      L.geoJSON(plan, {
        filter: (f) => f.geometry.type === "LineString" || (f.properties || {}).kind === "depot",
        style: (f) => (f.geometry.type === "Point" ? DEPOT_STYLE : {
          color: routeColour((f.properties || {}).truck),
          weight: 3,
          opacity: 0.85,
          className: "route",
        }),
        pointToLayer: (f, latlng) => L.circleMarker(latlng, DEPOT_STYLE).bindTooltip(`depot · ${props.region || ""}`),
      }).addTo(routeLayer);
      drawn += routes.length;
      const head = el("div", { class: "route" }, el("b", {}, props.region || "plan"),
        el("span", {}, `${routes.length} route${routes.length === 1 ? "" : "s"} · ${num(props.distance_km, 1)} km · ${props.solver || ""}${gain(props)}`));
      summary.append(head);
      for (const r of routes) {
        const p = r.properties || {};
        summary.append(el("div", { class: "route" }, el("i", { style: `background:${routeColour(p.truck)}` }),
          el("b", {}, `truck ${p.truck ?? "?"}`), el("span", {}, `${p.stops ?? "?"} stops · ${num(p.distance_km, 1)} km · ${num(p.load_l)} L · ${hhmm(p.start)}–${hhmm(p.end)}`)));
      }
      const unassigned = (plan.features || []).filter((f) => (f.properties || {}).kind === "unassigned").length;
      if (unassigned) summary.append(el("p", {}, `${unassigned} due bin${unassigned === 1 ? "" : "s"} unassigned`));
    }
    if (!drawn && !summary.children.length) summary.append(el("p", { class: "empty" }, "No bin is due: no route."));
    for (const m of markers.values()) m.bringToFront();
  }

  // ---- panels ------------------------------------------------------------------------------

  function drawRegions() {
    const groups = new Map();
    for (const d of state.devices) {
      const g = groups.get(d.region) || { devices: 0, bins: 0, full: 0, offline: 0, compl: [], alerts: 0 };
      g.devices += 1;
      if (d.kind !== "rvm") {
        g.bins += 1;
        const pct = fillOf(d);
        if (pct != null && pct >= thresholdOf(d)) g.full += 1;
      }
      if (isOffline(d)) g.offline += 1;
      const c = d.completeness_pct_today;
      if (c != null) g.compl.push(Number(c));
      groups.set(d.region, g);
    }
    for (const a of state.alerts) if (groups.has(a.region)) groups.get(a.region).alerts += 1;
    const box = $("regions");
    box.replaceChildren();
    for (const [region, g] of [...groups].sort()) {
      if (!inRegion({ region })) continue;
      const compl = g.compl.length ? g.compl.reduce((a, b) => a + b, 0) / g.compl.length : null;
      const row = (label, value, bad) => [el("dt", {}, label), el("dd", { class: bad ? "bad" : "" }, value)];
      const card = el("div", { class: "card", "data-region": region, title: "show on the map" },
        el("h3", {}, region),
        el("dl", {},
          ...row("full bins", `${g.full} / ${g.bins}`, g.full > 0),
          ...row("offline", `${g.offline} / ${g.devices}`, g.offline > 0),
          ...row("complete", compl == null ? "–" : `${num(compl, 1)} %`, compl != null && compl < 95),
          ...row("alerts", g.alerts, g.alerts > 0)));
      card.addEventListener("click", () => fitTo(region));
      box.append(card);
    }
  }

  /** What set the alert, in the unit of its rule (docs/alerts.md: `value` and `threshold`). */
  function alertValue(a) {
    if (a.alert === "offline") return a.cause === "last_will" ? "last will" : `silent ${num(a.value / 60)} min`;
    if (a.threshold == null) return a.cause === "fault" ? "fault code" : num(a.value, 1);
    const unit = { fire: " °C", overheat: " °C", tilted: "°" }[a.alert] ?? " %";
    return `${num(a.value, 0)}${unit}`;
  }

  function drawAlerts() {
    const rows = state.alerts.filter(inRegion);
    const order = { critical: 0, major: 1, minor: 2 };
    rows.sort((a, b) => (order[a.severity] ?? 3) - (order[b.severity] ?? 3) || String(b.since).localeCompare(String(a.since)));
    $("alert-count").textContent = rows.length;
    const tbody = $("alerts").tBodies[0];
    tbody.replaceChildren(...rows.map((a) => {
      const tr = el("tr", { "data-device-id": a.device_id, "data-alert": a.alert },
        el("td", {}, el("span", { class: `sev sev-${a.severity}` }, a.alert)),
        el("td", {}, a.device_id),
        el("td", {}, alertValue(a)),
        el("td", {}, hhmm(a.since)));
      tr.addEventListener("click", () => selectDevice(a.device_id, true));
      return tr;
    }));
  }

  function drawCollections() {
    const rows = state.collections.filter(inRegion);
    rows.sort((a, b) => String(b.time).localeCompare(String(a.time)));
    $("collection-count").textContent = rows.length;
    const tbody = $("collections").tBodies[0];
    tbody.replaceChildren(...rows.map((c) => {
      const tr = el("tr", { "data-device-id": c.device_id },
        el("td", {}, hhmm(c.time)),
        el("td", {}, c.device_id),
        el("td", {}, c.site || "–"),
        el("td", {}, `${num(c.fill_before_pct)} → ${num(c.fill_after_pct)} %`));
      tr.addEventListener("click", () => selectDevice(c.device_id, true));
      return tr;
    }));
  }

  // ---- history chart -----------------------------------------------------------------------

  let chart = null;

  /** uPlot's columns: interval starts, mean fill, and each anomaly's reading at the interval
   *  it falls in (null elsewhere: drawn as red points only). */
  function historyPoints(doc) {
    const xs = [], ys = [], marks = [];
    for (const p of doc.points || []) {
      xs.push(Date.parse(p.time) / 1000);
      ys.push(p.fill_pct);
      marks.push(null);
    }
    for (const a of doc.anomalies || []) {
      const t = Date.parse(a.time) / 1000;
      let i = xs.length - 1;
      while (i > 0 && xs[i] > t) i -= 1;
      if (i < 0) continue;
      marks[i] = Math.max(marks[i] ?? 0, a.value);
    }
    return { data: [xs, ys, marks], flagged: (doc.anomalies || []).length };
  }

  async function selectDevice(id, pan) {
    state.selected = id;
    const d = state.devices.find((x) => x.device_id === id);
    $("history-device").textContent = `— ${id}${d && d.site ? ` · ${d.site}` : ""}`;
    const m = markers.get(id);
    if (m && pan) map.panTo(m.getLatLng());
    for (const mk of markers.values()) mk.setStyle({ weight: markerStyle(mk.device).weight });
    try {
      const to = new Date();
      const from = new Date(to.getTime() - 24 * 3600 * 1000);
      const doc = await getJSON(`${API}/devices/${encodeURIComponent(id)}/history${query({ from: from.toISOString(), to: to.toISOString() })}`);
      if (state.selected !== id) return;
      drawChart(doc);
    } catch (err) {
      $("history-note").textContent = String(err.message || err);
    }
  }

  function drawChart(doc) {
    const { data, flagged } = historyPoints(doc);
    const n = data[0].length;
    const what = doc.measurement === "rvm_bin" ? "fullest storage bin" : "fill level";
    $("history-note").textContent = n
      ? `${what}, every ${doc.every} over the last 24 h${flagged ? ` · red: ${flagged} reading${flagged === 1 ? "" : "s"} flagged as anomal${flagged === 1 ? "y" : "ies"}` : ""}`
      : "No readings in the last 24 h.";
    const box = $("chart");
    const width = Math.max(260, box.clientWidth);
    const opts = {
      width,
      height: 200,
      scales: { y: { range: [0, 100] } },
      axes: [
        { stroke: "#66756f", values: (u, ticks) => ticks.map((t) => hhmm(t * 1000)) },
        { stroke: "#66756f", values: (u, ticks) => ticks.map((x) => `${x} %`) },
      ],
      series: [
        { value: (u, t) => (t == null ? "–" : new Date(t * 1000).toLocaleString([], { hourCycle: "h23", dateStyle: "short", timeStyle: "short" })) },
        { label: "fill %", stroke: "#0f7b5f", width: 2, fill: "rgba(15,123,95,0.08)", spanGaps: true },
        { label: "anomaly", stroke: "#d64541", paths: () => null, points: { show: true, size: 9, fill: "#d64541" } },
      ],
    };
    if (chart) chart.destroy();
    box.replaceChildren();
    chart = new uPlot(opts, data, box);
    box.dataset.points = String(n);
    box.dataset.marked = String(data[2].filter((v) => v != null).length); // red points drawn
  }

  window.addEventListener("resize", () => {
    if (chart) chart.setSize({ width: Math.max(260, $("chart").clientWidth), height: 200 });
  });

  // ---- polling -----------------------------------------------------------------------------

  function regions() {
    return [...new Set(state.devices.map((d) => d.region).filter(Boolean))].sort();
  }

  function fillRegionSelect() {
    const sel = $("region");
    const have = new Set([...sel.options].map((o) => o.value));
    for (const r of regions()) if (!have.has(r)) sel.append(el("option", { value: r }, r));
  }

  /** Run one poll; its failure shows in the status line (one message per endpoint) until it works. */
  async function guarded(name, fn) {
    for (const e of [...state.errors]) if (e.startsWith(`${name}:`)) state.errors.delete(e);
    try {
      await fn();
    } catch (err) {
      state.errors.add(`${name}: ${err.message || err}`.slice(0, 160));
    }
  }

  /** A crew token may not list devices: its map is its region's bins from /fill-levels. */
  const crewRegion = () => (state.me && state.me.role === "crew" ? state.me.region : null);
  function crewDevices(region) {
    return [...state.fill.values()].map((f) => ({ ...f, kind: "ecobox", region }));
  }

  async function pollFast() {
    if (!state.me) await guarded("token", async () => { state.me = await getJSON(`${API}/whoami`); });
    const crew = crewRegion();
    await Promise.all([
      guarded("devices", async () => {
        state.devices = crew ? [] : items(await getJSON(`${API}/devices`));
      }),
      guarded("fill-levels", async () => {
        state.fill = new Map(items(await getJSON(`${API}/fill-levels`)).map((f) => [f.device_id, f]));
      }),
      guarded("alerts", async () => {
        state.alerts = items(await getJSON(`${API}/alerts`));
      }),
    ]);
    if (crew) state.devices = crewDevices(crew);
    fillRegionSelect();
    drawDevices();
    drawRegions();
    drawAlerts();
    setStatus();
    body.dataset.loaded = "true";
  }

  async function pollSlow() {
    const midnight = new Date();
    midnight.setHours(0, 0, 0, 0);
    await Promise.all([
      guarded("collections", async () => {
        if (crewRegion()) return; // an operator endpoint; the panel stays empty for a crew
        state.collections = items(await getJSON(`${API}/collections${query({ from: midnight.toISOString() })}`));
      }),
      guarded("plan", async () => {
        const wanted = state.region ? [state.region] : regions();
        state.plans = [];
        state.planError = null;
        try {
          state.plans = await Promise.all(wanted.map((r) => getJSON(`${API}/collection-plan${query({ region: r, format: "geojson" })}`)));
        } catch (err) {
          state.planError = String(err.message || err);
          throw err;
        }
      }),
    ]);
    drawCollections();
    drawRoutes();
    if (state.planError) $("plan").replaceChildren(el("p", { class: "empty" }, `No plan: ${state.planError}`));
    setStatus();
    body.dataset.planLoaded = "true";
  }

  /** Run `fn` now and then every `ms`, never two at once (a slow answer delays, never piles up). */
  function every(ms, fn) {
    let timer = null;
    const run = async () => {
      clearTimeout(timer);
      try { await fn(); } finally { timer = setTimeout(run, ms); }
    };
    return run;
  }

  const fast = every(POLL_MS, pollFast);
  const slow = every(SLOW_POLL_MS, pollSlow);

  $("region").addEventListener("change", (e) => {
    state.region = e.target.value;
    state.fitted = false;
    drawDevices();
    drawRegions();
    drawAlerts();
    drawCollections();
    slow();
  });

  $("auth").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("auth-token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("auth-token").value = "";
    $("auth").hidden = true;
    $("signout").hidden = false;
    state.me = null; // ask again who this token is
    fast().then(slow);
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  $("signout").hidden = !storedToken();

  fast().then(slow);
})();
