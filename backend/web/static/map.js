// Maps (Leaflet, vendored): a marker on the ticket page; on the phone form a click
// picks the point. Without tiles configured the map still shows the marker.
"use strict";
(function () {
  if (!window.L) return;
  document.querySelectorAll("[data-map]").forEach(function (el) {
    const known = el.dataset.lat !== undefined && el.dataset.lat !== "";
    const lat = known ? parseFloat(el.dataset.lat) : 16.0;
    const lon = known ? parseFloat(el.dataset.lon) : 106.0;
    const map = L.map(el).setView([lat, lon], known ? 16 : 5);
    if (el.dataset.tiles) {
      L.tileLayer(el.dataset.tiles, { maxZoom: 19, attribution: "© OpenStreetMap" }).addTo(map);
    }
    let marker = known ? L.marker([lat, lon]).addTo(map) : null;
    const target = el.dataset.pick ? document.querySelector(el.dataset.pick) : null;
    if (target) {
      map.on("click", function (event) {
        const p = event.latlng;
        target.value = p.lat.toFixed(6) + ", " + p.lng.toFixed(6);
        if (marker) marker.setLatLng(p); else marker = L.marker(p).addTo(map);
      });
    }
  });
})();
// An answer template fills the answer's text (no inline handlers: the CSP forbids them).
(function () {
  document.querySelectorAll("select[data-fills]").forEach(function (select) {
    select.addEventListener("change", function () {
      const target = select.form && select.form.elements.namedItem(select.dataset.fills);
      if (target) target.value = select.value;
    });
  });
})();
