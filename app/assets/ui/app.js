// Onebook web UI: a small, dependency-free module on top of the JSON API
// (/api/v1). Everything shown is set with textContent, never as markup.

const API = "/api/v1";
const PAGE = 50;

const $ = (id) => document.getElementById(id);

const state = {
  query: "",
  group: null,
  offset: 0,
  contacts: [],
  total: 0,
  current: null, // the contact shown or edited
  etag: null, // its ETag, sent as If-Match when saving
  editing: false,
  lastMerge: null,
  searchSeq: 0,
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function say(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
  if (text) $("error").hidden = true;
}

// Shows an error, optionally with one button that offers a way out.
function fail(text, action) {
  const box = $("error");
  box.replaceChildren(el("span", { text }));
  if (action) {
    box.append(" ", el("button", { type: "button", text: action.label, onclick: action.run }));
  }
  box.hidden = !text;
  if (text) $("message").hidden = true;
}

function clearError() {
  $("error").hidden = true;
}

class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

async function api(method, path, { json, body, type, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin", signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.headers["Content-Type"] = type;
    init.body = body;
  }
  const response = await fetch(API + path, init);
  if (response.status === 401) {
    // The session ended: the server-rendered login form takes over.
    window.location.assign("/");
    throw new ApiError(401, "Your session ended; please log in again.");
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: text };
    }
  }
  if (!response.ok && !(response.status === 422 && data && "imported" in data)) {
    let message = (data && data.error) || `${response.status} ${response.statusText}`;
    if (data && data.field) message += ` (${data.field})`;
    throw new ApiError(response.status, message, data && data.field);
  }
  return { status: response.status, data, etag: response.headers.get("ETag") };
}

function report(error) {
  if (error.name === "AbortError") return;
  if (error.status === 503) fail("Onebook is briefly unavailable. Please try again in a moment.");
  else fail(error.message || String(error));
}

// ---- views -------------------------------------------------------------

const PANELS = ["detail-view", "form-view", "duplicates-view", "links-view", "devices-view"];

function show(panel) {
  clearError();
  for (const id of PANELS) $(id).hidden = id !== panel;
}

// ---- the contact list ----------------------------------------------------

function listParams(offset) {
  const params = new URLSearchParams();
  if (state.query) params.set("q", state.query);
  if (state.group) params.set("group", state.group);
  params.set("offset", String(offset));
  params.set("limit", String(PAGE));
  return params.toString();
}

let listAbort = null;

async function loadContacts({ append = false } = {}) {
  if (listAbort) listAbort.abort();
  listAbort = new AbortController();
  const seq = ++state.searchSeq;
  const offset = append ? state.contacts.length : 0;
  try {
    const { data } = await api("GET", `/contacts?${listParams(offset)}`, { signal: listAbort.signal });
    if (seq !== state.searchSeq) return;
    state.contacts = append ? state.contacts.concat(data.contacts) : data.contacts;
    state.total = data.total;
    renderContacts();
  } catch (error) {
    report(error);
  }
}

function summary(contact) {
  const parts = [];
  if (contact.emails && contact.emails.length) parts.push(contact.emails[0].value);
  if (contact.phones && contact.phones.length) parts.push(contact.phones[0].value);
  if (contact.organization) parts.push(contact.organization);
  return parts.join(" · ");
}

function displayName(contact) {
  return contact.formatted_name || "(no name)";
}

function renderContacts() {
  const list = $("contacts");
  list.replaceChildren();
  for (const contact of state.contacts) {
    const open = el("button", { type: "button", class: "link", text: displayName(contact), onclick: () => openContact(contact.id) });
    list.append(el("li", {}, open, el("span", { class: "muted", text: summary(contact) })));
  }
  const scope = [];
  if (state.group) scope.push(`in group “${state.group}”`);
  if (state.query) scope.push(`matching “${state.query}”`);
  const count = state.total === 1 ? "1 contact" : `${state.total} contacts`;
  $("list-summary").textContent = [count, ...scope].join(" ");
  $("list-heading").textContent = state.group ? `Contacts in ${state.group}` : "Contacts";
  $("more-button").hidden = state.contacts.length >= state.total;
}

