// openrouter-watcher dashboard: ask for an API token once, keep it in this tab's
// sessionStorage only, and insert the panels the server renders for it. No other host is
// contacted and nothing else is stored.
(function () {
  "use strict";
  var KEY = "openrouter-watcher.token";
  var form = document.getElementById("token-form");
  var input = document.getElementById("token");
  var message = document.getElementById("message");
  var panels = document.getElementById("panels");
  var signOut = document.getElementById("sign-out");

  function ask(text) {
    panels.replaceChildren();
    signOut.hidden = true;
    form.hidden = false;
    message.textContent = text || "";
    input.focus();
  }

  function errorText(body, status) {
    if (body && body.error && body.error.message) return body.error.message;
    return "the server answered HTTP " + status;
  }

  function load() {
    var token = sessionStorage.getItem(KEY);
    if (!token) {
      ask("");
      return;
    }
    message.textContent = "";
    fetch("/dashboard/panels", {
      headers: { Authorization: "Bearer " + token },
      cache: "no-store",
    })
      .then(function (response) {
        if (response.ok) {
          return response.text().then(function (html) {
            form.hidden = true;
            signOut.hidden = false;
            // Server-rendered markup from this origin, every value escaped there.
            panels.innerHTML = html;
            document.body.dataset.state = "loaded";
          });
        }
        return response.json().catch(function () { return null; }).then(function (body) {
          if (response.status === 401) sessionStorage.removeItem(KEY);
          document.body.dataset.state = "refused";
          ask((response.status === 401 ? "Token refused: " : "") + errorText(body, response.status));
        });
      })
      .catch(function () {
        ask("The dashboard cannot reach its server.");
      });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var token = input.value.trim();
    input.value = "";
    if (!token) return;
    sessionStorage.setItem(KEY, token);
    load();
  });
  signOut.addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    ask("Token forgotten.");
  });
  load();
})();
