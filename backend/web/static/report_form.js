// The report form's map (Leaflet, vendored) and "use my location": both fill the
// latitude and longitude fields, which also work typed, without JavaScript.
"use strict";
(function () {
  const lat = document.getElementById("lat");
  const lon = document.getElementById("lon");
  const el = document.getElementById("report-map");
  const locate = document.getElementById("locate");
  const status = document.getElementById("locate-status");
  if (!lat || !lon) return;
  let map = null;
  let marker = null;
  function place(a, b, zoom) {
    lat.value = a.toFixed(6);
    lon.value = b.toFixed(6);
    if (!map) return;
    if (marker) marker.setLatLng([a, b]); else marker = L.marker([a, b]).addTo(map);
    if (zoom) map.setView([a, b], 16);
  }
  if (el && window.L) {
    el.hidden = false;
    const known = el.dataset.lat !== "" && el.dataset.lon !== "";
    const a = known ? parseFloat(el.dataset.lat) : 16.0;
    const b = known ? parseFloat(el.dataset.lon) : 106.0;
    map = L.map(el).setView([a, b], known && isFinite(a) && isFinite(b) ? 16 : 5);
    if (el.dataset.tiles) {
      L.tileLayer(el.dataset.tiles, { maxZoom: 19, attribution: "© OpenStreetMap" }).addTo(map);
    }
    if (known && isFinite(a) && isFinite(b)) marker = L.marker([a, b]).addTo(map);
    map.on("click", function (event) { place(event.latlng.lat, event.latlng.lng, false); });
  }
  if (locate && navigator.geolocation) {
    locate.hidden = false;
    locate.addEventListener("click", function () {
      status.textContent = "…";
      navigator.geolocation.getCurrentPosition(
        function (p) { status.textContent = ""; place(p.coords.latitude, p.coords.longitude, true); },
        function () { status.textContent = locate.dataset.failed || ""; },
        { enableHighAccuracy: true, timeout: 15000 }
      );
    });
  }
})();
// One press sends once: a second press would send the same form again (refused).
(function () {
  const form = document.querySelector("form.report-form");
  if (!form) return;
  form.addEventListener("submit", function () {
    const button = form.querySelector("button.send");
    if (button) window.setTimeout(function () { button.disabled = true; }, 0);
  });
})();
