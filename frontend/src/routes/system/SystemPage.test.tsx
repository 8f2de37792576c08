import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { fakeServer, json, renderApp } from "../../test/render";

const me = {
  id: 1,
  username: "mara",
  is_admin: false,
  projects: [{ name: "default", role: "maintainer" }],
};

function readiness(workerOk: boolean) {
  return {
    status: workerOk ? "ready" : "not_ready",
    checks: {
      database: { ok: true, detail: "sqlite: 12 ms" },
      broker: { ok: true, detail: "sqla+sqlite broker reachable" },
      worker: { ok: workerOk, detail: workerOk ? "1 worker" : "no worker answered within 1s" },
      monitor: { ok: true, detail: "consumer lag 0" },
    },
  };
}

describe("System page", () => {
  it("marks a failing check as not ready", async () => {
    fakeServer({
      "GET /api/v1/auth/me": () => json(me),
      "GET /healthz": () => json({ status: "ok", version: "0.1.0" }),
      "GET /readyz": () => json(readiness(false), 503),
    });
    renderApp("/");

    const worker = await screen.findByTestId("check-worker");
    expect(within(worker).getByTestId("check-worker-state")).toHaveTextContent("not ready");
    expect(within(worker).getByText("no worker answered within 1s")).toBeInTheDocument();
    expect(within(screen.getByTestId("check-database")).getByTestId("check-database-state")).toHaveTextContent(
      /^ready$/,
    );
    expect(screen.getByTestId("readiness-status")).toHaveTextContent("not ready");
  });

  it("shows the user, their roles and the version", async () => {
    fakeServer({
      "GET /api/v1/auth/me": () => json(me),
      "GET /healthz": () => json({ status: "ok", version: "0.1.0" }),
      "GET /readyz": () => json(readiness(true)),
    });
    renderApp("/");

    expect(await screen.findByTestId("signed-in-username")).toHaveTextContent("mara");
    expect(within(screen.getByTestId("project-roles")).getByText("maintainer")).toBeInTheDocument();
    expect(await screen.findByTestId("server-version")).toHaveTextContent("0.1.0");
    expect(await screen.findByTestId("readiness-status")).toHaveTextContent(/^ready$/);
  });

  it("logs out with the CSRF header and returns to /login", async () => {
    document.cookie = "konan_csrf=token-123; path=/";
    const server = fakeServer({
      "GET /api/v1/auth/me": () => json(me),
      "GET /healthz": () => json({ status: "ok", version: "0.1.0" }),
      "GET /readyz": () => json(readiness(true)),
      "POST /api/v1/auth/logout": () => new Response(null, { status: 204 }),
    });
    const { history } = renderApp("/");

    await userEvent.click(await screen.findByRole("button", { name: "Log out" }));

    expect(await screen.findByRole("button", { name: "Sign in" })).toBeInTheDocument();
    expect(history.location.pathname).toBe("/login");
    const logout = server.requests.find((r) => r.url.endsWith("/api/v1/auth/logout"));
    expect(logout?.headers.get("X-CSRF-Token")).toBe("token-123");
    expect(logout?.credentials).toBe("include");
  });
});
