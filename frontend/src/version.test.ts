import { afterEach, describe, expect, it, vi } from "vitest";

afterEach(() => {
  vi.unstubAllEnvs();
  vi.resetModules();
});

describe("web version", () => {
  it("comes from VITE_APP_VERSION", async () => {
    vi.stubEnv("VITE_APP_VERSION", "2.0.1+abc");
    vi.resetModules();
    const { webVersion } = await import("./version");
    expect(webVersion).toBe("2.0.1+abc");
  });

  it('defaults to "dev" when VITE_APP_VERSION is unset or empty', async () => {
    vi.stubEnv("VITE_APP_VERSION", "");
    vi.resetModules();
    const { webVersion } = await import("./version");
    expect(webVersion).toBe("dev");
  });
});
