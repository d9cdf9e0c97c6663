// DOM rendering. User data only ever reaches the page through textContent and
// attribute setters, never innerHTML, so note text is shown exactly as typed.
import type { ApiVersion, Note } from "./api";

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

function updateEmpty(els: AppElements): void {
  els.notesEmpty.hidden = els.notes.children.length > 0;
}

export function renderNotes(els: AppElements, notes: readonly Note[]): void {
  const doc = els.notes.ownerDocument;
  els.notes.replaceChildren(...notes.map((n) => noteItem(doc, n)));
  updateEmpty(els);
}

export function appendNote(els: AppElements, note: Note): void {
  els.notes.append(noteItem(els.notes.ownerDocument, note));
  updateEmpty(els);
}

export function showErrors(els: AppElements, messages: readonly string[]): void {
  els.error.textContent = messages.join("\n");
  els.error.hidden = messages.length === 0;
}
