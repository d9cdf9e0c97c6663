// DOM rendering. User data only ever reaches the page through textContent and
// attribute setters, never innerHTML, so note text is shown exactly as typed.
import type { ApiVersion, Note } from "./api";

/** Which notes view a person sees: today's list, or the new one behind the flag new-notes-view. */
export type NotesView = "classic" | "new";

export interface AppElements {
  root: HTMLElement;
  apiVersion: HTMLElement;
  apiCommit: HTMLElement;
  webVersion: HTMLElement;
  error: HTMLElement;
  form: HTMLFormElement;
  input: HTMLInputElement;
  submit: HTMLButtonElement;
  notes: HTMLUListElement;
  notesEmpty: HTMLElement;
  notesView: HTMLElement;
  notesTools: HTMLElement;
  notesCount: HTMLElement;
  notesSearch: HTMLInputElement;
}

function byId<T extends HTMLElement>(doc: Document, id: string, type: { new (): T }): T {
  const el = doc.getElementById(id);
  if (!(el instanceof type)) throw new Error(`page is missing #${id}`);
  return el;
}

export function findElements(doc: Document): AppElements {
  const view = doc.defaultView;
  if (!view) throw new Error("document has no window");
  return {
    root: byId(doc, "app", view.HTMLElement),
    apiVersion: byId(doc, "api-version", view.HTMLElement),
    apiCommit: byId(doc, "api-commit", view.HTMLElement),
    webVersion: byId(doc, "web-version", view.HTMLElement),
    error: byId(doc, "error", view.HTMLElement),
    form: byId(doc, "note-form", view.HTMLFormElement),
    input: byId(doc, "note-text", view.HTMLInputElement),
    submit: byId(doc, "note-submit", view.HTMLButtonElement),
    notes: byId(doc, "notes", view.HTMLUListElement),
    notesEmpty: byId(doc, "notes-empty", view.HTMLElement),
    notesView: byId(doc, "notes-view", view.HTMLElement),
    notesTools: byId(doc, "notes-tools", view.HTMLElement),
    notesCount: byId(doc, "notes-count", view.HTMLElement),
    notesSearch: byId(doc, "notes-search", view.HTMLInputElement),
  };
}

export function renderWebVersion(els: AppElements, version: string): void {
  els.webVersion.textContent = version;
}

export function renderApiVersion(els: AppElements, info: ApiVersion | null): void {
  els.apiVersion.textContent = info ? info.version : "unavailable";
  els.apiCommit.textContent = info ? info.commit : "unavailable";
}

export function noteItem(doc: Document, note: Note): HTMLLIElement {
  const li = doc.createElement("li");
  li.dataset.testid = "note";
  li.dataset.noteId = String(note.id);
  const text = doc.createElement("span");
  text.className = "note-text";
  text.dataset.testid = "note-text-value";
  text.textContent = note.text;
  const time = doc.createElement("time");
  time.className = "note-time";
  time.dateTime = note.created_at;
  time.textContent = note.created_at;
  li.append(text, " ", time);
  return li;
}

/** "2024-05-02 11:30 UTC" from an ISO timestamp; the raw text when it does not parse. */
export function readableTime(iso: string): string {
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return iso;
  return `${moment.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/** A note in the new view: a card with its text, its creation time and a pin if pinned. */
export function noteCard(doc: Document, note: Note): HTMLLIElement {
  const li = doc.createElement("li");
  li.className = "note-card";
  li.dataset.testid = "note";
  li.dataset.noteId = String(note.id);
  li.dataset.pinned = String(note.pinned === true);
  const text = doc.createElement("p");
  text.className = "note-text";
  text.dataset.testid = "note-text-value";
  text.textContent = note.text;
  const footer = doc.createElement("p");
  footer.className = "note-meta";
  const time = doc.createElement("time");
  time.className = "note-time";
  time.dateTime = note.created_at;
  time.textContent = `Created ${readableTime(note.created_at)}`;
  footer.append(time);
  if (note.pinned === true) {
    const pin = doc.createElement("span");
    pin.className = "note-pin";
    pin.dataset.testid = "note-pinned";
    pin.textContent = "Pinned";
    footer.append(" · ", pin);
  }
  li.append(text, footer);
  return li;
}

function itemFor(doc: Document, note: Note, view: NotesView): HTMLLIElement {
  return view === "new" ? noteCard(doc, note) : noteItem(doc, note);
}

/** Shows one view or the other; the classic view is exactly today's page. */
export function setNotesView(els: AppElements, view: NotesView): void {
  els.notesView.dataset.view = view;
  els.notesTools.hidden = view !== "new";
}

export function currentNotesView(els: AppElements): NotesView {
  return els.notesView.dataset.view === "new" ? "new" : "classic";
}

/** The new view's search: hides the cards whose text lacks the query, and counts. */
export function applySearch(els: AppElements): void {
  if (currentNotesView(els) !== "new") return;
  const query = els.notesSearch.value.trim().toLocaleLowerCase();
  const cards = Array.from(els.notes.children) as HTMLElement[];
  let shown = 0;
  for (const card of cards) {
    const text = card.querySelector(".note-text")?.textContent ?? "";
    card.hidden = query !== "" && !text.toLocaleLowerCase().includes(query);
    if (!card.hidden) shown += 1;
  }
  const total = cards.length;
  const noun = total === 1 ? "note" : "notes";
  els.notesCount.textContent = query ? `${shown} of ${total} ${noun}` : `${total} ${noun}`;
}

function updateEmpty(els: AppElements): void {
  els.notesEmpty.hidden = els.notes.children.length > 0;
  applySearch(els);
}

export function renderNotes(els: AppElements, notes: readonly Note[]): void {
  const doc = els.notes.ownerDocument;
  const view = currentNotesView(els);
  els.notes.replaceChildren(...notes.map((n) => itemFor(doc, n, view)));
  updateEmpty(els);
}

/** Adds a note just created: at the end of the classic list (as today), and in the new view
 * where the API lists it, newest first after the pinned notes. */
export function appendNote(els: AppElements, note: Note): void {
  const view = currentNotesView(els);
  const item = itemFor(els.notes.ownerDocument, note, view);
  if (view === "new") {
    const before =
      note.pinned === true
        ? els.notes.firstElementChild
        : Array.from(els.notes.children).find((card) => (card as HTMLElement).dataset.pinned !== "true");
    els.notes.insertBefore(item, before ?? null);
  } else {
    els.notes.append(item);
  }
  updateEmpty(els);
}

export function showErrors(els: AppElements, messages: readonly string[]): void {
  els.error.textContent = messages.join("\n");
  els.error.hidden = messages.length === 0;
}
