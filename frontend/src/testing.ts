// Test helpers (imported by *.test.ts only; never part of the bundle).
import pageHtml from "../index.html?raw";
import { vi } from "vitest";
import type { FetchFn } from "./api";

/** Puts the real index.html markup into the jsdom document (its script does not run). */
export function loadPage(): void {
  const parsed = new DOMParser().parseFromString(pageHtml, "text/html");
  document.body.replaceChildren(...Array.from(parsed.body.childNodes, (n) => document.importNode(n, true)));
}

export function jsonResponse(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

export interface Route {
  method: string;
  url: string;
  respond: (init: RequestInit | undefined) => Response | Promise<Response>;
}

/** A fetch mock that answers only the listed routes and fails the test on anything else. */
export function routedFetch(routes: Route[]) {
  return vi.fn<FetchFn>(async (input, init) => {
    const method = init?.method ?? "GET";
    const route = routes.find((r) => r.method === method && r.url === input);
    if (!route) throw new Error(`unexpected request ${method} ${input}`);
    return route.respond(init);
  });
}
