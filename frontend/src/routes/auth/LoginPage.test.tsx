import { screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { fakeServer, json, renderApp } from "../../test/render";

const notLoggedIn = () => json({ detail: "Not authenticated", code: "unauthenticated" }, 401);

describe("login page", () => {
  it("shows the server's detail when the password is wrong", async () => {
    const server = fakeServer({
      "GET /api/v1/auth/me": notLoggedIn,
      "POST /api/v1/auth/login": () =>
        json({ detail: "Wrong username or password", code: "unauthenticated" }, 401),
    });
    renderApp("/login");

    await userEvent.type(await screen.findByLabelText(/username/i, { selector: "input" }), "admin");
    await userEvent.type(screen.getByLabelText(/password/i, { selector: "input" }), "nope");
    await userEvent.click(screen.getByRole("button", { name: "Sign in" }));

    expect(await screen.findByRole("alert")).toHaveTextContent("Wrong username or password");
    const login = server.requests.find((r) => r.url.endsWith("/api/v1/auth/login"));
    expect(await login?.json()).toEqual({ username: "admin", password: "nope" });
    // Still on the login page: a failed login must not enter the app.
    expect(screen.getByRole("button", { name: "Sign in" })).toBeInTheDocument();
  });

  it("asks for both fields before calling the server", async () => {
    const server = fakeServer({ "GET /api/v1/auth/me": notLoggedIn });
    renderApp("/login");

    await userEvent.click(await screen.findByRole("button", { name: "Sign in" }));

    expect(await screen.findByText("Enter your username")).toBeInTheDocument();
    expect(screen.getByText("Enter your password")).toBeInTheDocument();
    expect(server.requests.some((r) => r.url.endsWith("/api/v1/auth/login"))).toBe(false);
  });

  it("sends a visitor without a session from / to /login", async () => {
    fakeServer({ "GET /api/v1/auth/me": notLoggedIn });
    const { history } = renderApp("/");

    expect(await screen.findByRole("button", { name: "Sign in" })).toBeInTheDocument();
    await waitFor(() => expect(history.location.pathname).toBe("/login"));
  });
});
