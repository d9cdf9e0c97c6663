import { beforeEach, describe, expect, it, vi } from "vitest";
import { createApiClient, type FetchFn } from "./api";
import { startApp } from "./app";
import { jsonResponse, loadPage, routedFetch, type Route } from "./testing";

const VERSION = { version: "1.4.0", commit: "0123abcd" };
const NOTES = [
  { id: 1, text: "first note", created_at: "2024-05-01T10:00:00Z" },
  { id: 2, text: "second note", created_at: "2024-05-02T11:30:00Z" },
];

const byTestId = (id: string) => {
  const el = document.querySelector<HTMLElement>(`[data-testid="${id}"]`);
  if (!el) throw new Error(`no element with data-testid=${id}`);
  return el;
};
const noteTexts = () =>
  Array.from(document.querySelectorAll('[data-testid="notes"] [data-testid="note"] .note-text'), (el) => el.textContent);

function flagsAnswer(newNotesView: boolean) {
  return { flags: { "new-notes-view": newNotesView }, key: "session-1234567890" };
}

function okRoutes(notes: unknown = NOTES, newNotesView = false): Route[] {
  return [
    { method: "GET", url: "/api/flags", respond: () => jsonResponse(flagsAnswer(newNotesView)) },
    { method: "GET", url: "/api/version", respond: () => jsonResponse(VERSION) },
    { method: "GET", url: "/api/notes", respond: () => jsonResponse(notes) },
  ];
}

function start(fetch: FetchFn, webVersion = "9.9.9-test") {
  return startApp(document, { api: createApiClient({ fetch }), webVersion });
}

function submitForm(text: string) {
  (byTestId("note-text") as HTMLInputElement).value = text;
  byTestId("note-form").dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
}

beforeEach(() => {
  loadPage();
});

describe("page load", () => {
  it("shows the API version and commit, the web version and the notes", async () => {
    const app = start(routedFetch(okRoutes()));
    expect(byTestId("app").dataset.state).toBe("loading");
    expect(byTestId("web-version").textContent).toBe("9.9.9-test");
    await app.loaded;

    expect(byTestId("api-version").textContent).toBe("1.4.0");
    expect(byTestId("api-commit").textContent).toBe("0123abcd");
    expect(noteTexts()).toEqual(["first note", "second note"]);
    const items = document.querySelectorAll<HTMLElement>('[data-testid="note"]');
    expect(items[1]?.dataset.noteId).toBe("2");
    expect(items[1]?.querySelector("time")?.getAttribute("datetime")).toBe("2024-05-02T11:30:00Z");
    expect(byTestId("error").hidden).toBe(true);
    expect(byTestId("notes-empty").hidden).toBe(true);
    expect(byTestId("app").dataset.state).toBe("ready");
  });

  it("says so when there are no notes", async () => {
    await start(routedFetch(okRoutes([]))).loaded;
    expect(noteTexts()).toEqual([]);
    expect(byTestId("notes-empty").hidden).toBe(false);
  });

  it("renders note text literally, never as HTML", async () => {
    const evil = '<img src=x onerror="window.__pwned=1"><b>bold</b> & "quotes"';
    await start(routedFetch(okRoutes([{ id: 3, text: evil, created_at: "<script>x</script>" }]))).loaded;

    const notes = byTestId("notes");
    expect(noteTexts()).toEqual([evil]);
    expect(notes.querySelector("img, b, script")).toBeNull();
    expect(notes.innerHTML).toContain("&lt;img");
    expect(notes.querySelector("time")?.textContent).toBe("<script>x</script>");
  });

  it("shows a clear error when the API is unreachable", async () => {
    const fetch = vi.fn<FetchFn>().mockRejectedValue(new TypeError("Failed to fetch"));
    await start(fetch).loaded;

    const error = byTestId("error");
    expect(error.hidden).toBe(false);
    expect(error.getAttribute("role")).toBe("alert");
    expect(error.textContent).toContain("Cannot reach the API (GET /api/version): Failed to fetch");
    expect(error.textContent).toContain("Cannot reach the API (GET /api/notes): Failed to fetch");
    expect(byTestId("api-version").textContent).toBe("unavailable");
    expect(byTestId("web-version").textContent).toBe("9.9.9-test");
    expect(byTestId("app").dataset.state).toBe("error");
  });

  it("still shows the notes when only the version endpoint fails", async () => {
    const fetch = routedFetch([
      { method: "GET", url: "/api/version", respond: () => new Response("", { status: 503 }) },
      { method: "GET", url: "/api/notes", respond: () => jsonResponse(NOTES) },
    ]);
    await start(fetch).loaded;
    expect(noteTexts()).toEqual(["first note", "second note"]);
    expect(byTestId("error").textContent).toContain("Cannot reach the API (GET /api/version)");
    expect(byTestId("error").textContent).not.toContain("/api/notes");
  });
});