let searchTimer = null;

function onSearchInput() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    const query = $("search").value.trim();
    if (query === state.query) return;
    state.query = query;
    loadContacts();
  }, 250);
}

// ---- groups and export ---------------------------------------------------

async function loadGroups() {
  try {
    const { data } = await api("GET", "/groups");
    renderGroups(data);
  } catch (error) {
    report(error);
  }
}

function renderGroups(groups) {
  const list = $("groups");
  list.replaceChildren();
  const item = (label, group) => {
    const button = el("button", {
      type: "button",
      class: "link",
      text: label,
      "aria-pressed": String(state.group === group),
      onclick: () => {
        state.group = group;
        renderGroups(groups);
        updateExportLink();
        loadContacts();
      },
    });
    list.append(el("li", {}, button));
  };
  item("All contacts", null);
  for (const group of groups) item(`${group.name} (${group.count})`, group.name);
}

function updateExportLink() {
  const params = new URLSearchParams({ version: $("export-version").value });
  if (state.group) params.set("group", state.group);
  const link = $("export-link");
  link.href = `${API}/contacts/export.vcf?${params}`;
  link.textContent = state.group ? `Export “${state.group}” (.vcf)` : "Export all contacts (.vcf)";
}

async function refresh() {
  await Promise.all([loadContacts(), loadGroups()]);
}

// ---- view, add, edit, delete ---------------------------------------------

async function openContact(id) {
  try {
    const { data, etag } = await api("GET", `/contacts/${encodeURIComponent(id)}`);
    state.current = data;
    state.etag = etag;
    renderDetail();
    show("detail-view");
    $("edit-button").focus();
  } catch (error) {
    report(error);
  }
}

function renderDetail() {
  const contact = state.current;
  $("detail-heading").textContent = displayName(contact);
  const fields = $("detail-fields");
  fields.replaceChildren();
  const add = (label, values) => {
    const list = values.filter((v) => v);
    if (!list.length) return;
    fields.append(el("dt", { text: label }));
    for (const value of list) fields.append(el("dd", { text: value }));
  };
  const labeled = (items) => (items || []).map((i) => (i.label ? `${i.value} (${i.label})` : i.value));
  add("Email", labeled(contact.emails));
  add("Phone", labeled(contact.phones));
  add("Organisation", [contact.organization]);
  add("Title", contact.titles || []);
  add("Address", (contact.addresses || []).map((a) =>
    [a.street, a.locality, a.region, a.postal_code, a.country].filter((p) => p).join(", ")));
  add("Website", labeled(contact.urls));
  add("Birthday", [contact.birthday]);
  add("Groups", [(contact.categories || []).join(", ")]);
  add("Note", [contact.note]);
}

function startAdd() {
  state.editing = false;
  state.current = null;
  state.etag = null;
  $("form-heading").textContent = "Add a contact";
  $("contact-form").reset();
  show("form-view");
  $("f-name").focus();
}

function startEdit() {
  const contact = state.current;
  state.editing = true;
  $("form-heading").textContent = `Edit ${displayName(contact)}`;
  $("f-name").value = contact.formatted_name || "";
  $("f-emails").value = (contact.emails || []).map((e) => e.value).join("\n");
  $("f-phones").value = (contact.phones || []).map((p) => p.value).join("\n");
  $("f-org").value = contact.organization || "";
  $("f-groups").value = (contact.categories || []).join(", ");
  $("f-note").value = contact.note || "";
  show("form-view");
  $("f-name").focus();
}

function lines(text) {
  return text.split("\n").map((l) => l.trim()).filter((l) => l);
}

// Keeps each value's label from the card being edited.
function relabel(values, previous) {
  return values.map((value) => {
    const old = (previous || []).find((p) => p.value === value);
    return old && old.label ? { value, label: old.label } : { value };
  });
}

