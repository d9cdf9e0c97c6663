import { describe, expect, it, vi } from "vitest";
import { ApiError, createApiClient, type FetchFn } from "./api";
import { jsonResponse, routedFetch } from "./testing";

describe("api client", () => {
  it("gets the version from the relative /api/version URL", async () => {
    const fetch = routedFetch([
      { method: "GET", url: "/api/version", respond: () => jsonResponse({ version: "1.2.3", commit: "abc123" }) },
    ]);
    const api = createApiClient({ fetch });
    await expect(api.getVersion()).resolves.toEqual({ version: "1.2.3", commit: "abc123" });
    expect(fetch).toHaveBeenCalledTimes(1);
  });

  it("gets the caller's flags from /api/flags", async () => {
    const flags = { flags: { "new-notes-view": true }, key: "ada" };
    const api = createApiClient({
      fetch: routedFetch([{ method: "GET", url: "/api/flags", respond: () => jsonResponse(flags) }]),
    });
    await expect(api.getFlags()).resolves.toEqual(flags);
  });

  it.each([
    { flags: { "new-notes-view": "yes" }, key: "ada" },
    { flags: ["new-notes-view"], key: "ada" },
    { flags: {} },
  ])("rejects a flags answer of the wrong shape: %j", async (answer) => {
    const fetch = vi.fn<FetchFn>().mockImplementation(async () => jsonResponse(answer));
    await expect(createApiClient({ fetch }).getFlags()).rejects.toThrow(/unexpected answer to GET \/api\/flags/);
  });

  it("lists notes from /api/notes", async () => {
    const notes = [
      { id: 1, text: "one", created_at: "2024-01-01T00:00:00Z" },
      { id: 2, text: "two", created_at: "2024-01-02T00:00:00Z" },
    ];
    const api = createApiClient({
      fetch: routedFetch([{ method: "GET", url: "/api/notes", respond: () => jsonResponse(notes) }]),
    });
    await expect(api.listNotes()).resolves.toEqual(notes);
  });

  it("posts a new note as JSON {text} and returns the created note", async () => {
    const created = { id: 7, text: "hello", created_at: "2024-01-03T00:00:00Z" };
    const fetch = routedFetch([{ method: "POST", url: "/api/notes", respond: () => jsonResponse(created, 201) }]);
    const api = createApiClient({ fetch });
    await expect(api.createNote("hello")).resolves.toEqual(created);
    const init = fetch.mock.calls[0]?.[1];
    expect(JSON.parse(String(init?.body))).toEqual({ text: "hello" });
    expect(new Headers(init?.headers).get("Content-Type")).toBe("application/json");
  });

  it("turns a network failure into an ApiError that says the API cannot be reached", async () => {
    const fetch = vi.fn<FetchFn>().mockRejectedValue(new TypeError("Failed to fetch"));
    const err = await createApiClient({ fetch }).getVersion().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).message).toBe("Cannot reach the API (GET /api/version): Failed to fetch");
  });

  it("reports the HTTP status of a failed answer", async () => {
    const fetch = vi.fn<FetchFn>().mockResolvedValue(new Response("boom", { status: 500 }));
    const err = await createApiClient({ fetch }).listNotes().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(500);
    expect((err as ApiError).message).toBe("The API answered GET /api/notes with HTTP 500");
  });

  it.each([502, 503, 504])("treats the router's %i as the API being unreachable", async (status) => {
    const fetch = vi.fn<FetchFn>().mockResolvedValue(new Response("", { status, statusText: "Gateway" }));
    const err = await createApiClient({ fetch }).getVersion().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(status);
    expect((err as ApiError).message).toBe(
      `Cannot reach the API (GET /api/version): the router answered HTTP ${status} Gateway`,
    );
  });

  it("rejects an answer that is not JSON (e.g. an HTML page from a misrouted request)", async () => {
    const fetch = vi.fn<FetchFn>().mockResolvedValue(new Response("<!doctype html><p>hi</p>", { status: 200 }));
    await expect(createApiClient({ fetch }).getVersion()).rejects.toThrow(/not JSON/);
  });

  it("rejects JSON of the wrong shape", async () => {
    const fetch = vi.fn<FetchFn>().mockImplementation(async () => jsonResponse([{ id: "1", text: 5 }]));
    const api = createApiClient({ fetch });
    await expect(api.listNotes()).rejects.toThrow(/unexpected answer to GET \/api\/notes/);
    await expect(api.getVersion()).rejects.toThrow(/unexpected answer to GET \/api\/version/);
    await expect(api.createNote("x")).rejects.toThrow(/unexpected answer to POST \/api\/notes/);
  });

  it("gives up on a request that never answers", async () => {
    vi.useFakeTimers();
    try {
      const fetch = vi.fn<FetchFn>(
        (_input, init) =>
          new Promise<Response>((_resolve, reject) => {
            init?.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
          }),
      );
      const pending = createApiClient({ fetch, timeoutMs: 5000 }).getVersion().catch((e: unknown) => e);
      await vi.advanceTimersByTimeAsync(5000);
      const err = await pending;
      expect(err).toBeInstanceOf(ApiError);
      expect((err as ApiError).message).toBe("Cannot reach the API (GET /api/version): no answer within 5000 ms");
    } finally {
      vi.useRealTimers();
    }
  });
});
