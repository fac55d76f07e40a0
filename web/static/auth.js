// Switchyard API tokens in the browser: loaded before the page's own script. With auth on, the API answers 401
// to a request without a valid token: a small form asks for one, keeps it in sessionStorage (gone when the tab
// closes) and every request sends it as `Authorization: Bearer <token>`. A 403 shows its reason. With auth
// off the API never answers 401 and nothing here shows.
"use strict";

const TOKEN_KEY = "switchyard.token";
const loginListeners = [];

function storedToken() {
  return window.sessionStorage.getItem(TOKEN_KEY);
}

function onLogin(callback) {
  loginListeners.push(callback);
}

function authBox() {
  let box = document.getElementById("auth");
  if (box) return box;
  box = document.createElement("section");
  box.id = "auth";
  box.className = "auth";
  box.hidden = true;
  const title = document.createElement("h2");
  title.textContent = "This API needs a token";
  const reason = document.createElement("p");
  reason.id = "auth-reason";
  reason.className = "error";
  const form = document.createElement("form");
  form.id = "auth-form";
  const label = document.createElement("label");
  label.textContent = "token ";
  const input = document.createElement("input");
  input.id = "auth-token";
  input.type = "password";
  input.autocomplete = "off";
  input.placeholder = "sy_…  (switchyard token create NAME --scope read)";
  input.size = 50;
  label.appendChild(input);
  const button = document.createElement("button");
  button.type = "submit";
  button.id = "auth-submit";
  button.textContent = "Use this token";
  form.append(label, " ", button);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    window.sessionStorage.setItem(TOKEN_KEY, token);
    input.value = "";
    box.hidden = true;
    for (const callback of loginListeners) callback();
  });
  const forbidden = document.createElement("p");
  forbidden.id = "auth-forbidden";
  forbidden.className = "error";
  box.append(title, reason, form);
  const main = document.querySelector("main") || document.body;
  main.prepend(box);
  main.prepend(forbidden);
  return box;
}

// A refused token is forgotten; the reason shown is the first one (a request sent after it, without a token,
// would only say that a token is needed).
function askForToken(reason, sentToken) {
  window.sessionStorage.removeItem(TOKEN_KEY);
  const box = authBox();
  if (sentToken || box.hidden) document.getElementById("auth-reason").textContent = reason;
  box.hidden = false;
}

function showForbidden(reason) {
  authBox();
  document.getElementById("auth-forbidden").textContent = reason;
}

// fetch() with the stored token; a 401 brings the form back with the API's reason, a 403 shows its reason.
async function authFetch(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = storedToken();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 || response.status === 403) {
    let reason = `${response.status}`;
    try { reason = (await response.clone().json()).error || reason; } catch (ignored) { /* not JSON */ }
    if (response.status === 401) askForToken(reason, Boolean(token)); else showForbidden(reason);
  }
  return response;
}