function cardFromForm() {
  // Start from the full card so fields the form does not show survive.
  const card = state.editing ? { ...state.current } : {};
  for (const meta of ["id", "version", "created_at", "updated_at"]) delete card[meta];
  card.formatted_name = $("f-name").value.trim();
  card.emails = relabel(lines($("f-emails").value), card.emails);
  card.phones = relabel(lines($("f-phones").value), card.phones);
  const org = $("f-org").value.trim();
  if (org) card.organization = org;
  else delete card.organization;
  card.categories = $("f-groups").value.split(",").map((g) => g.trim()).filter((g) => g);
  const note = $("f-note").value.trim();
  if (note) card.note = note;
  else delete card.note;
  return card;
}

async function save(event) {
  event.preventDefault();
  const card = cardFromForm();
  try {
    let result;
    if (state.editing) {
      const id = state.current.id;
      result = await api("PUT", `/contacts/${encodeURIComponent(id)}`, {
        json: card,
        headers: state.etag ? { "If-Match": state.etag } : {},
      });
    } else {
      result = await api("POST", "/contacts", { json: card });
    }
    state.current = result.data;
    state.etag = result.etag || `"v${result.data.version}"`;
    say(state.editing ? `Saved ${displayName(result.data)}.` : `Added ${displayName(result.data)}.`);
    state.editing = false;
    renderDetail();
    show("detail-view");
    refresh();
  } catch (error) {
    if (error.status === 412) {
      const id = state.current.id;
      fail("Someone changed this contact since you opened it, so your edit was not saved. " +
        "Open the latest version, then redo your change.",
        { label: "Open the latest version", run: () => openContact(id) });
    } else {
      report(error);
    }
  }
}

async function remove() {
  const contact = state.current;
  if (!window.confirm(`Delete ${displayName(contact)}?`)) return;
  try {
    await api("DELETE", `/contacts/${encodeURIComponent(contact.id)}`);
    say(`Deleted ${displayName(contact)}.`);
    state.current = null;
    show(null);
    refresh();
  } catch (error) {
    report(error);
  }
}

// ---- import --------------------------------------------------------------

async function importFile(event) {
  event.preventDefault();
  const input = $("import-file");
  const file = input.files && input.files[0];
  if (!file) {
    fail("Choose a .vcf file to import first.");
    return;
  }
  const box = $("import-report");
  clearError();
  try {
    const bytes = await file.arrayBuffer();
    const { data } = await api("POST", "/contacts/import", { body: bytes, type: "text/vcard" });
    box.replaceChildren();
    const imported = data.imported === 1 ? "1 contact" : `${data.imported} contacts`;
    box.append(el("p", { text: `Imported ${imported} from ${file.name}.` }));
    if (data.errors.length) {
      box.append(el("p", { text: `${data.errors.length} card(s) could not be imported:` }));
      const list = el("ul", { "aria-label": "Import errors" });
      for (const e of data.errors) {
        const where = e.line ? `Card ${e.index + 1} (line ${e.line})` : `Card ${e.index + 1}`;
        list.append(el("li", { text: `${where}: ${e.message}` }));
      }
      box.append(list);
    }
    box.hidden = false;
    input.value = "";
    refresh();
  } catch (error) {
    if (error.status === 413) fail("That file is too large to import.");
    else report(error);
  }
}

// ---- duplicates and merging ----------------------------------------------

async function loadDuplicates() {
  try {
    const { data } = await api("GET", "/duplicates");
    renderDuplicates(data);
    show("duplicates-view");
  } catch (error) {
    report(error);
  }
}

function pairSide(contact) {
  return el("div", { class: "side-card" },
    el("strong", { text: displayName(contact) }),
    el("span", { class: "muted", text: summary(contact) }));
}

function renderDuplicates(pairs) {
  const list = $("duplicates");
  list.replaceChildren();
  if (!pairs.length) {
    list.append(el("li", { text: "No duplicates found." }));
    return;
  }
  for (const pair of pairs) {
    const reasons = el("p", { class: "reasons", text: `Why: ${pair.reasons.join(", ")}` });
    const keepA = el("button", {
      type: "button",
      text: `Merge into ${displayName(pair.a)}`,
      onclick: () => merge(pair.a, pair.b),
    });
    const keepB = el("button", {
      type: "button",
      text: `Merge into ${displayName(pair.b)}`,
      onclick: () => merge(pair.b, pair.a),
    });
    list.append(el("li", { class: "pair" },
      el("div", { class: "sides" }, pairSide(pair.a), pairSide(pair.b)),
      reasons,
      el("p", { class: "actions" }, keepA, keepB)));
  }
}

