// The screens and their URLs under /ui (TanStack Router, declared in code).
import { createRootRoute, createRoute, createRouter } from "@tanstack/react-router";
import { Layout } from "./Layout";
import { FleetScreen } from "./screens/Fleet";
import { ModelsScreen } from "./screens/Models";

const root = createRootRoute({ component: Layout });
const fleet = createRoute({ getParentRoute: () => root, path: "/", component: FleetScreen });
const models = createRoute({ getParentRoute: () => root, path: "/models", component: ModelsScreen });

export const routeTree = root.addChildren([fleet, models]);
export const router = createRouter({ routeTree, basepath: "/ui", defaultPreload: "intent" });

declare module "@tanstack/react-router" {
  interface Register {
    router: typeof router;
  }
}
