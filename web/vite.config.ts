// The UI is served by the control plane at /ui; `npm run dev` proxies the API to a local control plane.
import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

export default defineConfig({
  base: "/ui/",
  plugins: [react()],
  build: { outDir: "dist", chunkSizeWarningLimit: 3000 },
  server: { proxy: { "/api": process.env.LLMTUNE_API ?? "http://127.0.0.1:8700" } },
  test: { environment: "jsdom", setupFiles: ["./src/test/setup.ts"], css: false },
});
