// Thin client for the reference API. All URLs are relative: in deployment a
// router on the same origin sends /api/* to the API, and the vite dev server
// proxies /api the same way.

export interface ApiVersion {
  version: string;
  commit: string;
}

export interface Note {
  id: number;
  text: string;
  created_at: string;
  pinned?: boolean;
}

/** The caller's feature flags, as GET /api/flags answers them. */
export interface Flags {
  flags: Record<string, boolean>;
  /** Who the flags were evaluated for (a user or session id): the same key, the same answer. */
  key: string;
}

/** The flag that swaps today's notes list for the new notes view. */
export const NEW_NOTES_VIEW = "new-notes-view";

export type FetchFn = (input: string, init?: RequestInit) => Promise<Response>;

/** Any failure talking to the API, with a message fit to show a person. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export interface ApiClient {
  getFlags(): Promise<Flags>;
  getVersion(): Promise<ApiVersion>;
  listNotes(): Promise<Note[]>;
  createNote(text: string): Promise<Note>;
}

export interface ApiClientOptions {
  fetch?: FetchFn;
  /** Milliseconds before a request is abandoned; 0 disables the limit. */
  timeoutMs?: number;
}

const GATEWAY_STATUSES = new Set([502, 503, 504]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function isApiVersion(value: unknown): value is ApiVersion {
  return isRecord(value) && typeof value.version === "string" && typeof value.commit === "string";
}

export function isNote(value: unknown): value is Note {
  return (
    isRecord(value) &&
    typeof value.id === "number" &&
    typeof value.text === "string" &&
    typeof value.created_at === "string" &&
    (value.pinned === undefined || typeof value.pinned === "boolean")
  );
}

export function isFlags(value: unknown): value is Flags {
  return (
    isRecord(value) &&
    typeof value.key === "string" &&
    isRecord(value.flags) &&
    Object.values(value.flags).every((flag) => typeof flag === "boolean")
  );
}

export function createApiClient(options: ApiClientOptions = {}): ApiClient {
  const doFetch: FetchFn = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const timeoutMs = options.timeoutMs ?? 10_000;

  async function request(method: string, url: string, body?: unknown): Promise<unknown> {
    const what = `${method} ${url}`;
    const init: RequestInit = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers = { Accept: "application/json", "Content-Type": "application/json" };
      init.body = JSON.stringify(body);
    }
    const controller = timeoutMs > 0 ? new AbortController() : undefined;
    const timer = controller ? setTimeout(() => controller.abort(), timeoutMs) : undefined;
    if (controller) init.signal = controller.signal;

    let response: Response;
    try {
      response = await doFetch(url, init);
    } catch (err) {
      const reason = controller?.signal.aborted
        ? `no answer within ${timeoutMs} ms`
        : err instanceof Error
          ? err.message
          : String(err);
      throw new ApiError(`Cannot reach the API (${what}): ${reason}`);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }

    if (!response.ok) {
      const status = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
      // 502/503/504 come from the router (or dev proxy) in front when the API
      // behind it is down or not answering.
      const message = GATEWAY_STATUSES.has(response.status)
        ? `Cannot reach the API (${what}): the router answered ${status}`
        : `The API answered ${what} with ${status}`;
      throw new ApiError(message, response.status);
    }
    try {
      return (await response.json()) as unknown;
    } catch {
      throw new ApiError(`The API answered ${what} with something that is not JSON`, response.status);
    }
  }

  return {
    async getFlags() {
      const data = await request("GET", "/api/flags");
      if (!isFlags(data)) throw new ApiError("The API sent an unexpected answer to GET /api/flags");
      return data;
    },
    async getVersion() {
      const data = await request("GET", "/api/version");
      if (!isApiVersion(data)) throw new ApiError("The API sent an unexpected answer to GET /api/version");
      return data;
    },
    async listNotes() {
      const data = await request("GET", "/api/notes");
      if (!Array.isArray(data) || !data.every(isNote)) {
        throw new ApiError("The API sent an unexpected answer to GET /api/notes");
      }
      return data;
    },
    async createNote(text: string) {
      const data = await request("POST", "/api/notes", { text });
      if (!isNote(data)) throw new ApiError("The API sent an unexpected answer to POST /api/notes");
      return data;
    },
  };
}
