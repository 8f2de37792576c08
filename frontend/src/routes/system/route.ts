import { createRoute, lazyRouteComponent } from "@tanstack/react-router";
import { appRoute } from "../root";

export const systemRoute = createRoute({
  getParentRoute: () => appRoute,
  path: "/",
  component: lazyRouteComponent(() => import("./SystemPage"), "SystemPage"),
});
