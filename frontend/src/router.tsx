import type { QueryClient } from "@tanstack/react-query";
import { createRouter, type RouterHistory } from "@tanstack/react-router";
import { setUnauthorizedHandler } from "./api/client";
import { forgetSession } from "./api/session";
import { RouteNotFound } from "./components/layout/RouteError";
import { loginRoute, safeRedirect } from "./routes/auth/route";
import { appRoute, rootRoute } from "./routes/root";
import { systemRoute } from "./routes/system/route";

const routeTree = rootRoute.addChildren([loginRoute, appRoute.addChildren([systemRoute])]);

export function createAppRouter(queryClient: QueryClient, history?: RouterHistory) {
  const router = createRouter({
    routeTree,
    context: { queryClient },
    history,
    defaultPreload: "intent",
    defaultNotFoundComponent: RouteNotFound,
    scrollRestoration: true,
  });

  // A session that expires while the user works: drop it and ask for the password again.
  setUnauthorizedHandler(() => {
    forgetSession(queryClient);
    const here = router.state.location;
    if (here.pathname === "/login") return;
    void router.navigate({ to: "/login", search: { redirect: safeRedirect(here.href) } });
  });

  return router;
}

export type AppRouter = ReturnType<typeof createAppRouter>;

declare module "@tanstack/react-router" {
  interface Register {
    router: AppRouter;
  }
}
