// The screens and their URLs under /ui (TanStack Router, declared in code).
import { createRootRoute, createRoute, createRouter, lazyRouteComponent, redirect } from "@tanstack/react-router";
import { Layout } from "./Layout";
import { ConfigListScreen } from "./screens/Config";
import { FleetScreen } from "./screens/Fleet";
import { KeysScreen } from "./screens/Keys";
import { PlaygroundScreen } from "./screens/Playground";
import { RagScreen } from "./screens/Rag";
import { ModelsScreen } from "./screens/Models";

const root = createRootRoute({ component: Layout });
const fleet = createRoute({ getParentRoute: () => root, path: "/", component: FleetScreen });
const models = createRoute({ getParentRoute: () => root, path: "/models", component: ModelsScreen });
const config = createRoute({
  getParentRoute: () => root,
  path: "/config",
  beforeLoad: () => {
    throw redirect({ to: "/config/$kind", params: { kind: "models" } });
  },
});
const configKind = createRoute({ getParentRoute: () => root, path: "/config/$kind", component: ConfigListScreen });
// The editor brings CodeMirror: loaded when first opened, not with every screen.
const configObject = createRoute({
  getParentRoute: () => root,
  path: "/config/$kind/$name",
  component: lazyRouteComponent(() => import("./screens/ConfigEdit"), "ConfigEditScreen"),
});

const history = createRoute({
  getParentRoute: () => root,
  path: "/history",
  component: lazyRouteComponent(() => import("./screens/History"), "HistoryScreen"),
});

const traffic = createRoute({
  getParentRoute: () => root,
  path: "/traffic",
  component: lazyRouteComponent(() => import("./screens/Traffic"), "TrafficScreen"),
});
const keys = createRoute({ getParentRoute: () => root, path: "/keys", component: KeysScreen });
const playground = createRoute({ getParentRoute: () => root, path: "/playground", component: PlaygroundScreen });

const experiments = createRoute({
  getParentRoute: () => root,
  path: "/experiments",
  component: lazyRouteComponent(() => import("./screens/Experiments"), "ExperimentsScreen"),
});
const finetune = createRoute({
  getParentRoute: () => root,
  path: "/fine-tuning",
  component: lazyRouteComponent(() => import("./screens/FineTune"), "FineTuneScreen"),
});
const rag = createRoute({ getParentRoute: () => root, path: "/rag", component: RagScreen });

export const routeTree = root.addChildren([
  fleet, models, config, configKind, configObject, history, experiments, finetune, traffic, keys, playground, rag,
]);
export const router = createRouter({ routeTree, basepath: "/ui", defaultPreload: "intent" });

declare module "@tanstack/react-router" {
  interface Register {
    router: typeof router;
  }
}
