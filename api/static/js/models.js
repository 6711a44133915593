// What the page says about a model, from its GET /models entry. GET /models counts a
// torchvision model's parameters with a 10-class head and says how many each further class
// adds, so the count at a dataset's classes is worked out here; a built-in's layers follow
// the dataset's shape, and GET /models gives no count for it.
import {api} from "./api.js";

export const isZoo = (model) => model?.source === "torchvision";
/** The caller's own architecture (POST /models): its facts are under `program`. */
export const isProgram = (model) => model?.source === "program";

/** Parameters with numClasses classes (10 when unknown); null for a built-in. */
export function parametersAt(model, numClasses) {
  if (model?.parameters === null || model?.parameters === undefined) return null;
  return model.parameters + ((numClasses ?? 10) - 10) * (model.parameters_per_class || 0);
}

/** 727626 -> "728K", 25557032 -> "25.6M": the short form beside the exact count. */
export function fmtCount(n) {
  for (const [unit, size] of [["B", 1e9], ["M", 1e6], ["K", 1e3]]) {
    if (n >= size) return `${(n / size).toFixed(n >= size * 100 ? 0 : 1).replace(/\.0$/, "")}${unit}`;
  }
  return String(n);
}

/** "1,528,106 (1.5M) with 10 classes" (noun: "1,528,106 (1.5M) parameters with ..."); null for a built-in. */
export function parametersText(model, numClasses, noun = "") {
  const n = parametersAt(model, numClasses);
  if (n === null) return null;
  return `${n.toLocaleString("en")} (${fmtCount(n)})${noun ? ` ${noun}` : ""} with ${numClasses ?? 10} classes`;
}

/** The image size a torchvision model needs: "at least 17×17", "224×224 only"; null: any. */
export function sizeNeed(model) {
  if (model?.fixed_image_size) return `${model.fixed_image_size.join("×")} only`;
  if (model?.min_image_size) return `at least ${model.min_image_size}×${model.min_image_size}`;
  return null;
}

/**
 * The [height, width] a job on a dataset of this shape ([channels, height, width]) gets
 * without hyperparameters.image_size: the model's fixed size, else the dataset's raised to
 * the model's minimum (core/jobspec.py's default). null when the shape is not known.
 */
export function defaultImageSize(model, shape) {
  if (model?.fixed_image_size) return model.fixed_image_size;
  if (!shape) return null;
  const least = model?.min_image_size || 1;
  return [Math.max(shape[1], least), Math.max(shape[2], least)];
}

/**
 * A job's architecture: its GET /models entry (null if the server no longer lists it) and
 * its dataset's class count (null when the dataset is gone). Asked once per job page.
 */
export async function jobArchitecture(job, signal) {
  const [list, dataset] = await Promise.all([
    // q filters by name: a program's job names it by id, so the whole list is read then.
    api(/^[0-9a-f]{32}$/.test(job.model) ? "/models" : `/models?${new URLSearchParams({q: job.model})}`, {signal}),
    api(`/datasets/${encodeURIComponent(job.dataset)}`, {signal}).catch((err) => {
      if (err.name === "AbortError") throw err;
      return null;
    }),
  ]);
  return {entry: list.models.find((m) => m.id === job.model) ?? null,
          numClasses: dataset?.num_classes ?? null};
}

/** The job page's rows [label, text, id]: the architecture and its parameter count. */
export function architectureRows(job, architecture) {
  const pretrained = job.spec?.pretrained ? ` · pretrained ${job.spec.pretrained}` : "";
  if (!architecture) {
    return [["architecture", `${job.model}${pretrained}`, "job-architecture"],
            ["parameters", "…", "job-parameters"]];
  }
  if (architecture.error) {
    return [["architecture", `${job.model}${pretrained}`, "job-architecture"],
            ["parameters", `— (GET /models: ${architecture.error})`, "job-parameters"]];
  }
  const {entry, numClasses} = architecture;
  if (!entry) {
    return [["architecture", `${job.model}${pretrained} (not listed by GET /models)`, "job-architecture"],
            ["parameters", "—", "job-parameters"]];
  }
  if (isProgram(entry)) {
    const p = entry.program;
    return [["architecture", `${entry.name} (your model, input ${p.input_shape.join("×")}, ${p.num_classes} classes)`,
             "job-architecture"],
            ["parameters", `${p.parameter_count.toLocaleString("en")} (${fmtCount(p.parameter_count)})`, "job-parameters"]];
  }
  if (!isZoo(entry)) {
    return [["architecture", `${entry.name} (built-in)`, "job-architecture"],
            ["parameters", "follow the dataset's shape (GET /models counts torchvision's only)", "job-parameters"]];
  }
  const need = sizeNeed(entry);
  return [
    ["architecture", `${entry.name} (torchvision, ${entry.family} family${need ? `, ${need}` : ""})${pretrained}`,
     "job-architecture"],
    ["parameters", parametersText(entry, numClasses) + (numClasses === null ? " (the dataset's classes are unknown)" : ""),
     "job-parameters"],
  ];
}
