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

function okRoutes(notes: unknown = NOTES): Route[] {
  return [
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
