import { ApiError, NEW_NOTES_VIEW, type ApiClient, type Flags } from "./api";
import {
  appendNote,
  applySearch,
  findElements,
  renderApiVersion,
  renderNotes,
  renderWebVersion,
  setNotesView,
  showErrors,
  type AppElements,
  type NotesView,
} from "./render";

export interface AppOptions {
  api: ApiClient;
  webVersion: string;
}

export interface App {
  elements: AppElements;
  /** Settles when the first load of flags, version and notes is over (never rejects). */
  loaded: Promise<void>;
  /** Posts the form's text as a new note; what the submit handler runs. */
  submitNote(): Promise<void>;
}

function errorText(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  return `Unexpected error: ${err instanceof Error ? err.message : String(err)}`;
}

/** The notes view the flags ask for; without an answer, today's view. */
export function notesViewFor(flags: Flags | null): NotesView {
  return flags?.flags[NEW_NOTES_VIEW] === true ? "new" : "classic";
}

export function startApp(doc: Document, options: AppOptions): App {
  const els = findElements(doc);
  const { api } = options;
  renderWebVersion(els, options.webVersion);

  async function load(): Promise<void> {
    els.root.dataset.state = "loading";
    // Flags first, alone: on a first visit its answer sets the session cookie, so the notes
    // request that follows is evaluated (and counted) for the same person. Without flags the
    // page still works, in today's view.
    const flags = await api.getFlags().catch(() => null);
    setNotesView(els, notesViewFor(flags));
    const [version, notes] = await Promise.allSettled([api.getVersion(), api.listNotes()]);
    const errors: string[] = [];
    if (version.status === "fulfilled") {
      renderApiVersion(els, version.value);
    } else {
      renderApiVersion(els, null);
      errors.push(errorText(version.reason));
    }
    if (notes.status === "fulfilled") {
      renderNotes(els, notes.value);
    } else {
      errors.push(errorText(notes.reason));
    }
    showErrors(els, errors);
    els.root.dataset.state = errors.length ? "error" : "ready";
  }

  let posting = false;
  async function submitNote(): Promise<void> {
    if (posting) return;
    const text = els.input.value.trim();
    if (!text) {
      showErrors(els, ["A note needs some text."]);
      return;
    }
    posting = true;
    els.submit.disabled = true;
    try {
      const note = await api.createNote(text);
      appendNote(els, note);
      els.input.value = "";
      showErrors(els, []);
    } catch (err) {
      // Keep what was typed so the person can retry.
      showErrors(els, [errorText(err)]);
    } finally {
      posting = false;
      els.submit.disabled = false;
    }
  }

  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    void submitNote();
  });
  els.notesSearch.addEventListener("input", () => applySearch(els));

  return { elements: els, loaded: load(), submitNote };
}
