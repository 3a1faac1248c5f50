// Traffic: requests, errors, latency and time-to-first-token percentiles and tokens/s per model over
// a chosen window, live through the metrics stream (Server-Sent Events), drawn as charts; and usage
// by API key, tenant, model or route from the usage buckets.
import { BarChart, LineChart } from "@mantine/charts";
import { Badge, Card, Group, SegmentedControl, SimpleGrid, Table, Text, Title } from "@mantine/core";
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useCallback, useState } from "react";
import { api, unwrap, type Schemas } from "../api/client";
import { useEventStream } from "../api/sse";
import { Failure } from "../components/Failure";
import { ScreenHeader } from "../components/Freshness";
import { ms, percent } from "../components/format";

const WINDOWS = ["5m", "15m", "1h", "6h", "1d"];
const EVERY_S = 2;
const POINTS = 90;

type Summary = Schemas["MetricsSummary"];
interface Point {
  at: string;
  requests: number;
  p95: number | null;
  ttft95: number | null;
  errors: number;
}

export function TrafficScreen() {
  const [window_, setWindow] = useState("15m");
  const [summary, setSummary] = useState<Summary | null>(null);
  const [series, setSeries] = useState<Point[]>([]);
  const onEvent = useCallback((event: { event?: string; data: string }) => {
    if (event.event !== "summary") return;
    const next = JSON.parse(event.data) as Summary;
    setSummary(next);
    setSeries((old) =>
      [...old, { at: new Date().toLocaleTimeString(), requests: next.fleet.requests, p95: next.fleet.latency_ms.p95 ?? null,
                 ttft95: next.fleet.ttft_ms.p95 ?? null, errors: next.fleet.errors }].slice(-POINTS),
    );
  }, []);
  const stream = useEventStream(`/api/v1/metrics/stream?window=${window_}&every_s=${EVERY_S}`, onEvent);
  const models = Object.entries(summary?.models ?? {});
  const bars = models.map(([name, f]) => ({ model: name, p50: f.latency_ms.p50 ?? 0, p95: f.latency_ms.p95 ?? 0, p99: f.latency_ms.p99 ?? 0 }));
  const ttft = models.map(([name, f]) => ({ model: name, p50: f.ttft_ms.p50 ?? 0, p95: f.ttft_ms.p95 ?? 0, p99: f.ttft_ms.p99 ?? 0 }));
  const speed = models.map(([name, f]) => ({ model: name, "tokens/s": f.tokens_per_s ?? 0 }));
  return (
    <>
      <ScreenHeader title="Traffic" freshness={{ updatedAt: stream.lastEventAt, error: stream.error ? new Error(stream.error) : null, every: EVERY_S }}>
        <Badge color={stream.live ? "green" : "red"} variant="dot" data-testid="stream-state">{stream.live ? "live" : "reconnecting"}</Badge>
        <SegmentedControl value={window_} data={WINDOWS} onChange={(w) => { setWindow(w); setSeries([]); }} aria-label="window" />
      </ScreenHeader>
      {summary && (
        <SimpleGrid cols={{ base: 2, md: 5 }} mb="md" data-testid="fleet-figures">
          <Figure label={`requests (last ${window_})`} value={String(summary.fleet.requests)} />
          <Figure label="error rate" value={percent(summary.fleet.error_rate)} />
          <Figure label="latency p95" value={ms(summary.fleet.latency_ms.p95)} />
          <Figure label="time to first token p95" value={ms(summary.fleet.ttft_ms.p95)} />
          <Figure label="tokens/s" value={summary.fleet.tokens_per_s == null ? "–" : summary.fleet.tokens_per_s.toFixed(1)} />
        </SimpleGrid>
      )}
      {summary && summary.fleet.requests === 0 && <Text c="dimmed" mb="md">No request in the last {window_}: send one (Playground) and watch it arrive.</Text>}
      <SimpleGrid cols={{ base: 1, lg: 2 }} mb="md">
        <Card withBorder data-testid="chart-latency">
          <Title order={5} mb="xs">Latency by model (ms)</Title>
          <BarChart h={240} withLegend data={bars} dataKey="model" series={[{ name: "p50", color: "teal.6" }, { name: "p95", color: "yellow.6" }, { name: "p99", color: "red.6" }]} />
        </Card>
        <Card withBorder data-testid="chart-ttft">
          <Title order={5} mb="xs">Time to first token by model (ms)</Title>
          <BarChart h={240} withLegend data={ttft} dataKey="model" series={[{ name: "p50", color: "teal.6" }, { name: "p95", color: "yellow.6" }, { name: "p99", color: "red.6" }]} />
        </Card>
        <Card withBorder data-testid="chart-live">
          <Title order={5} mb="xs">Fleet, as it comes in (requests in window, p95 ms)</Title>
          <LineChart h={240} withLegend data={series} dataKey="at" series={[{ name: "requests", color: "blue.6" }, { name: "p95", color: "red.6" }, { name: "ttft95", color: "orange.6" }]} connectNulls />
        </Card>
        <Card withBorder data-testid="chart-speed">
          <Title order={5} mb="xs">Generation speed by model (tokens/s)</Title>
          <BarChart h={240} withLegend data={speed} dataKey="model" series={[{ name: "tokens/s", color: "grape.6" }]} />
        </Card>
      </SimpleGrid>
      <Table.ScrollContainer minWidth={900}>
        <Table striped data-testid="traffic-models">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Model</Table.Th>
              <Table.Th>Requests</Table.Th>
              <Table.Th>Errors</Table.Th>
              <Table.Th>Latency p50 / p95 / p99</Table.Th>
              <Table.Th>TTFT p50 / p95 / p99</Table.Th>
              <Table.Th>Tokens/s</Table.Th>
              <Table.Th>Signals</Table.Th>
              <Table.Th>Feedback</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {models.map(([name, f]) => (
              <Table.Tr key={name} data-model={name}>
                <Table.Td>{name}</Table.Td>
                <Table.Td>{f.requests}</Table.Td>
                <Table.Td>{f.errors} ({percent(f.error_rate)})</Table.Td>
                <Table.Td>{ms(f.latency_ms.p50)} / {ms(f.latency_ms.p95)} / {ms(f.latency_ms.p99)}</Table.Td>
                <Table.Td>{ms(f.ttft_ms.p50)} / {ms(f.ttft_ms.p95)} / {ms(f.ttft_ms.p99)}</Table.Td>
                <Table.Td>{f.tokens_per_s == null ? "–" : f.tokens_per_s.toFixed(1)}</Table.Td>
                <Table.Td><Text size="xs">{Object.entries(f.signals).map(([k, v]) => `${k} ${v}`).join(", ") || "–"}</Text></Table.Td>
                <Table.Td>{f.feedback.count ? `${f.feedback.mean_score?.toFixed(2)} (${f.feedback.count})` : "–"}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Table.ScrollContainer>
      <UsageTable window_={window_} />
    </>
  );
}

function Figure({ label, value }: { label: string; value: string }) {
  return (
    <Card withBorder padding="sm">
      <Text size="xs" c="dimmed">{label}</Text>
      <Text fw={700} size="lg">{value}</Text>
    </Card>
  );
}

function UsageTable({ window_ }: { window_: string }) {
  const [by, setBy] = useState<"key" | "tenant" | "model" | "route">("key");
  const usage = useQuery({
    queryKey: ["usage", by, window_],
    queryFn: () => unwrap(api.GET("/api/v1/usage", { params: { query: { group_by: by, window: window_ } } })),
    refetchInterval: 5000,
    placeholderData: keepPreviousData,
  });
  return (
    <Card withBorder mt="md">
      <Group justify="space-between" mb="xs">
        <Title order={4}>Usage (last {window_})</Title>
        <SegmentedControl value={by} onChange={(v) => setBy(v as typeof by)} data={["key", "tenant", "model", "route"]} aria-label="usage by" />
      </Group>
      <Failure error={usage.error} />
      <Table data-testid="usage">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>{by}</Table.Th>
            <Table.Th>Requests</Table.Th>
            <Table.Th>Prompt tokens</Table.Th>
            <Table.Th>Completion tokens</Table.Th>
            <Table.Th>Total</Table.Th>
            <Table.Th>Estimated</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {(usage.data?.rows ?? []).map((r) => (
            <Table.Tr key={r.group} data-group={r.group}>
              <Table.Td>{r.group || "(none)"}</Table.Td>
              <Table.Td>{r.requests}</Table.Td>
              <Table.Td>{r.prompt_tokens.toLocaleString()}</Table.Td>
              <Table.Td>{r.completion_tokens.toLocaleString()}</Table.Td>
              <Table.Td>{r.total_tokens.toLocaleString()}</Table.Td>
              <Table.Td>{r.estimated_requests || ""}</Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      {usage.data && usage.data.rows.length === 0 && <Text c="dimmed" size="sm">No usage in this window.</Text>}
    </Card>
  );
}