describe("note form", () => {
  it("posts {text} as JSON to /api/notes and appends the created note", async () => {
    const created = { id: 3, text: "third note", created_at: "2024-05-03T09:00:00Z" };
    const fetch = routedFetch([
      ...okRoutes(),
      { method: "POST", url: "/api/notes", respond: () => jsonResponse(created, 201) },
    ]);
    await start(fetch).loaded;

    submitForm("  third note  ");
    await vi.waitFor(() => expect(noteTexts()).toHaveLength(3));

    const post = fetch.mock.calls.find(([, init]) => init?.method === "POST");
    expect(post?.[0]).toBe("/api/notes");
    expect(JSON.parse(String(post?.[1]?.body))).toEqual({ text: "third note" });
    expect(new Headers(post?.[1]?.headers).get("Content-Type")).toBe("application/json");
    expect(noteTexts()).toEqual(["first note", "second note", "third note"]);
    expect((byTestId("note-text") as HTMLInputElement).value).toBe("");
    expect(byTestId("error").hidden).toBe(true);
  });

  it("does not post an empty note", async () => {
    const fetch = routedFetch(okRoutes());
    const app = start(fetch);
    await app.loaded;
    submitForm("   ");
    await app.submitNote();
    expect(fetch.mock.calls.some(([, init]) => init?.method === "POST")).toBe(false);
    expect(byTestId("error").textContent).toBe("A note needs some text.");
  });

  it("keeps the typed text and shows the error when posting fails", async () => {
    const fetch = routedFetch([
      ...okRoutes(),
      { method: "POST", url: "/api/notes", respond: () => new Response("nope", { status: 500 }) },
    ]);
    await start(fetch).loaded;

    submitForm("will fail");
    await vi.waitFor(() => expect(byTestId("error").hidden).toBe(false));
    expect(byTestId("error").textContent).toContain("POST /api/notes with HTTP 500");
    expect((byTestId("note-text") as HTMLInputElement).value).toBe("will fail");
    expect(noteTexts()).toEqual(["first note", "second note"]);
    expect((byTestId("note-submit") as HTMLButtonElement).disabled).toBe(false);
  });

  it("sends one request for a double submit", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const fetch = routedFetch([
      ...okRoutes(),
      {
        method: "POST",
        url: "/api/notes",
        respond: async () => {
          await gate;
          return jsonResponse({ id: 9, text: "once", created_at: "2024-05-04T00:00:00Z" }, 201);
        },
      },
    ]);
    await start(fetch).loaded;

    submitForm("once");
    submitForm("once");
    expect((byTestId("note-submit") as HTMLButtonElement).disabled).toBe(true);
    release();
    await vi.waitFor(() => expect(noteTexts()).toContain("once"));
    expect(fetch.mock.calls.filter(([, init]) => init?.method === "POST")).toHaveLength(1);
  });
});

