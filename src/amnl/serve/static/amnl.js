// amnl serve dashboard: acknowledging alerts (the only write the pages make).
"use strict";

function apiToken() {
  return window.localStorage.getItem("amnl-token") || "";
}

function saveToken(form) {
  window.localStorage.setItem("amnl-token", form.token.value);
  document.getElementById("token-state").textContent = form.token.value ? "token saved" : "no token";
  return false;
}

async function acknowledge(form) {
  const id = form.dataset.alert;
  const headers = {"Content-Type": "application/json"};
  if (apiToken()) {
    headers["Authorization"] = "Bearer " + apiToken();
  }
  const response = await fetch("/v1/alerts/" + id + "/ack", {
    method: "POST", headers: headers, body: JSON.stringify({note: form.note.value || null})});
  const status = document.getElementById("ack-status-" + id);
  if (response.ok) {
    const alert = await response.json();
    status.textContent = alert.state;
    form.remove();
    document.getElementById("state-" + id).textContent = alert.state;
  } else {
    const body = await response.json();
    status.textContent = "not acknowledged: " + body.detail[0].msg;
  }
  return false;
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form.ack").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      acknowledge(form);
    });
  });
  const tokenForm = document.getElementById("token-form");
  if (tokenForm) {
    tokenForm.token.value = apiToken();
    tokenForm.addEventListener("submit", function (event) {
      event.preventDefault();
      saveToken(tokenForm);
    });
  }
});
