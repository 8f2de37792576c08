import { defineConfig, devices } from "@playwright/test";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ADMIN_PASSWORD } from "./e2e/env";

// The e2e suite drives the real platform: `konan up` (API + dashboard, a worker, the monitoring
// consumer) on a fresh data dir, in the Debian Chromium (never a downloaded browser).
//
//   KONAN_BIN                 the konan executable (default: the repository's .venv)
//   CHROMIUM_PATH             the browser (default: /usr/bin/chromium)
//   KONAN_E2E_PORT            port for `konan up` (default: 8765)
//   KONAN_E2E_REUSE=1         use a server already listening on that port instead of starting one
//
// The dashboard must be built first (`npm run build`): the server serves frontend/dist.

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..");
const konanBin = process.env.KONAN_BIN ?? join(repo, ".venv/bin/konan");
const port = Number(process.env.KONAN_E2E_PORT ?? 8765);
const baseURL = `http://127.0.0.1:${port}`;

if (!existsSync(join(here, "dist/index.html"))) {
  throw new Error("frontend/dist has no build: run `npm run build` before `npm run e2e`");
}

// The config is loaded again in every worker process; the env var keeps it to one data dir per run.
// The dir is left in place after the run so its database and logs can be read when a test fails.
process.env.KONAN_E2E_DATA_DIR ??= mkdtempSync(join(tmpdir(), "konan-e2e-"));
const dataDir = process.env.KONAN_E2E_DATA_DIR;

export default defineConfig({
  testDir: "./e2e",
  outputDir: "./test-results",
  fullyParallel: false,
  // One platform instance, two cores: run the journeys one after another.
  workers: 1,
  retries: 0,
  forbidOnly: !!process.env.CI,
  timeout: 90_000,
  expect: { timeout: 10_000 },
  reporter: [["list"]],
  use: {
    baseURL,
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
  },
  projects: [
    {
      name: "chromium",
      use: {
        ...devices["Desktop Chrome"],
        viewport: { width: 1280, height: 860 },
        launchOptions: {
          executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
          args: [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
          ],
        },
      },
    },
  ],
  webServer: {
    command: `"${konanBin}" up --data-dir "${dataDir}" --port ${port} --host 127.0.0.1`,
    cwd: repo,
    url: `${baseURL}/healthz`,
    timeout: 60_000,
    reuseExistingServer: process.env.KONAN_E2E_REUSE === "1",
    env: {
      KONAN_ADMIN_PASSWORD: ADMIN_PASSWORD,
    },
    stdout: "pipe",
    stderr: "pipe",
    // `konan up` stops its worker and monitor on SIGTERM; give it time before SIGKILL.
    gracefulShutdown: { signal: "SIGTERM", timeout: 25_000 },
  },
});
