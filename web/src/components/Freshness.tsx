// What every screen says about its data: the configuration revision it reflects and how long ago
// it was refreshed; stale (red) when the last refresh failed or is older than it should be.
import { Badge, Group, Text, Title } from "@mantine/core";
import { useQuery } from "@tanstack/react-query";
import { useEffect, useState, type ReactNode } from "react";
import { api, unwrap } from "../api/client";
import { age } from "./format";

export function useNow(everyMs = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), everyMs);
    return () => window.clearInterval(timer);
  }, [everyMs]);
  return now;
}

export interface FreshnessProps {
  revision?: number | null;
  updatedAt: number | null | undefined;
  error?: unknown;
  /** How often the data should refresh, in seconds: past three times that it is stale. */
  every: number;
}

export function Freshness({ revision, updatedAt, error, every }: FreshnessProps) {
  const now = useNow();
  const seconds = updatedAt ? (now - updatedAt) / 1000 : null;
  const stale = Boolean(error) || (seconds !== null && seconds > Math.max(3 * every, 10));
  const reason = error instanceof Error ? `: ${error.message}` : "";
  return (
    <Group gap="xs" data-testid="freshness">
      <Badge variant="light" color="gray" data-testid="revision">
        revision {revision ?? "–"}
      </Badge>
      <Text size="xs" c={stale ? "red" : "dimmed"} data-testid="refreshed">
        {!updatedAt ? "loading…" : seconds !== null && seconds < 1 ? "refreshed just now" : `refreshed ${age(seconds)} ago`}
        {stale ? ` — stale${reason}` : ""}
      </Text>
    </Group>
  );
}

/** The configuration revision the control plane sees now, for screens whose data carries none. */
function useConfigRevision(enabled: boolean): number | undefined {
  const status = useQuery({
    queryKey: ["status-revision"],
    queryFn: () => unwrap(api.GET("/api/v1/status")),
    refetchInterval: 5000,
    enabled,
  });
  return status.data?.revision;
}

export function ScreenHeader({ title, children, freshness }: { title: string; children?: ReactNode; freshness: FreshnessProps }) {
  const own = "revision" in freshness; // screens whose data carries no revision show the current one
  const current = useConfigRevision(!own);
  freshness = own ? freshness : { ...freshness, revision: current };
  return (
    <Group justify="space-between" align="flex-start" mb="md" wrap="wrap">
      <div>
        <Title order={2}>{title}</Title>
        <Freshness {...freshness} />
      </div>
      <Group gap="xs">{children}</Group>
    </Group>
  );
}
