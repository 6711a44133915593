// The submit form, built from GET /models and GET /datasets. It posts JSON to POST /jobs
// and shows a 422's problems next to the fields they name; the server is the one validator
// (the form has `novalidate`), so the page and the API never disagree on what is allowed.
import {api, getJob} from "../api.js";
import {h, replace} from "../dom.js";
import {isProgram, isZoo, parametersAt, parametersText, sizeNeed} from "../models.js";
import {modelPicker} from "./model_picker.js";
import {zooFields} from "./zoo_fields.js";

const OPTIMIZERS = ["sgd", "adam", "adamw"];
// Hyperparameters the form edits; the others keep the model's defaults (see /docs).
const NUMBER_FIELDS = [
  ["epochs", "Epochs", {min: 1, max: 1000, step: 1}, "1–1000"],
  ["batch_size", "Batch size", {min: 1, step: 1}, "mini-batch size"],
  ["lr", "Learning rate", {min: 0, step: "any"}, "(0, 10]"],
  ["log_every", "Log every", {min: 1, step: 1}, "mini-batches between loss points"],
];

export function submitView(root, params) {
  const controller = new AbortController();
  const errorSlots = new Map(); // field path -> {input, slot}
  const general = h("div", {class: "error-box", id: "form-error", hidden: true});
  const form = h("form", {class: "submit card", id: "submit-form", novalidate: true});
  replace(root, h("section", {},
    h("div", {class: "toolbar"}, h("h1", {}, params.get("from") ? "Run again" : "New job")),
    form));
  form.append(h("p", {class: "muted"}, "Loading models and datasets…"));

  function field(path, labelText, control, hint, wide = false) {
    const id = `f-${path.replace(/\./g, "-")}`;
    control.id = id;
    control.name = path;
    const slot = h("p", {class: "field-error", id: `${id}-error`, dataset: {errorFor: path}, hidden: true});
    control.setAttribute("aria-describedby", slot.id);
    errorSlots.set(path, {input: control, slot});
    const hintEl = typeof hint === "string" ? h("span", {class: "hint"}, hint) : hint;
    return h("div", {class: wide ? "field wide" : "field"}, h("label", {for: id}, labelText), control, hintEl, slot);
  }

  function showErrors(problems) {
    clearErrors();
    const unplaced = [];
    for (const p of problems) {
      // "hyperparameters.lr" -> the lr input; an unknown path goes to the box on top.
      const target = errorSlots.get(p.field) || errorSlots.get(p.field?.split(".").slice(0, 2).join("."));
      if (target && !target.slot.closest(".field")?.hidden) { // a hidden field's goes on top
        target.slot.hidden = false;
        target.slot.textContent = target.slot.textContent ? `${target.slot.textContent}; ${p.msg}` : p.msg;
        target.input.setAttribute("aria-invalid", "true");
      } else {
        unplaced.push(p.field ? `${p.field}: ${p.msg}` : p.msg);
      }
    }
    if (unplaced.length) { general.hidden = false; general.textContent = unplaced.join("\n"); }
    form.querySelector("[aria-invalid=true]")?.focus(); // the first in the form's order
  }

  function clearErrors() {
    general.hidden = true;
    general.textContent = "";
    for (const {input, slot} of errorSlots.values()) {
      slot.hidden = true;
      slot.textContent = "";
      input.removeAttribute("aria-invalid");
    }
  }

  (async () => {
    let models, datasets, from = null;
    try {
      [models, datasets] = await Promise.all([
        api("/models", {signal: controller.signal}), api("/datasets", {signal: controller.signal})]);
      if (params.get("from")) from = await getJob(params.get("from"), controller.signal).catch(() => null);
    } catch (err) {
      if (err.name === "AbortError") return;
      replace(form, h("p", {class: "error-box"}, `Could not load the catalog: ${err.message}`));
      return;
    }
    const maxParameters = models.max_model_parameters; // 0: no cap
    models = models.models;
    datasets = datasets.datasets;
    const defaults = {...(models[0]?.default_hyperparameters || {}), ...(from?.spec?.hyperparameters || {})};

    const name = h("input", {type: "text", placeholder: "<model>-<dataset>", maxlength: 200,
                             value: from ? from.name : ""});
    const picker = modelPicker(models, from?.model || (models.some((m) => m.id === "lenet") ? "lenet" : models[0]?.id),
                               () => updateHints());
    const model = picker.select;
    const modelFacts = h("span", {class: "hint", id: "model-facts"});
    const modelHint = h("span", {class: "hint"});
    const zoo = zooFields(field, from, () => updateHints());
    const dataset = h("select", {}, datasets.map((d) => {
      const usable = d.status === "ready" || d.status === "downloads on first use";
      const shape = d.shape ? ` — ${d.shape.join("×")}, ${d.num_classes} classes` : "";
      return h("option", {value: d.id, disabled: !usable},
        `${d.name}${d.source === "upload" ? " (upload)" : ""}${shape}${usable ? "" : ` (${d.status})`}`);
    }));
    const datasetHint = h("span", {class: "hint"});
    const optimizer = h("select", {}, OPTIMIZERS.map((o) => h("option", {value: o}, o)));
    const numbers = Object.fromEntries(NUMBER_FIELDS.map(([key, , attrs]) =>
      [key, h("input", {type: "number", ...attrs, value: defaults[key] ?? ""})]));
    const batchesHint = h("span", {class: "hint", id: "batches-hint"});

    const firstUsable = datasets.find((d) => d.status === "ready");
    dataset.value = from?.dataset || firstUsable?.id || datasets[0]?.id;
    optimizer.value = defaults.optimizer || "sgd";

    function trainCount(d) {
      const train = d?.counts?.train;
      if (typeof train === "number") return train;
      if (train && typeof train === "object") return Object.values(train).reduce((a, b) => a + b, 0);
      return null;
    }
    function modelLine(m, d) {
      if (isProgram(m)) {
        const p = m.program;
        const mismatch = d?.num_classes && d.num_classes !== p.num_classes
          ? ` · the dataset has ${d.num_classes}: it would be refused` : "";
        return `your model · input ${p.input_shape.join("×")} · `
          + `${p.parameter_count.toLocaleString("en")} parameters · ${p.num_classes} classes${mismatch}`;
      }
      if (!isZoo(m)) return "built-in · its layers follow the dataset's shape";
      const over = maxParameters && parametersAt(m, d?.num_classes) > maxParameters;
      return [`torchvision · ${m.family}`, parametersText(m, d?.num_classes, "parameters"), sizeNeed(m)].join(" · ")
        + (over ? ` · over this server's cap of ${maxParameters.toLocaleString("en")}: it would be refused` : "");
    }
    function updateHints() {
      const m = models.find((x) => x.id === model.value);
      modelHint.textContent = m ? m.description : "";
      const d = datasets.find((x) => x.id === dataset.value);
      modelFacts.textContent = m ? modelLine(m, d) : "";
      zoo.update(m, d);
      datasetHint.textContent = d ? d.description || d.error || d.location || "" : "";
      const n = trainCount(d);
      const bs = parseInt(numbers.batch_size.value, 10);
      const valFraction = defaults.validation_fraction || 0;
      batchesHint.textContent = n && bs > 0
        ? `${Math.ceil((n * (1 - valFraction)) / bs).toLocaleString("en")} mini-batches per epoch at this batch size`
        : "mini-batches between loss points";
    }
    dataset.addEventListener("change", updateHints);
    numbers.batch_size.addEventListener("input", updateHints);
    updateHints();
    const modelField = field("model", "Model", model, h("span", {class: "hints"}, picker.count, modelFacts, modelHint));
    modelField.insertBefore(picker.search, model);

    const submit = h("button", {class: "primary", type: "submit", id: "submit-job"}, "Submit job");
    const working = h("span", {class: "muted small"});
    replace(form,
      general,
      h("div", {class: "fields"},
        field("name", "Name", name, "optional", true),
        modelField,
        field("dataset", "Dataset", dataset, datasetHint),
        ...zoo.fields,
        ...NUMBER_FIELDS.map(([key, labelText, , hint]) =>
          field(`hyperparameters.${key}`, labelText, numbers[key], key === "log_every" ? batchesHint : hint)),
        field("hyperparameters.optimizer", "Optimizer", optimizer, "sgd uses momentum 0.9 (the tutorial's)")),
      from ? h("p", {class: "muted small"}, "The other settings are copied from ", h("a", {href: `#/jobs/${from.id}`}, from.name), ".")
        : h("p", {class: "muted small"}, "Everything else keeps its default (the PyTorch tutorial's); the API takes more: see /docs."),
      h("div", {class: "form-actions"}, submit, working));

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors();
      const hyperparameters = from ? {...from.spec.hyperparameters} : {};
      hyperparameters.optimizer = optimizer.value;
      for (const [key] of NUMBER_FIELDS) {
        const raw = numbers[key].value.trim();
        // Sent as typed: the API says what is wrong with it (a number input gives "" for junk).
        if (raw === "") {
          if (numbers[key].validity.badInput) { showErrors([{field: `hyperparameters.${key}`, msg: "not a number"}]); return; }
          delete hyperparameters[key];
        } else {
          hyperparameters[key] = Number(raw);
        }
      }
      const body = {model: model.value, dataset: dataset.value, hyperparameters};
      const problem = zoo.apply(hyperparameters, body);
      if (problem) { showErrors([problem]); return; }
      if (name.value.trim()) body.name = name.value.trim();
      if (from) {
        body.device = from.spec.device;
        if (from.spec.init_from) body.init_from = from.spec.init_from;
        if (from.spec.max_runtime_seconds) body.max_runtime_seconds = from.spec.max_runtime_seconds;
      }
      submit.disabled = true;
      working.textContent = "Submitting…";
      try {
        const job = await api("/jobs", {method: "POST", json: body});
        location.hash = `#/jobs/${job.id}`;
      } catch (err) {
        working.textContent = "";
        submit.disabled = false;
        if (err.status === 422 && err.fields.length) showErrors(err.fields);
        else { general.hidden = false; general.textContent = err.message; }
      }
    });
  })();

  return () => controller.abort();
}
