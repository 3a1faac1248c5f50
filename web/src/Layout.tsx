// The frame of every screen: the navigation (every screen one click away, no menus), the
// control plane's readiness, and sign-out.
import { AppShell, Badge, Burger, Button, Group, NavLink, ScrollArea, Text, Tooltip } from "@mantine/core";
import { useDisclosure } from "@mantine/hooks";
import { useQuery } from "@tanstack/react-query";
import { Link, Outlet, useRouterState } from "@tanstack/react-router";
import { ApiError, session, type Schemas } from "./api/client";

export const SCREENS = [
  { to: "/", label: "Fleet" },
  { to: "/models", label: "Models" },
  { to: "/config", label: "Configuration" },
  { to: "/history", label: "History" },
  { to: "/experiments", label: "Experiments" },
  { to: "/fine-tuning", label: "Fine-tuning" },
  { to: "/traffic", label: "Traffic" },
  { to: "/keys", label: "Keys and tokens" },
  { to: "/playground", label: "Playground" },
  { to: "/rag", label: "RAG" },
] as const;

async function readiness(): Promise<Schemas["Readiness"]> {
  const response = await fetch("/readyz");
  if (response.status !== 200 && response.status !== 503) throw new ApiError(response.status, {});
  return (await response.json()) as Schemas["Readiness"];
}

export function Layout() {
  const [opened, { toggle }] = useDisclosure();
  const path = useRouterState({ select: (s) => s.location.pathname });
  const ready = useQuery({ queryKey: ["readyz"], queryFn: readiness, refetchInterval: 5000 });
  const checks = ready.data ? Object.entries(ready.data.checks).map(([k, v]) => `${k}: ${v}`).join("\n") : "";
  return (
    <AppShell header={{ height: 52 }} navbar={{ width: 210, breakpoint: "sm", collapsed: { mobile: !opened } }} padding="md">
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between">
          <Group gap="sm">
            <Burger opened={opened} onClick={toggle} hiddenFrom="sm" size="sm" aria-label="navigation" />
            <Text fw={700}>LLM Tuning Service</Text>
            <Tooltip label={<pre style={{ margin: 0 }}>{checks || "…"}</pre>} multiline>
              <Badge color={ready.isError ? "red" : ready.data?.ready ? "green" : "yellow"} data-testid="readiness">
                {ready.isError ? "unreachable" : ready.data?.ready ? "ready" : "not ready"}
              </Badge>
            </Tooltip>
          </Group>
          <Button variant="subtle" size="xs" onClick={() => session.logout()}>
            Sign out
          </Button>
        </Group>
      </AppShell.Header>
      <AppShell.Navbar p="xs">
        <ScrollArea>
          {SCREENS.map((screen) => (
            <NavLink
              key={screen.to}
              component={Link}
              to={screen.to}
              label={screen.label}
              active={screen.to === "/" ? path === "/" || path === "" : path.startsWith(screen.to)}
            />
          ))}
        </ScrollArea>
      </AppShell.Navbar>
      <AppShell.Main>
        <Outlet />
      </AppShell.Main>
    </AppShell>
  );
}