async function merge(keep, other) {
  clearError();
  try {
    const { data } = await api("POST", "/duplicates/merge", { json: { keep: keep.id, merge: [other.id] } });
    state.lastMerge = data.merge_id;
    renderMergeResult(`Merged ${displayName(other)} into ${displayName(data.contact)}.`, true);
    await Promise.all([refresh(), reloadDuplicates()]);
  } catch (error) {
    report(error);
  }
}

async function reloadDuplicates() {
  const { data } = await api("GET", "/duplicates");
  renderDuplicates(data);
}

function renderMergeResult(text, undoable) {
  const box = $("merge-result");
  box.replaceChildren(el("span", { text }));
  if (undoable) {
    box.append(" ", el("button", { type: "button", text: "Undo merge", onclick: undoMerge }));
  }
  box.hidden = false;
}

async function undoMerge() {
  if (!state.lastMerge) return;
  clearError();
  try {
    const { data } = await api("POST", `/merges/${encodeURIComponent(state.lastMerge)}/undo`);
    state.lastMerge = null;
    const n = data.restored.length;
    renderMergeResult(`Merge undone: ${n} contact${n === 1 ? "" : "s"} restored.`, false);
    await Promise.all([refresh(), reloadDuplicates()]);
  } catch (error) {
    report(error);
  }
}

// ---- linked accounts (for the sync bots) ---------------------------------

const SERVICES = {
  google: {
    name: "Google",
    account: "The Google account's email address.",
    secret: "An OAuth refresh token with offline access to your contacts. It is stored encrypted and never shown again.",
  },
  highrise: {
    name: "Highrise",
    account: "Your Highrise subdomain: acme for acme.highrisehq.com.",
    secret: "Your Highrise API token (My Info → API token). It is stored encrypted and never shown again.",
  },
};

const SYNC_STATUS = {
  never: "not synced yet",
  ok: "synced",
  needs_reauth: "needs to be linked again",
  error: "failed",
};

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function updateLinkHints() {
  const service = SERVICES[$("l-service").value];
  $("l-account-hint").textContent = service.account;
  $("l-secret-hint").textContent = service.secret;
}

async function loadLinks() {
  try {
    const { data } = await api("GET", "/linked-accounts");
    renderLinks(data);
    updateLinkHints();
    show("links-view");
  } catch (error) {
    report(error);
  }
}

function renderLinks(links) {
  const list = $("links");
  list.replaceChildren();
  if (!links.length) {
    list.append(el("li", { text: "No linked accounts yet." }));
    return;
  }
  for (const link of links) {
    const service = SERVICES[link.service] ? SERVICES[link.service].name : link.service;
    const sync = link.last_sync;
    let status = `Last sync: ${SYNC_STATUS[sync.status] || sync.status}`;
    if (sync.at) status += ` (${when(sync.at)})`;
    if (sync.error) status += ` — ${sync.error}`;
    const unlink = el("button", {
      type: "button",
      class: "danger",
      text: "Unlink",
      "aria-label": `Unlink ${service} ${link.account}`,
      onclick: () => unlinkAccount(link, service),
    });
    list.append(el("li", { class: "link-row" },
      el("strong", { text: `${service} · ${link.account}` }),
      el("span", { class: `grow status-${sync.status}`, text: status }),
      unlink));
  }
}

async function linkAccount(event) {
  event.preventDefault();
  clearError();
  for (const id of ["l-account", "l-secret"]) $(id).removeAttribute("aria-invalid");
  const body = {
    service: $("l-service").value,
    account: $("l-account").value.trim(),
    secret: $("l-secret").value,
  };
  try {
    const { data } = await api("POST", "/linked-accounts", { json: body });
    $("link-form").reset();
    updateLinkHints();
    say(`Linked ${SERVICES[data.service].name} account ${data.account}.`);
    const { data: links } = await api("GET", "/linked-accounts");
    renderLinks(links);
  } catch (error) {
    const input = { account: "l-account", secret: "l-secret", service: "l-service" }[error.field];
    if (input) {
      $(input).setAttribute("aria-invalid", "true");
      $(input).focus();
    }
    if (error.status === 409) fail("That account is already linked.");
    else report(error);
  }
}

