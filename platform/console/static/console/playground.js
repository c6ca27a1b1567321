/* The playground: chat through the public API, streamed token by token.
   The page asks the console for a short-lived key (POST, CSRF-checked), then calls /v1/chat/completions
   with stream=true and reads the server-sent events through fetch, appending each delta to the reply. */
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("console-playground-config").textContent);
  var form = document.getElementById("playground-form");
  var conversation = document.getElementById("pg-conversation");
  var promptBox = document.getElementById("pg-prompt");
  var sendButton = document.getElementById("pg-send");
  var stopButton = document.getElementById("pg-stop");
  var statusLine = document.getElementById("pg-status");
  var csrf = document.querySelector("#pg-csrf input[name=csrfmiddlewaretoken]").value;
  var key = null;
  var keyExpires = 0;
  var history = [];
  var controller = null;

  function getKey() {
    if (key && Date.now() < keyExpires - 60000) { return Promise.resolve(key); }
    return fetch(config.keyUrl, { method: "POST", headers: { "X-CSRFToken": csrf }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error("Could not get a playground key (" + response.status + ")."); }
        return response.json();
      })
      .then(function (body) { key = body.key; keyExpires = Date.parse(body.expires_at); return key; });
  }

  function addTurn(role, text) {
    var item = document.createElement("li");
    item.className = "turn " + role;
    var who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Model";
    var body = document.createElement("div");
    body.className = "body";
    body.textContent = text;
    var meta = document.createElement("div");
    meta.className = "meta";
    item.appendChild(who); item.appendChild(body); item.appendChild(meta);
    conversation.appendChild(item);
    return { item: item, body: body, meta: meta };
  }

  function describeOutcome(finish, usage, events) {
    var parts = [];
    if (usage) {
      parts.push(usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion tokens");
    }
    if (finish) { parts.push("finish: " + finish); }
    if (events && events.length) {
      parts.push("moderation: " + events.map(function (e) {
        return e.action + " " + (e.direction === "input" ? "prompt" : "reply") +
          (e.categories.length ? " (" + e.categories.join(", ") + ")" : "");
      }).join("; "));
    } else if (events) {
      parts.push("moderation: nothing flagged");
    }
    return parts.join(" · ");
  }

  function fetchOutcome(requestId) {
    if (!requestId) { return Promise.resolve(null); }
    return fetch(config.outcomeUrl.replace("REQUEST_ID", encodeURIComponent(requestId)), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : { events: null }; })
      .then(function (body) { return body.events; }, function () { return null; });
  }

  function readStream(response, turn) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var state = { text: "", finish: null, usage: null };
    function handle(event) {
      var line = event.split("\n").filter(function (l) { return l.indexOf("data: ") === 0; })
        .map(function (l) { return l.slice(6); }).join("\n");
      if (!line || line === "[DONE]") { return; }
      var chunk = JSON.parse(line);
      if (chunk.usage) { state.usage = chunk.usage; }
      (chunk.choices || []).forEach(function (choice) {
        if (choice.delta && choice.delta.content) {
          state.text += choice.delta.content;
          turn.body.textContent = state.text;
        }
        if (choice.finish_reason) { state.finish = choice.finish_reason; }
      });
    }
    function pump() {
      return reader.read().then(function (result) {
        if (result.done) { return state; }
        buffer += decoder.decode(result.value, { stream: true });
        var events = buffer.split("\n\n");
        buffer = events.pop();
        events.forEach(handle);
        return pump();
      });
    }
    return pump();
  }

  function send(text) {
    var model = document.getElementById("pg-model").value;
    var maxTokens = parseInt(document.getElementById("pg-max-tokens").value, 10) || config.maxTokens;
    var system = document.getElementById("pg-system").value.trim();
    history.push({ role: "user", content: text });
    addTurn("user", text);
    var turn = addTurn("assistant", "");
    turn.item.setAttribute("data-state", "streaming");
    var messagesToSend = (system ? [{ role: "system", content: system }] : []).concat(history);
    controller = new AbortController();
    sendButton.disabled = true; stopButton.disabled = false;
    statusLine.textContent = "Streaming…";
    var requestId = null;
    getKey().then(function (bearer) {
      return fetch(config.apiBase + "/chat/completions", {
        method: "POST",
        headers: { "Authorization": "Bearer " + bearer, "Content-Type": "application/json" },
        body: JSON.stringify({ model: model, messages: messagesToSend, max_tokens: maxTokens, stream: true,
                               stream_options: { include_usage: true } }),
        signal: controller.signal,
        credentials: "omit"
      });
    }).then(function (response) {
      requestId = response.headers.get("x-request-id");
      if (!response.ok) {
        return response.json().then(function (body) {
          var error = body.error || {};
          var message = error.message || ("HTTP " + response.status);
          turn.body.textContent = "";
          turn.item.classList.add("refused");
          turn.body.textContent = (error.code === "content_filter" ? "Blocked by the content policy: " : "Refused: ") + message;
          return { text: "", finish: error.code || String(response.status), usage: null, refused: true };
        });
      }
      return readStream(response, turn);
    }).then(function (state) {
      if (state.text) { history.push({ role: "assistant", content: state.text }); }
      if (state.refused) { history.pop(); }
      return fetchOutcome(requestId).then(function (events) {
        turn.meta.textContent = describeOutcome(state.finish, state.usage, events);
        turn.item.setAttribute("data-state", "done");
        if (state.finish === "content_filter") { turn.item.classList.add("refused"); }
        statusLine.textContent = requestId ? "Request " + requestId : "";
      });
    }).catch(function (error) {
      turn.item.setAttribute("data-state", "error");
      turn.meta.textContent = error.name === "AbortError" ? "stopped" : String(error.message || error);
      statusLine.textContent = "";
    }).then(function () {
      sendButton.disabled = false; stopButton.disabled = true; controller = null;
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = promptBox.value.trim();
    if (!text || controller) { return; }
    promptBox.value = "";
    send(text);
  });
  stopButton.addEventListener("click", function () { if (controller) { controller.abort(); } });
  document.getElementById("pg-clear").addEventListener("click", function () {
    history = []; conversation.textContent = ""; statusLine.textContent = "";
  });
})();
