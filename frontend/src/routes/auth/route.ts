import { createRoute, lazyRouteComponent } from "@tanstack/react-router";
import { rootRoute } from "../root";

/** Only same-site paths are followed after login, so a crafted link cannot send a user elsewhere. */
export function safeRedirect(value: unknown): string | undefined {
  if (typeof value !== "string") return undefined;
  if (!value.startsWith("/") || value.startsWith("//") || value.startsWith("/\\")) return undefined;
  if (value === "/login" || value.startsWith("/login?")) return undefined;
  return value;
}

export interface LoginSearch {
  redirect?: string;
}

export const loginRoute = createRoute({
  getParentRoute: () => rootRoute,
  path: "/login",
  validateSearch: (search: Record<string, unknown>): LoginSearch => {
    const redirect = safeRedirect(search.redirect);
    return redirect ? { redirect } : {};
  },
  component: lazyRouteComponent(() => import("./LoginPage"), "LoginPage"),
});