async function unlinkAccount(link, service) {
  if (!window.confirm(`Unlink ${service} account ${link.account}? Its contacts stop syncing.`)) return;
  clearError();
  try {
    await api("DELETE", `/linked-accounts/${encodeURIComponent(link.id)}`);
    say(`Unlinked ${service} account ${link.account}.`);
  } catch (error) {
    if (error.status !== 404) report(error);
  }
  try {
    const { data } = await api("GET", "/linked-accounts");
    renderLinks(data);
  } catch (error) {
    report(error);
  }
}

// ---- SyncML devices --------------------------------------------------------

function deviceName(device) {
  const info = device.info || {};
  if (info.model && info.manufacturer) return `${info.model} (${info.manufacturer})`;
  return info.model || device.dev_id;
}

async function loadDevices() {
  try {
    const { data } = await api("GET", "/devices");
    renderDevices(data);
    show("devices-view");
  } catch (error) {
    report(error);
  }
}

function renderDevices(devices) {
  const list = $("devices");
  list.replaceChildren();
  if (!devices.length) {
    list.append(el("li", { text: "No devices have synced yet." }));
    return;
  }
  for (const device of devices) {
    const name = deviceName(device);
    const info = device.info || {};
    const details = [device.dev_id, info.device_type, info.software_version && `software ${info.software_version}`]
      .filter((d) => d).join(" · ");
    const last = device.last_sync_at ? `Last sync: ${when(device.last_sync_at)}` : "Never completed a sync";
    const forget = el("button", {
      type: "button",
      class: "danger",
      text: "Forget",
      "aria-label": `Forget ${name}`,
      onclick: () => forgetDevice(device, name),
    });
    const item = el("li", { class: "device-row" },
      el("div", { class: "grow" }, el("strong", { text: name }), " ", el("span", { class: "muted", text: details })),
      el("span", { text: last }),
      forget);
    if (device.datastores.length) {
      const rows = device.datastores.map((d) => el("tr", {},
        el("td", { text: d.datastore }),
        el("td", { text: when(d.last_sync_at) }),
        el("td", { text: String(d.mapped_items) })));
      item.append(el("table", { "aria-label": `Datastores of ${name}` },
        el("thead", {}, el("tr", {},
          el("th", { text: "Datastore" }), el("th", { text: "Last sync" }), el("th", { text: "Items on the device" }))),
        el("tbody", {}, ...rows)));
    }
    list.append(item);
  }
}

async function forgetDevice(device, name) {
  if (!window.confirm(`Forget ${name}? Its next sync will send everything again (slow sync).`)) return;
  clearError();
  try {
    await api("DELETE", `/devices/${encodeURIComponent(device.dev_id)}`);
    say(`Forgot ${name}; its next sync is a slow sync.`);
  } catch (error) {
    if (error.status !== 404) report(error);
  }
  try {
    const { data } = await api("GET", "/devices");
    renderDevices(data);
  } catch (error) {
    report(error);
  }
}

// ---- wiring --------------------------------------------------------------

function start() {
  for (const event of ["input", "change", "search"]) $("search").addEventListener(event, onSearchInput);
  $("add-button").addEventListener("click", startAdd);
  $("duplicates-button").addEventListener("click", loadDuplicates);
  $("links-button").addEventListener("click", loadLinks);
  $("devices-button").addEventListener("click", loadDevices);
  $("link-form").addEventListener("submit", linkAccount);
  $("l-service").addEventListener("change", updateLinkHints);
  $("more-button").addEventListener("click", () => loadContacts({ append: true }));
  $("edit-button").addEventListener("click", startEdit);
  $("delete-button").addEventListener("click", remove);
  $("contact-form").addEventListener("submit", save);
  $("import-form").addEventListener("submit", importFile);
  $("export-version").addEventListener("change", updateExportLink);
  for (const button of document.querySelectorAll(".close-button")) {
    button.addEventListener("click", () => show(null));
  }
  document.body.dataset.ready = "true";
  refresh();
}

start();
