// The chat simulator: renders what the bot sent and sends what the resident does.
"use strict";
(function () {
  const log = document.getElementById("log");
  const keyboard = document.getElementById("keyboard");
  let shown = 0;
  const DEMO_PHONE = "0912 345 678";

  async function send(body) {
    const options = body instanceof FormData
      ? { method: "POST", body: body }
      : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    await fetch("/demo/api/send", options);
    setTimeout(poll, 150);
  }

  // The newest message in view: the chat box scrolls, the page does not.
  function show(li) {
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
  }

  function mine(text, image) {
    const li = document.createElement("li");
    li.className = "me";
    if (image) {
      const img = document.createElement("img");
      img.src = URL.createObjectURL(image);
      img.alt = text;
      li.appendChild(img);
    }
    const p = document.createElement("p");
    p.textContent = text;
    li.appendChild(p);
    show(li);
  }

  function render(message) {
    const li = document.createElement("li");
    li.className = "bot";
    if (message.photo) {
      const img = document.createElement("img");
      img.src = "/demo/api/photo/" + message.id;
      img.alt = "";
      li.appendChild(img);
    }
    const p = document.createElement("p");
    p.textContent = message.text || "";
    li.appendChild(p);
    for (const row of message.buttons) {
      const div = document.createElement("div");
      div.className = "buttons";
      for (const [label, data] of row) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.addEventListener("click", () => { mine(label); send({ button: data, message_id: message.id }); });
        div.appendChild(b);
      }
      li.appendChild(div);
    }
    show(li);
    if (message.keyboard.length || message.remove_keyboard) {
      keyboard.replaceChildren();
      for (const label of message.keyboard) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "secondary";
        b.textContent = label;
        b.addEventListener("click", () => {
          const first = label === message.keyboard[0];
          if (message.request_location && first) {
            mine("📍 20.0740, 105.9120");
            send({ lat: 20.074, lon: 105.912 });
          } else if (message.request_contact && first) {
            // Telegram shares the account's number; the simulated account has this one.
            mine("📱 " + DEMO_PHONE);
            send({ phone: DEMO_PHONE });
          } else {
            mine(label);
            send({ text: label });
          }
        });
        keyboard.appendChild(b);
      }
    }
  }

  async function poll() {
    const response = await fetch("/demo/api/messages");
    const data = await response.json();
    for (const message of data.messages.slice(shown)) render(message);
    shown = data.messages.length;
  }

  document.getElementById("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("text");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    mine(text);
    send({ text: text });
  });
  document.getElementById("photo").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("photo", file);
    mine("📷 " + file.name, file);
    send(form);
    event.target.value = "";
  });
  document.getElementById("here").addEventListener("click", () => {
    mine("📍 20.0740, 105.9120");
    send({ lat: 20.074, lon: 105.912 });
  });
  // A click on the map shares that spot, as Telegram's location button would.
  const pick = document.getElementById("pick");
  if (window.L && pick) {
    const map = L.map(pick).setView([20.074, 105.912], 12);
    if (pick.dataset.tiles) L.tileLayer(pick.dataset.tiles, { maxZoom: 19, attribution: "© OpenStreetMap" }).addTo(map);
    map.on("click", (event) => {
      const p = event.latlng;
      mine("📍 " + p.lat.toFixed(5) + ", " + p.lng.toFixed(5));
      send({ lat: p.lat, lon: p.lng });
    });
  }
  poll();
  setInterval(poll, 700);
})();
