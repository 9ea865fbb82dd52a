// The public map (/map): clusters and cases from /map/data for the map's view, the
// list beside it, the filters, a ward's figures and "cases near me". Text comes from the
// page (data-text-*); nothing is written as HTML, only as text.
"use strict";
(function () {
  const root = document.getElementById("public-map");
  if (!root || !window.L) return;
  const data = root.dataset;
  const form = root.querySelector(".map-filters");
  const listEl = root.querySelector("ol.cases");
  const countEl = root.querySelector(".case-count");
  const pagesEl = root.querySelector(".pages");
  const nearButton = root.querySelector("button.near");
  const nearStatus = root.querySelector(".near-status");
  const figures = root.querySelector(".ward-figures");
  const pointsZoom = parseInt(data.pointsZoom, 10);
  const state = { page: 1, pageSize: 20, near: null, total: 0, asked: 0 };

  function text(name, values) {
    let out = data["text" + name] || "";
    Object.keys(values || {}).forEach(function (key) {
      out = out.split("{" + key + "}").join(String(values[key]));
    });
    return out;
  }
  function el(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  const map = L.map(root.querySelector("[data-public-map]"));
  if (data.tiles) {
    L.tileLayer(data.tiles, { maxZoom: 19, attribution: "© OpenStreetMap" }).addTo(map);
  }
  const layer = L.layerGroup().addTo(map);
  let meMarker = null;

  function filters() {
    const out = {};
    ["category", "status", "ward"].forEach(function (name) {
      const value = form.elements.namedItem(name).value;
      if (value) out[name] = value;
    });
    return out;
  }

  function remember() {
    // The address keeps the filters, so a reload or a shared link shows the same.
    const params = new URLSearchParams(filters());
    const province = form.elements.namedItem("province").value;
    if (province) params.set("province", province);
    if (data.lang === "en") params.set("lang", "en");
    const query = params.toString();
    history.replaceState(null, "", "/map" + (query ? "?" + query : ""));
  }

  function showMarkers(body) {
    layer.clearLayers();
    if (body.points) {
      body.points.forEach(function (p) {
        const marker = L.circleMarker([p.lat, p.lon], {
          radius: 9,
          color: "#fff",
          weight: 2,
          fillColor: p.status === "answered" ? "#1f6b45" : "#c05600",
          fillOpacity: 0.9,
        });
        const popup = el("div", "case-popup");
        popup.appendChild(el("strong", null, p.code));
        popup.appendChild(el("div", null, p.category));
        popup.appendChild(el("div", null, p.status_text));
        const link = el("a", null, text("OpenCase"));
        link.href = p.url;
        popup.appendChild(link);
        marker.bindPopup(popup);
        marker.addTo(layer);
      });
      return;
    }
    body.clusters.forEach(function (c) {
      const size = Math.round(28 + Math.min(24, Math.log10(c.count) * 8));
      const icon = el("span", null, String(c.count));
      const answered = c.open === 0 ? " answered" : "";
      const marker = L.marker([c.lat, c.lon], {
        icon: L.divIcon({ html: icon, className: "cluster-icon" + answered, iconSize: [size, size] }),
        title: text("Count", { count: c.count }),
        keyboard: true,
      });
      marker.on("click", function () {
        map.setView([c.lat, c.lon], Math.min(map.getZoom() + 2, pointsZoom));
      });
      marker.addTo(layer);
    });
  }

  function showList(body) {
    state.total = body.total;
    countEl.textContent = text("Count", { count: body.total });
    listEl.replaceChildren();
    if (body.list.items.length === 0) listEl.appendChild(el("li", "empty", text("Empty")));
    body.list.items.forEach(function (item) {
      const li = el("li");
      li.dataset.status = item.status;
      li.dataset.code = item.code;
      const a = el("a");
      a.href = item.url;
      a.appendChild(el("span", "code", item.code));
      a.appendChild(el("span", "state " + item.status, item.status_text));
      a.appendChild(el("span", "what", item.category));
      a.appendChild(el("span", "where", item.ward));
      a.appendChild(el("span", "when", text("Received", { date: item.received })));
      if (item.distance_km !== undefined) {
        let km = item.distance_km < 10 ? item.distance_km.toFixed(1) : String(Math.round(item.distance_km));
        if (data.lang !== "en") km = km.replace(".", ","); // a decimal comma in Vietnamese
        a.appendChild(el("span", "distance", text("Distance", { km: km })));
      }
      li.appendChild(a);
      listEl.appendChild(li);
    });
    const pages = Math.ceil(body.total / state.pageSize);
    pagesEl.hidden = pages <= 1;
    pagesEl.querySelector(".previous").disabled = state.page <= 1;
    pagesEl.querySelector(".next").disabled = state.page >= pages;
  }

  function refresh() {
    const b = map.getBounds();
    const params = new URLSearchParams(filters());
    params.set("bbox", [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) {
      return v.toFixed(5);
    }).join(","));
    params.set("zoom", String(map.getZoom()));
    params.set("page", String(state.page));
    params.set("page_size", String(state.pageSize));
    if (state.near) params.set("near", state.near[0].toFixed(5) + "," + state.near[1].toFixed(5));
    if (data.lang === "en") params.set("lang", "en");
    const asked = ++state.asked;
    root.dataset.loading = "1";
    fetch(data.api + "?" + params.toString(), { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (body) {
        if (asked !== state.asked) return; // a later view was asked for
        showMarkers(body);
        showList(body);
        root.dataset.loading = "";
        root.dataset.shown = String(asked);
      })
      .catch(function () {
        if (asked !== state.asked) return;
        root.dataset.loading = "";
        countEl.textContent = text("Failed");
      });
  }

  function decimal(value) {
    const shown = value.toFixed(1);
    return data.lang === "en" ? shown : shown.replace(".", ",");
  }

  function showFigures(ward) {
    if (!ward) {
      figures.hidden = true;
      return;
    }
    figures.querySelector(".ward-name").textContent = ward.name;
    figures.querySelector(".ward-cases").textContent = String(ward.cases);
    figures.querySelector(".ward-on-time").textContent =
      ward.on_time_pct === null ? text("Unknown") : decimal(ward.on_time_pct) + " %";
    figures.querySelector(".ward-median").textContent =
      ward.median_days === null ? text("Unknown") : decimal(ward.median_days);
    figures.hidden = false;
  }

  function chooseWard(code) {
    if (!code) {
      showFigures(null);
      refresh();
      return;
    }
    fetch(data.wards + "/" + encodeURIComponent(code))
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (ward) {
        showFigures(ward);
        map.setView([ward.lat, ward.lon], 13);
        refresh();
      })
      .catch(refresh);
  }

  function fillWards(province) {
    const select = form.elements.namedItem("ward");
    select.replaceChildren(el("option", null, text("All")));
    select.firstChild.value = "";
    showFigures(null);
    if (!province) {
      refresh();
      return;
    }
    fetch(data.wards + "?province=" + encodeURIComponent(province))
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (body) {
        body.wards.forEach(function (w) {
          const option = el("option", null, w.name);
          option.value = w.code;
          select.appendChild(option);
        });
        refresh();
      })
      .catch(refresh);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    state.page = 1;
    refresh();
  });
  form.addEventListener("change", function (event) {
    state.page = 1;
    const name = event.target.name;
    remember();
    if (name === "province") fillWards(event.target.value);
    else if (name === "ward") chooseWard(event.target.value);
    else refresh();
  });
  pagesEl.querySelector(".previous").addEventListener("click", function () {
    state.page = Math.max(1, state.page - 1);
    refresh();
  });
  pagesEl.querySelector(".next").addEventListener("click", function () {
    state.page += 1;
    refresh();
  });

  if (navigator.geolocation) {
    nearButton.hidden = false;
    nearButton.addEventListener("click", function () {
      nearStatus.textContent = text("Locating");
      navigator.geolocation.getCurrentPosition(
        function (position) {
          state.near = [position.coords.latitude, position.coords.longitude];
          state.page = 1;
          nearStatus.textContent = text("NearOn");
          if (meMarker) meMarker.remove();
          meMarker = L.circleMarker(state.near, {
            radius: 7, color: "#1a56c4", fillColor: "#1a56c4", fillOpacity: 1,
          }).bindTooltip(text("Me")).addTo(map);
          map.setView(state.near, 14);
          refresh();
        },
        function () {
          nearStatus.textContent = text("NoLocation");
        },
        { enableHighAccuracy: false, timeout: 15000, maximumAge: 60000 }
      );
    });
  }

  let moved = null;
  map.on("moveend", function () {
    clearTimeout(moved);
    moved = setTimeout(function () {
      state.page = 1;
      refresh();
    }, 150);
  });

  const ward = figures.hidden ? null : figures.dataset;
  if (ward && ward.lat) {
    map.setView([parseFloat(ward.lat), parseFloat(ward.lon)], 13);
  } else {
    map.fitBounds([[8.4, 102.1], [23.4, 109.6]]);
  }
  refresh();
})();
