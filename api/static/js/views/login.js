// The login form: an API key, posted once to POST /session (a JSON body, never a URL), which
// answers with the session cookie. The page does not keep the key: the field is emptied as
// soon as the login succeeds, and the key is written to no storage and never to the
// address. A 401's detail ("the API key is not valid ...") shows under the field.
import {logIn} from "../api.js";
import {h, replace} from "../dom.js";

/**
 * Renders the form into root. notice: a line above it (e.g. "the session has ended");
 * onLogin(caller) runs with POST /session's answer. Returns the view's cleanup.
 */
export function loginView(root, {notice = null, onLogin}) {
  let stopped = false;
  // No `name`: even a form submitted without this script could not carry the key anywhere.
  const key = h("input", {type: "password", id: "login-key", autocomplete: "off",
                          autocapitalize: "off", spellcheck: "false",
                          "aria-describedby": "login-error"});
  const error = h("p", {class: "field-error", id: "login-error", role: "alert", hidden: true});
  const button = h("button", {class: "primary", type: "submit", id: "log-in"}, "Log in");
  const form = h("form", {class: "card login", id: "login-form", method: "post", novalidate: true},
    h("div", {class: "field"},
      h("label", {for: "login-key"}, "API key"),
      key,
      h("span", {class: "hint"}, "trainhub admin create-key USER makes one; it is sent once, " +
        "and the page keeps only a session cookie it cannot read."),
      error),
    h("div", {class: "form-actions"}, button));

  function showError(message) {
    error.hidden = !message;
    error.textContent = message || "";
    if (message) key.setAttribute("aria-invalid", "true"); else key.removeAttribute("aria-invalid");
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = key.value.trim();
    if (!value) { showError("Enter an API key."); key.focus(); return; }
    showError(null);
    button.disabled = true;
    let caller = null;
    try {
      caller = await logIn(value);
    } catch (err) {
      if (stopped) return;
      button.disabled = false;
      showError(err.message);
      key.select();
      return;
    } finally {
      if (caller) key.value = "";
    }
    if (!stopped) onLogin(caller);
  });

  replace(root, h("section", {class: "login-view", id: "login-view"},
    h("h1", {}, "Log in"),
    notice ? h("p", {class: "notice", id: "login-notice"}, notice) : null,
    form));
  key.focus();

  return () => {
    stopped = true;
    key.value = "";
  };
}
