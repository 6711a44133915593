// The submit form's torchvision settings, shown only for a torchvision model: image size
// (the model's minimum or fixed size as hint, the size a job gets without it as
// placeholder), pretrained weights (none, DEFAULT or one of the weights GET /models lists
// for the model) and freeze (none or backbone). Freeze shows once there are trained weights
// to keep: a pretrained choice, or an init_from that "Run again" copies; on random weights a
// frozen backbone would leave a linear head on random features. A built-in's form and the
// body it posts are what they were: these fields send nothing for it.
import {h, replace} from "../dom.js";
import {defaultImageSize, isZoo, sizeNeed} from "../models.js";

const side = (size) => (size[0] === size[1] ? String(size[0]) : size.join("×"));

/**
 * field(path, label, control, hint) builds a form field (submit.js); onChange() runs when
 * a choice changes what is shown. Returns {fields, update(model, dataset), apply(hp, body)}.
 */
export function zooFields(field, from, onChange) {
  const copied = from?.spec?.hyperparameters || {};
  const copiedSize = copied.image_size || null; // [height, width]
  // A form field holds a square; a copied [height, width] that is not one is kept while
  // the field stays empty (on the copied job's model).
  const keptSize = copiedSize && copiedSize[0] !== copiedSize[1] ? copiedSize : null;
  const imageSize = h("input", {type: "number", min: 1, max: 1024, step: 1,
                                value: copiedSize && !keptSize ? copiedSize[0] : ""});
  const imageHint = h("span", {class: "hint", id: "image-size-hint"});
  const pretrained = h("select", {});
  const freeze = h("select", {},
    h("option", {value: "none"}, "none: train every layer"),
    h("option", {value: "backbone"}, "backbone: train the new head only"));
  freeze.value = copied.freeze === "backbone" ? "backbone" : "none";
  const fields = {
    imageSize: field("hyperparameters.image_size", "Image size", imageSize, imageHint),
    pretrained: field("pretrained", "Pretrained weights", pretrained,
      "torchvision's published weights, from the server's cache; the head is replaced for the dataset's classes"),
    freeze: field("hyperparameters.freeze", "Freeze", freeze, "backbone: only the new classifier head learns"),
  };
  let model = null;
  let wanted = from?.spec?.pretrained || ""; // the choice to keep while models change

  pretrained.addEventListener("change", () => { wanted = pretrained.value; onChange(); });

  function update(chosen, dataset) {
    model = chosen;
    const zoo = isZoo(model);
    const weights = zoo ? model.pretrained_weights : [];
    fields.imageSize.hidden = !zoo;
    // A job run again from one with init_from starts from that checkpoint (copied below
    // the form), which the API takes with no pretrained beside it.
    fields.pretrained.hidden = !weights.length || Boolean(from?.spec?.init_from);
    const offered = ["", "DEFAULT", ...weights];
    replace(pretrained, h("option", {value: ""}, "none (random initialisation)"),
      h("option", {value: "DEFAULT"}, "DEFAULT (torchvision's recommended)"),
      weights.map((w) => h("option", {value: w}, w)));
    pretrained.value = offered.includes(wanted) ? wanted : "";
    fields.freeze.hidden = !zoo || !(pretrained.value || from?.spec?.init_from || copied.freeze === "backbone");
    if (!zoo) return;
    const fallback = defaultImageSize(model, dataset?.shape);
    imageSize.placeholder = fallback ? side(fallback) : "";
    imageSize.min = model.fixed_image_size?.[0] || model.min_image_size || 1;
    const origin = model.fixed_image_size ? "the model takes no other size"
      : dataset?.shape ? (fallback[0] > dataset.shape[1] || fallback[1] > dataset.shape[2]
        ? `the dataset's ${dataset.shape[1]}×${dataset.shape[2]} raised to the minimum` : "the dataset's size")
      : "the dataset's size raised to the minimum";
    imageHint.textContent = `${sizeNeed(model) || "any size"}; empty: ${
      keptSize && chosen.name === from?.model ? `${keptSize.join("×")} (copied)` : fallback ? `${fallback.join("×")} (${origin})` : origin}`;
  }

  /** Write the visible choices into the body; a problem {field, msg}, or null. */
  function apply(hp, body) {
    if (!isZoo(model)) {
      // A torchvision job's settings that "Run again" copied and a built-in would refuse.
      if (hp.image_size !== null && hp.image_size !== undefined) delete hp.image_size;
      if (hp.freeze !== undefined && hp.freeze !== "none") delete hp.freeze;
      return null;
    }
    const raw = imageSize.value.trim();
    if (raw !== "") hp.image_size = Number(raw);
    else if (imageSize.validity.badInput) return {field: "hyperparameters.image_size", msg: "not a number"};
    else if (!(keptSize && model.name === from?.model)) delete hp.image_size;
    if (!fields.pretrained.hidden && pretrained.value) body.pretrained = pretrained.value;
    if (!fields.freeze.hidden && freeze.value !== "none") hp.freeze = freeze.value;
    else if (hp.freeze !== undefined && hp.freeze !== "none") delete hp.freeze;
    return null;
  }

  return {fields: Object.values(fields), update, apply};
}
