// The models view: the caller's own architectures (torch.export programs, POST /models),
// newest first, each with a delete button, and the form that uploads one. The server checks
// every archive; the page shows its answer (a 422 says why a file was refused, a 409 that a
// job still uses the program) and adds nothing of its own.
import {api} from "../api.js";
import {fmtTime, h, replace} from "../dom.js";
import {fmtCount} from "../models.js";

/** "1×8×8" from [channels, height, width]. */
export const shapeText = (shape) => shape.join("×");

export function programsView(root) {
  const controller = new AbortController();
  const list = h("div", {class: "table-wrap", id: "programs"}, h("p", {class: "empty"}, "Loading…"));
  const listError = h("p", {class: "error-box", id: "programs-error", hidden: true});

  const train = h("input", {type: "file", id: "program-file", name: "file", accept: ".pt2", required: true});
  const evalFile = h("input", {type: "file", id: "program-eval-file", name: "eval_file", accept: ".pt2"});
  const name = h("input", {type: "text", id: "program-name", name: "name", maxlength: 200,
                           placeholder: "the train file's name"});
  const uploadError = h("p", {class: "error-box", id: "upload-error", hidden: true});
  const working = h("span", {class: "muted small", id: "upload-status"});
  const send = h("button", {class: "primary", type: "submit", id: "upload-program"}, "Upload");
  const form = h("form", {class: "card upload-form", id: "upload-form", novalidate: true},
    h("h2", {}, "Upload an architecture"),
    h("p", {class: "muted small"},
      "torch.export archives (.pt2) of one module, exported in train and in eval mode with a ",
      "dynamic batch dimension (`trainhub models upload file.py:Net` makes both). The eval file ",
      "may be left out when the graph has no dropout, batch norm or other mode-dependent op."),
    h("div", {class: "fields"},
      h("div", {class: "field"}, h("label", {for: train.id}, "Train-mode program"), train),
      h("div", {class: "field"}, h("label", {for: evalFile.id}, "Eval-mode program"), evalFile,
        h("span", {class: "hint"}, "optional")),
      h("div", {class: "field"}, h("label", {for: name.id}, "Name"), name,
        h("span", {class: "hint"}, "optional"))),
    uploadError,
    h("div", {class: "form-actions"}, send, working));

  replace(root, h("section", {},
    h("div", {class: "toolbar"}, h("h1", {}, "Your models")),
    listError, list, form));

  function showError(box, message) {
    box.hidden = !message;
    box.textContent = message || "";
  }

  function row(p) {
    const remove = h("button", {type: "button", class: "delete", dataset: {id: p.id}}, "Delete");
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete ${p.name}?`)) return;
      remove.disabled = true;
      showError(listError, "");
      try {
        await api(`/models/${p.id}`, {method: "DELETE"});
        await load();
      } catch (err) {
        remove.disabled = false;
        showError(listError, `Could not delete ${p.name}: ${err.message}`);
      }
    });
    return h("tr", {dataset: {id: p.id}},
      h("td", {class: "name"}, p.name),
      h("td", {class: "id mono"}, p.id),
      h("td", {class: "shape"}, shapeText(p.input_shape)),
      h("td", {class: "classes"}, String(p.num_classes)),
      h("td", {class: "parameters", title: p.parameter_count.toLocaleString("en")}, fmtCount(p.parameter_count)),
      h("td", {class: "created"}, fmtTime(p.created_at)),
      h("td", {}, remove));
  }

  async function load() {
    let answer;
    try {
      answer = await api("/models", {signal: controller.signal});
    } catch (err) {
      if (err.name !== "AbortError") showError(listError, `Could not read GET /models: ${err.message}`);
      return;
    }
    const own = answer.models.filter((m) => m.source === "program").map((m) => m.program);
    list.dataset.programs = String(own.length);
    replace(list, own.length
      ? h("table", {},
          h("thead", {}, h("tr", {}, ["name", "id", "input (C×H×W)", "classes", "parameters", "created", ""]
            .map((t) => h("th", {}, t)))),
          h("tbody", {}, own.map(row)))
      : h("p", {class: "empty"}, "No models of your own yet: upload one below."));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(uploadError, "");
    if (!train.files.length) { showError(uploadError, "file: choose the train-mode program (.pt2)"); return; }
    const body = new FormData();
    body.append("file", train.files[0]);
    if (evalFile.files.length) body.append("eval_file", evalFile.files[0]);
    if (name.value.trim()) body.append("name", name.value.trim());
    send.disabled = true;
    working.textContent = "Uploading and checking…";
    try {
      const made = await api("/models", {method: "POST", form: body, signal: controller.signal});
      form.reset();
      working.textContent = `Uploaded ${made.name} (${made.id}).`;
      await load();
    } catch (err) {
      if (err.name === "AbortError") return;
      working.textContent = "";
      showError(uploadError, err.message);
    } finally {
      send.disabled = false;
    }
  });

  load();
  return () => controller.abort();
}
