// The submit form's model field: a search box over GET /models' whole list (the caller's own
// programs, the built-ins, then torchvision's zoo) filtering the select under it as one
// types. The select stays the field (its value, the entry's id, is what the form posts: a
// program's name need not be unique, its id is), so picking from it works as before; the
// search only narrows it, choosing the first match when the chosen model no longer matches.
import {h, replace} from "../dom.js";
import {fmtCount, isProgram, isZoo} from "../models.js";

/** A name or a family holding the text, in either case ("" matches all). */
export function matchingModels(models, text) {
  const q = text.trim().toLowerCase();
  return q ? models.filter((m) => m.name.toLowerCase().includes(q) || m.family.toLowerCase().includes(q)) : models;
}

/** What an option says: a program's input shape and classes, a torchvision model's size. */
function optionText(m) {
  if (isProgram(m)) return `${m.name} · ${m.program.input_shape.join("×")} · ${m.program.num_classes} classes`;
  return m.parameters ? `${m.name} · ${fmtCount(m.parameters)}` : m.name;
}

/** Option groups in the list's order: the caller's programs, the built-ins, then torchvision's by family. */
function optionGroups(models) {
  const groups = new Map();
  for (const m of models) {
    const group = isProgram(m) ? "your models" : isZoo(m) ? `torchvision · ${m.family}` : "built-in";
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(h("option", {value: m.id}, optionText(m)));
  }
  return [...groups].map(([label, options]) => h("optgroup", {label}, options));
}

/** {search, select, count} (initial: an entry's id): onChange() runs whenever the chosen model may have changed. */
export function modelPicker(models, initial, onChange) {
  const select = h("select", {});
  const search = h("input", {type: "search", id: "f-model-search", autocomplete: "off", spellcheck: "false",
                             placeholder: `Search ${models.length} models: resnet, vit, mobilenet…`,
                             "aria-label": "Search the models", "aria-controls": "f-model"});
  const count = h("span", {class: "hint", id: "f-model-count"});
  let chosen = initial;

  function filter() {
    const list = matchingModels(models, search.value);
    replace(select, list.length ? optionGroups(list)
      : h("option", {value: "", disabled: true}, `no model matches “${search.value.trim()}”`));
    if (!list.some((m) => m.id === chosen)) chosen = list[0]?.id ?? "";
    select.value = chosen;
    count.textContent = search.value.trim() ? `${list.length} of ${models.length} models match` : "";
    onChange();
  }

  select.addEventListener("change", () => { chosen = select.value; onChange(); });
  search.addEventListener("input", filter);
  search.addEventListener("keydown", (event) => {
    // Up and down walk the matches without leaving the box; Enter keeps the choice
    // rather than submitting the form.
    if (event.key === "Enter") event.preventDefault();
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    event.preventDefault();
    const names = [...select.options].filter((o) => !o.disabled).map((o) => o.value);
    const at = names.indexOf(select.value) + (event.key === "ArrowDown" ? 1 : -1);
    if (!names.length) return;
    chosen = names[Math.min(names.length - 1, Math.max(0, at))];
    select.value = chosen;
    onChange();
  });
  replace(select, optionGroups(models));
  select.value = chosen;
  return {search, select, count};
}
