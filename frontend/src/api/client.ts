import createFetchClient, { type Middleware } from "openapi-fetch";
import createQueryClient from "openapi-react-query";
import { CSRF_COOKIE, CSRF_HEADER, needsCsrfHeader, readCookie } from "./csrf";
import type { paths } from "./schema";

/** Paths that answer 401 as part of their normal job; they must not bounce the user to /login. */
const AUTH_PATHS = new Set(["/api/v1/auth/login", "/api/v1/auth/me", "/api/v1/auth/logout"]);

type UnauthorizedHandler = () => void;
let onUnauthorized: UnauthorizedHandler = () => {};

/** The router registers how to send the user to /login when a session expires mid-use. */
export function setUnauthorizedHandler(handler: UnauthorizedHandler): void {
  onUnauthorized = handler;
}

const sessionMiddleware: Middleware = {
  onRequest({ request }) {
    if (needsCsrfHeader(request.method)) {
      const token = readCookie(CSRF_COOKIE);
      if (token) request.headers.set(CSRF_HEADER, token);
    }
    return request;
  },
  onResponse({ response, schemaPath }) {
    if (response.status === 401 && !AUTH_PATHS.has(schemaPath)) {
      onUnauthorized();
    }
    return response;
  },
};

// Same origin as the page. An absolute base URL (and fetch looked up per call) also lets
// tests under jsdom stub globalThis.fetch.
export const client = createFetchClient<paths>({
  baseUrl: globalThis.location?.origin ?? "",
  credentials: "include",
  fetch: (request) => globalThis.fetch(request),
});
client.use(sessionMiddleware);

export const $api = createQueryClient(client);
