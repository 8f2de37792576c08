// Writes frontend/openapi.json from the server's own OpenAPI document, without starting a server:
// `python -m konan.server.openapi` prints it. `npm run gen:api` then turns it into src/api/schema.d.ts.
// The interpreter comes from KONAN_PYTHON (default: the repository's .venv).
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const frontendDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repoDir = resolve(frontendDir, "..");
const python = process.env.KONAN_PYTHON ?? resolve(repoDir, ".venv/bin/python");

const raw = execFileSync(python, ["-m", "konan.server.openapi"], {
  cwd: repoDir,
  encoding: "utf8",
  stdio: ["ignore", "pipe", "inherit"],
  maxBuffer: 64 * 1024 * 1024,
});
const doc = JSON.parse(raw);
writeFileSync(resolve(frontendDir, "openapi.json"), JSON.stringify(doc, null, 2) + "\n");
console.log(`openapi.json: ${Object.keys(doc.paths ?? {}).length} paths`);
