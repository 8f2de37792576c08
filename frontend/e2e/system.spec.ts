import { expect, test } from "@playwright/test";
import { join } from "node:path";
import { ADMIN_PASSWORD, ADMIN_USERNAME } from "./env";
import { expectOnLoginPage, submitLogin } from "./helpers";

// `konan up` answers /healthz before its worker and monitor have reported in; readiness follows.
const READY_TIMEOUT = 60_000;

test("admin signs in through the form and sees a ready platform", async ({ page }, testInfo) => {
  await page.goto("/");
  await expectOnLoginPage(page);

  await submitLogin(page, ADMIN_USERNAME, ADMIN_PASSWORD);

  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByRole("heading", { name: "System" })).toBeVisible();
  await expect(page.getByTestId("signed-in-username")).toHaveText(ADMIN_USERNAME);
  await expect(page.getByTestId("account-kind")).toHaveText("admin");
  await expect(page.getByTestId("server-version")).toHaveText(/^\d+\.\d+\.\d+/);

  // Polled every 5 s by the page itself: wait for the worker and the monitor to check in.
  await expect(page.getByTestId("readiness-status")).toHaveText(/^ready$/, { timeout: READY_TIMEOUT });
  for (const check of ["database", "broker", "worker", "monitor"]) {
    await expect(page.getByTestId(`check-${check}-state`)).toHaveText(/^ready$/);
  }

  await page.mouse.move(0, 0); // no hover highlight in the picture
  await page.screenshot({
    path: join(testInfo.project.outputDir, "system-page.png"),
    fullPage: true,
  });
});

test("a wrong password shows the server's error and stays on the login page", async ({ page }) => {
  await page.goto("/login");

  await submitLogin(page, ADMIN_USERNAME, "definitely-not-the-password");

  await expect(page.getByRole("alert")).toContainText(/wrong username or password/i);
  await expectOnLoginPage(page);
  await page.screenshot({ path: join(test.info().project.outputDir, "login-error.png") });
});

test("a deep link survives a reload and leads back there after login", async ({ page }) => {
  // The router sends a visitor without a session to /login and remembers where they were going.
  await page.goto("/?panel=checks");
  await expectOnLoginPage(page);
  expect(new URL(page.url()).searchParams.get("redirect")).toBe("/?panel=checks");

  await submitLogin(page, ADMIN_USERNAME, ADMIN_PASSWORD);

  await expect(page).toHaveURL(/\/\?panel=checks$/);
  await expect(page.getByTestId("signed-in-username")).toHaveText(ADMIN_USERNAME);
});

test("any other path gets the dashboard, which says the page does not exist", async ({ page }) => {
  // Served by the index.html fallback, not a server 404.
  const res = await page.goto("/no/such/page");
  expect(res?.status()).toBe(200);
  await expect(page.getByRole("heading", { name: "Page not found" })).toBeVisible();

  await page.getByRole("link", { name: "Go to the System overview" }).click();
  await expectOnLoginPage(page);
});

test("logging out ends the session", async ({ page }) => {
  await page.goto("/login");
  await submitLogin(page, ADMIN_USERNAME, ADMIN_PASSWORD);
  await expect(page.getByTestId("signed-in-username")).toHaveText(ADMIN_USERNAME);

  await page.getByRole("button", { name: "Log out" }).click();

  await expectOnLoginPage(page);
  const me = await page.request.get("/api/v1/auth/me");
  expect(me.status()).toBe(401);
  await page.goto("/");
  await expectOnLoginPage(page);
});

test("the server keeps JSON answers for unknown API paths", async ({ request }) => {
  for (const path of ["/api/v1/no-such-thing", "/healthz/extra", "/metrics/nope"]) {
    const res = await request.get(path);
    expect(res.status(), path).toBe(404);
    expect(res.headers()["content-type"], path).toContain("application/json");
    expect(await res.json(), path).toMatchObject({ code: "not_found" });
  }
  const page = await request.get("/models/churn");
  expect(page.status()).toBe(200);
  expect(page.headers()["content-type"]).toContain("text/html");
  expect(page.headers()["cache-control"]).toBe("no-cache");
});
