/* Cheshire website chat widget. Plain JS, no build step, no dependencies.
 *
 * Embed on any page of an allowed origin (CORS_ALLOWED_ORIGINS):
 *   <script src="https://cheshire.example.com/static/chat/widget.js" defer></script>
 * Options (attributes of the script tag):
 *   data-api="https://..."   the Cheshire base URL (default: where this script was loaded from)
 *   data-title="..."         the header text
 *   data-inline="true"       render open, inside #cheshire-chat (the page at / does this)
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var api = (script && script.getAttribute("data-api")) || (script ? new URL(script.src).origin : "");
  var title = (script && script.getAttribute("data-title")) || "Chat with us";
  var inline = script && script.getAttribute("data-inline") === "true";
  var STORE = "cheshire_chat_";
  var POLL_MS = 1500, POLL_TRIES = 80, IDLE_POLL_MS = 15000;

  function sessionId() {
    var id = localStorage.getItem(STORE + "session");
    if (!id) {
      var bytes = new Uint8Array(16);
      crypto.getRandomValues(bytes);
      id = Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
      localStorage.setItem(STORE + "session", id);
    }
    return id;
  }
  function randomId() {
    return Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
  }

  var css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = api + "/static/chat/widget.css";
  document.head.appendChild(css);

  var root = document.createElement("div");
  root.className = "cheshire-chat" + (inline ? " cheshire-inline" : " cheshire-floating cheshire-closed");
  root.innerHTML =
    '<button type="button" class="cheshire-toggle" aria-label="Open chat">💬</button>' +
    '<div class="cheshire-panel" role="dialog" aria-label="Chat">' +
    '<div class="cheshire-header"></div>' +
    '<div class="cheshire-log" aria-live="polite"></div>' +
    '<div class="cheshire-options"></div>' +
    '<form class="cheshire-form">' +
    '<button type="button" class="cheshire-photo" aria-label="Send a photo of your dog" hidden>📷</button>' +
    '<input type="file" class="cheshire-file" accept="image/jpeg,image/png,image/webp,image/gif" hidden>' +
    '<input id="cheshire-input" class="cheshire-input" maxlength="2000" ' +
    'autocomplete="off" placeholder="Type a message…" aria-label="Message">' +
    '<button type="submit" class="cheshire-send">Send</button></form></div>';
  (document.getElementById("cheshire-chat") || document.body).appendChild(root);
  root.querySelector(".cheshire-header").textContent = title;
  var log = root.querySelector(".cheshire-log");
  var options = root.querySelector(".cheshire-options");
  var form = root.querySelector(".cheshire-form");
  var input = root.querySelector(".cheshire-input");
  var lastId = Number(localStorage.getItem(STORE + "last_id") || 0);
  var polling = null;

  root.querySelector(".cheshire-toggle").addEventListener("click", function () {
    root.classList.toggle("cheshire-closed");
    if (!root.classList.contains("cheshire-closed")) input.focus();
  });

  function bubble(kind, text) {
    var div = document.createElement("div");
    div.className = "cheshire-msg cheshire-msg-" + kind;
    div.textContent = text; // never HTML: replies are plain text
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  function showOptions(list) {
    options.innerHTML = "";
    list.forEach(function (option) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "cheshire-option";
      b.textContent = option.title;
      b.addEventListener("click", function () { send(option.title, option.payload); });
      options.appendChild(b);
    });
  }

  function render(replies) {
    replies.forEach(function (reply) {
      if (reply.id <= lastId) return;
      lastId = reply.id;
      if (reply.text) bubble(reply.from === "kimmie" ? "kimmie" : "bot", reply.text);
      (reply.images || []).forEach(function (url) {
        var img = document.createElement("img");
        img.className = "cheshire-image";
        img.alt = "";
        img.src = url.charAt(0) === "/" ? api + url : url; // our /media links are relative
        log.appendChild(img);
      });
      showOptions(reply.options || []);
    });
    localStorage.setItem(STORE + "last_id", String(lastId));
  }

  function poll(tries) {
    clearTimeout(polling);
    polling = setTimeout(function () {
      fetch(api + "/api/chat/" + sessionId() + "/messages?after=" + lastId)
        .then(function (r) { return r.json(); })
        .then(function (data) {
          render(data.replies || []);
          if (data.status === "processing" && tries > 0) poll(tries - 1);
          else poll(0);
        })
        .catch(function () { poll(0); });
    }, tries > 0 ? POLL_MS : IDLE_POLL_MS);
  }

  function send(text, payload) {
    text = (text || "").trim();
    if (!text) return;
    showOptions([]);
    bubble("me", text);
    input.value = "";
    var body = { session_id: sessionId(), message: text, client_message_id: randomId() };
    if (payload) body.payload = payload;
    var typing = bubble("typing", "…");
    fetch(api + "/api/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    })
      .then(function (r) {
        return r.json().then(function (data) { return { status: r.status, data: data }; });
      })
      .then(function (res) {
        typing.remove();
        if (res.status === 429) { bubble("system", "One moment, please: too many messages at once."); return; }
        if (res.status >= 400) { bubble("system", "Sorry, that did not go through: " + (res.data.error || res.status)); return; }
        render(res.data.replies || []);
        poll(res.status === 202 ? POLL_TRIES : 0);
      })
      .catch(function () {
        typing.remove();
        bubble("system", "Sorry, we could not reach the salon. Please try again.");
      });
  }

  // Style previews: a photo goes to /api/chat/<session>/photos (the route exists only when the salon
  // has previews on; the button shows after a probe answers anything but 404).
  var photoButton = root.querySelector(".cheshire-photo");
  var fileInput = root.querySelector(".cheshire-file");
  fetch(api + "/api/chat/" + sessionId() + "/photos", { method: "POST", body: new FormData() })
    .then(function (r) { if (r.status !== 404) photoButton.hidden = false; })
    .catch(function () {});
  photoButton.addEventListener("click", function () { fileInput.click(); });
  fileInput.addEventListener("change", function () {
    var file = fileInput.files && fileInput.files[0];
    if (!file) return;
    var data = new FormData();
    data.append("photo", file, file.name);
    if (input.value.trim()) data.append("caption", input.value.trim());
    showOptions([]);
    bubble("me", "📷 " + file.name);
    input.value = "";
    fileInput.value = "";
    var typing = bubble("typing", "…");
    fetch(api + "/api/chat/" + sessionId() + "/photos", { method: "POST", body: data })
      .then(function (r) {
        return r.json().then(function (body) { return { status: r.status, data: body }; });
      })
      .then(function (res) {
        typing.remove();
        if (res.status === 413) { bubble("system", "That photo is too large; please send a smaller one."); return; }
        if (res.status === 415 || res.status === 400) { bubble("system", "Please send a JPEG or PNG photo."); return; }
        if (res.status >= 400) { bubble("system", "Sorry, that did not go through: " + (res.data.error || res.status)); return; }
        poll(POLL_TRIES);
      })
      .catch(function () {
        typing.remove();
        bubble("system", "Sorry, we could not reach the salon. Please try again.");
      });
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    send(input.value);
  });
  if (lastId) poll(0);
})();
