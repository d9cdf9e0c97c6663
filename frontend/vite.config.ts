import type { ProxyOptions } from "vite";
import { defineConfig } from "vitest/config";

// The API listens here in development; in deployment a router in front of
// both sends /api/* to it, so the app only ever uses same-origin relative URLs.
const apiTarget = "http://127.0.0.1:8000";

// Answer 502 Bad Gateway, as the deployed router does, when the API is down
// (vite's own proxy would answer a bare 500). Runs before vite's handler,
// which then only logs.
interface ServerResponseLike {
  headersSent: boolean;
  writableEnded: boolean;
  writeHead(status: number, headers: Record<string, string>): { end(body: string): void };
}

const apiProxy: ProxyOptions = {
  target: apiTarget,
  changeOrigin: true,
  configure(proxy) {
    // Typed by hand: the project has no @types/node for the EventEmitter API.
    const emitter = proxy as unknown as {
      on(event: "error", listener: (err: Error, req: unknown, res: object) => void): void;
    };
    emitter.on("error", (_err, _req, res) => {
      const r = res as Partial<ServerResponseLike>;
      if (typeof r.writeHead === "function" && !r.headersSent && !r.writableEnded) {
        r.writeHead(502, { "Content-Type": "text/plain" }).end("API unreachable");
      }
    });
  },
};

export default defineConfig({
  server: {
    proxy: { "/api": apiProxy },
  },
  preview: {
    proxy: { "/api": apiProxy },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // No source maps: they would embed absolute-ish paths and add nothing to
    // the deployed artifact. Output is content-hashed, so identical sources
    // give byte-identical dist/.
    sourcemap: false,
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.ts"],
    restoreMocks: true,
  },
});