describe("notes view (flag new-notes-view)", () => {
  const PINNED_NOTES = [
    { id: 5, text: "pinned plan", created_at: "2024-05-03T08:15:00Z", pinned: true },
    { id: 2, text: "second note", created_at: "2024-05-02T11:30:00Z", pinned: false },
    { id: 1, text: "first note", created_at: "2024-05-01T10:00:00Z", pinned: false },
  ];
  const view = () => byTestId("notes-view").dataset.view;
  const cards = () => Array.from(document.querySelectorAll<HTMLElement>('[data-testid="notes"] .note-card'));
  const visibleTexts = () =>
    cards()
      .filter((card) => !card.hidden)
      .map((card) => card.querySelector(".note-text")?.textContent);

  function search(query: string) {
    const box = byTestId("notes-search") as HTMLInputElement;
    box.value = query;
    box.dispatchEvent(new Event("input", { bubbles: true }));
  }

  it("asks for the flags first, alone, so a first visit's session cookie is set before the rest", async () => {
    const fetch = routedFetch(okRoutes());
    await start(fetch).loaded;

    const urls = fetch.mock.calls.map(([url]) => url);
    expect(urls[0]).toBe("/api/flags");
    expect(urls.slice(1).sort()).toEqual(["/api/notes", "/api/version"]);
  });

  it("shows today's list, unchanged, when the flag is off", async () => {
    await start(routedFetch(okRoutes(NOTES, false))).loaded;

    expect(view()).toBe("classic");
    expect(byTestId("notes-tools").hidden).toBe(true);
    expect(cards()).toEqual([]);
    const item = document.querySelector<HTMLElement>('[data-testid="note"]');
    expect(item?.outerHTML).toBe(
      '<li data-testid="note" data-note-id="1"><span class="note-text" data-testid="note-text-value">first note</span> ' +
        '<time class="note-time" datetime="2024-05-01T10:00:00Z">2024-05-01T10:00:00Z</time></li>',
    );
    expect(noteTexts()).toEqual(["first note", "second note"]);
  });

  it("shows the new view when the flag is on: a count, a search box and cards with their time", async () => {
    await start(routedFetch(okRoutes(PINNED_NOTES, true))).loaded;

    expect(view()).toBe("new");
    expect(byTestId("notes-tools").hidden).toBe(false);
    expect(byTestId("notes-count").textContent).toBe("3 notes");
    expect(cards().map((card) => card.dataset.noteId)).toEqual(["5", "2", "1"]);
    const [pinned, second] = cards();
    expect(pinned?.querySelector("time")?.textContent).toBe("Created 2024-05-03 08:15 UTC");
    expect(pinned?.querySelector("time")?.getAttribute("datetime")).toBe("2024-05-03T08:15:00Z");
    expect(pinned?.querySelector('[data-testid="note-pinned"]')?.textContent).toBe("Pinned");
    expect(second?.querySelector('[data-testid="note-pinned"]')).toBeNull();
    expect(byTestId("app").dataset.state).toBe("ready");
  });

  it("says 1 note, and no notes, in the new view", async () => {
    await start(routedFetch(okRoutes([NOTES[0]], true))).loaded;
    expect(byTestId("notes-count").textContent).toBe("1 note");

    loadPage();
    await start(routedFetch(okRoutes([], true))).loaded;
    expect(byTestId("notes-count").textContent).toBe("0 notes");
    expect(byTestId("notes-empty").hidden).toBe(false);
  });

  it("filters the cards as the person types, ignoring case, and counts what is shown", async () => {
    await start(routedFetch(okRoutes(PINNED_NOTES, true))).loaded;

    search("NOTE");
    expect(visibleTexts()).toEqual(["second note", "first note"]);
    expect(byTestId("notes-count").textContent).toBe("2 of 3 notes");

    search("nothing like it");
    expect(visibleTexts()).toEqual([]);
    expect(byTestId("notes-count").textContent).toBe("0 of 3 notes");

    search("  ");
    expect(visibleTexts()).toEqual(["pinned plan", "second note", "first note"]);
    expect(byTestId("notes-count").textContent).toBe("3 notes");
  });

  it("puts a new note first after the pinned ones, and keeps the search applied", async () => {
    const created = { id: 9, text: "fresh idea", created_at: "2024-05-04T09:00:00Z", pinned: false };
    const fetch = routedFetch([
      ...okRoutes(PINNED_NOTES, true),
      { method: "POST", url: "/api/notes", respond: () => jsonResponse(created, 201) },
    ]);
    await start(fetch).loaded;
    search("note");

    submitForm("fresh idea");
    await vi.waitFor(() => expect(cards()).toHaveLength(4));

    expect(cards().map((card) => card.dataset.noteId)).toEqual(["5", "9", "2", "1"]);
    expect(visibleTexts()).toEqual(["second note", "first note"]);
    expect(byTestId("notes-count").textContent).toBe("2 of 4 notes");
  });

  it("renders note text literally in cards too", async () => {
    const evil = '<img src=x onerror="window.__pwned=1">';
    await start(routedFetch(okRoutes([{ id: 3, text: evil, created_at: "2024-05-01T10:00:00Z" }], true))).loaded;

    expect(cards()[0]?.querySelector(".note-text")?.textContent).toBe(evil);
    expect(byTestId("notes").querySelector("img")).toBeNull();
  });

  it("falls back to today's view, without an error, when the flags cannot be had", async () => {
    const fetch = routedFetch([
      { method: "GET", url: "/api/flags", respond: () => new Response("", { status: 500 }) },
      ...okRoutes().slice(1),
    ]);
    await start(fetch).loaded;

    expect(view()).toBe("classic");
    expect(noteTexts()).toEqual(["first note", "second note"]);
    expect(byTestId("error").hidden).toBe(true);
    expect(byTestId("app").dataset.state).toBe("ready");
  });
});
