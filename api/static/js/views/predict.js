// The image drop zone of a succeeded job: drop (or pick) images, POST them to /predict with
// the job id and top_k, show each image beside its top-k labels and probabilities.
import {api} from "../api.js";
import {h, replace} from "../dom.js";

export function predictPanel(card, job) {
  const urls = [];
  let numClasses = 10;
  let asked = 0; // submissions so far: only the latest one's answer is shown

  const input = h("input", {type: "file", id: "predict-file", accept: "image/*", multiple: true,
                            onchange: () => { if (input.files.length) classify([...input.files]); input.value = ""; }});
  const topK = h("input", {type: "number", id: "predict-top-k", min: 1, max: numClasses, value: "3", "aria-label": "top k"});
  const zone = h("div", {class: "dropzone", id: "dropzone", tabindex: "0", role: "button",
                         "aria-label": "drop images here or press Enter to choose files"},
    h("p", {}, "Drop images here, or ", h("label", {class: "pick", for: "predict-file"}, "choose files"), "."),
    h("p", {class: "small"}, "Any format Pillow reads; each is converted as the job's evaluation data was (channels, size, normalisation)."),
    input);
  const status = h("p", {class: "muted small", id: "predict-status"});
  const error = h("p", {class: "error-box", id: "predict-error", hidden: true});
  const results = h("div", {class: "predictions", id: "predictions"});

  replace(card,
    h("h2", {}, "Classify images"),
    zone,
    h("div", {class: "predict-options"},
      h("label", {for: "predict-top-k"}, "top k"), topK,
      h("span", {class: "muted small"}, `with the best checkpoint of ${job.name}`)),
    status, error, results);

  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragenter", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = [...(e.dataTransfer?.files || [])];
    if (files.length) classify(files);
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });

  // top_k may go up to the dataset's class count.
  api(`/datasets/${encodeURIComponent(job.dataset)}`).then((d) => {
    if (d.num_classes) { numClasses = d.num_classes; topK.max = String(numClasses); }
  }).catch(() => {});

  // A new submission clears what the last one showed: results left under a new error (or
  // beside a pending request) would read as the answer to these images.
  function clearResults() {
    for (const url of urls.splice(0)) URL.revokeObjectURL(url);
    replace(results);
  }

  async function classify(files) {
    const turn = ++asked;
    clearResults();
    error.hidden = true;
    status.textContent = `Classifying ${files.length} image${files.length > 1 ? "s" : ""}…`;
    const form = new FormData();
    for (const file of files) form.append("image", file, file.name);
    form.append("job_id", job.id);
    form.append("top_k", String(Math.min(Math.max(parseInt(topK.value, 10) || 3, 1), numClasses)));
    try {
      const answer = await api("/predict", {method: "POST", form});
      if (turn !== asked) return;
      replace(results, answer.predictions.map((top, i) => figure(files[i], top)));
      status.textContent = `Checkpoint: epoch ${answer.checkpoint.epoch} (${answer.checkpoint.ref}), sha256 ${answer.checkpoint.sha256.slice(0, 12)}…`;
    } catch (err) {
      if (turn !== asked) return;
      status.textContent = "";
      error.hidden = false;
      error.textContent = `Could not classify: ${err.message}`;
    }
  }

  function figure(file, top) {
    const url = URL.createObjectURL(file);
    urls.push(url);
    return h("div", {class: "prediction", dataset: {top: top[0]?.label ?? ""}},
      h("img", {src: url, alt: file.name, title: file.name}),
      h("ol", {}, top.map((p) => {
        const fill = h("span");
        fill.style.width = `${(p.probability * 100).toFixed(1)}%`;
        return h("li", {dataset: {label: p.label}},
          h("span", {class: "label", title: p.label}, p.label),
          h("div", {class: "bar succeeded"}, fill),
          h("span", {class: "pct"}, `${(p.probability * 100).toFixed(1)}%`));
      })));
  }

  return {
    destroy() { for (const url of urls.splice(0)) URL.revokeObjectURL(url); },
  };
}
