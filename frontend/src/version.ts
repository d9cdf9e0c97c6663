// The web bundle's own version, fixed at build time from the VITE_APP_VERSION
// environment variable (vite inlines import.meta.env.VITE_* into the bundle).
export const webVersion: string = import.meta.env.VITE_APP_VERSION || "dev";
