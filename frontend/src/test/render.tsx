import { QueryClient } from "@tanstack/react-query";
import { createMemoryHistory } from "@tanstack/react-router";
import { render } from "@testing-library/react";
import { vi } from "vitest";
import { App } from "../App";

type Handler = (request: Request) => Response | Promise<Response>;

export interface FakeServer {
  /** Every request the app made, in order. */
  requests: Request[];
}

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

/**
 * Replaces fetch with a table of "METHOD /path" → handler. Anything not in the table answers 404
 * with the server's error shape, so a test sees an unexpected call instead of hanging.
 */
export function fakeServer(routes: Record<string, Handler>): FakeServer {
  const requests: Request[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (input: Request) => {
      requests.push(input.clone());
      const key = `${input.method} ${new URL(input.url).pathname}`;
      const handler = routes[key];
      if (!handler) return json({ detail: `no fake for ${key}`, code: "not_found" }, 404);
      return handler(input);
    }),
  );
  return { requests };
}

export function renderApp(path: string) {
  const queryClient = new QueryClient({
    defaultOptions: { queries: { retry: false }, mutations: { retry: false } },
  });
  const history = createMemoryHistory({ initialEntries: [path] });
  const result = render(<App history={history} queryClient={queryClient} />);
  return { ...result, history, queryClient };
}
