// Experiments: each experiment's variants and traffic split; the chosen one's results per variant
// (requests, success rate, latency and feedback with 95% intervals, probability of being best,
// guardrails) and the verdict against the baseline, live through the metrics stream; stop and
// promote; and a form that starts a new experiment on a route (experiment and route, one revision).
import { Alert, Badge, Button, Card, Group, Modal, NumberInput, Progress, Select, Stack, Table, Text, TextInput, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback, useState } from "react";
import { api, describe, raw, unwrap, type Schemas } from "../api/client";
import { useEventStream } from "../api/sse";
import { Failure } from "../components/Failure";
import { ScreenHeader } from "../components/Freshness";
import { ms, percent } from "../components/format";

const EVERY_S = 2;
const COLORS = ["blue", "teal", "grape", "orange", "pink", "cyan"];
type Experiment = Schemas["Experiment"];
type Results = Schemas["ExperimentResults"];

function interval(pair: (number | null)[] | undefined, format: (v: number) => string): string {
  const [low, high] = pair ?? [];
  return low == null || high == null ? "" : ` [${format(low)}, ${format(high)}]`;
}

export function ExperimentsScreen() {
  const listing = useQuery({
    queryKey: ["config", "experiments", "all"],
    queryFn: () => unwrap(api.GET("/api/v1/config/{kind}", { params: { path: { kind: "experiments" }, query: { limit: 200 } } })),
    refetchInterval: 5000,
  });
  const experiments = (listing.data?.items ?? []) as Experiment[];
  const [chosen, setChosen] = useState<string | null>(null);
  const [creating, setCreating] = useState(false);
  const current = experiments.find((e) => e.metadata.name === chosen) ?? experiments.find((e) => e.spec.state === "running") ?? experiments[0];
  return (
    <>
      <ScreenHeader title="Experiments" freshness={{ revision: listing.data?.revision, updatedAt: listing.dataUpdatedAt, error: listing.error, every: 5 }}>
        <Button onClick={() => setCreating(true)}>New experiment</Button>
      </ScreenHeader>
      <Failure error={listing.error} />
      {listing.data && experiments.length === 0 && <Text c="dimmed">No experiment yet: start one to split a route's traffic between models.</Text>}
      <Table highlightOnHover data-testid="experiments" mb="md">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>Experiment</Table.Th>
            <Table.Th>Route</Table.Th>
            <Table.Th>State</Table.Th>
            <Table.Th>Metric</Table.Th>
            <Table.Th>Traffic split</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {experiments.map((e) => {
            const total = e.spec.variants.reduce((sum, v) => sum + (v.weight ?? 1), 0) || 1;
            return (
              <Table.Tr key={e.metadata.name} onClick={() => setChosen(e.metadata.name)} style={{ cursor: "pointer" }}
                bg={current?.metadata.name === e.metadata.name ? "var(--mantine-color-blue-light)" : undefined}>
                <Table.Td><Button variant="subtle" size="compact-sm" onClick={() => setChosen(e.metadata.name)}>{e.metadata.name}</Button></Table.Td>
                <Table.Td>{e.spec.route}</Table.Td>
                <Table.Td><Badge color={e.spec.state === "running" ? "green" : e.spec.state === "stopped" ? "red" : "gray"}>{e.spec.state ?? "draft"}</Badge></Table.Td>
                <Table.Td>{e.spec.primary_metric ?? "success_rate"}</Table.Td>
                <Table.Td miw={260}>
                  <Progress.Root size="lg">
                    {e.spec.variants.map((v, i) => (
                      <Progress.Section key={v.name} value={((v.weight ?? 1) / total) * 100} color={COLORS[i % COLORS.length]}>
                        <Progress.Label>{v.name} {Math.round(((v.weight ?? 1) / total) * 100)}%</Progress.Label>
                      </Progress.Section>
                    ))}
                  </Progress.Root>
                </Table.Td>
              </Table.Tr>
            );
          })}
        </Table.Tbody>
      </Table>
      {current && <ExperimentResults experiment={current} />}
      <CreateExperiment opened={creating} onClose={() => setCreating(false)} />
    </>
  );
}

function ExperimentResults({ experiment }: { experiment: Experiment }) {
  const name = experiment.metadata.name;
  const queries = useQueryClient();
  const [results, setResults] = useState<Results | null>(null);
  const [promoting, setPromoting] = useState<string | null>(null);
  const [failure, setFailure] = useState<unknown>(null);
  const onEvent = useCallback((event: { event?: string; data: string }) => {
    if (event.event === "experiment") setResults(JSON.parse(event.data) as Results);
  }, []);
  const stream = useEventStream(`/api/v1/metrics/stream?window=15m&every_s=${EVERY_S}&experiment=${encodeURIComponent(name)}`, onEvent);
  const shown = results?.experiment === name ? results : null;
  async function act(path: "stop" | "promote", variant?: string) {
    setFailure(null);
    try {
      const done =
        path === "stop"
          ? await unwrap(api.POST("/api/v1/experiments/{name}/stop", { params: { path: { name } } }))
          : await unwrap(api.POST("/api/v1/experiments/{name}/promote", { params: { path: { name } }, body: { variant: variant! } }));
      notifications.show({ color: "green", message: path === "stop" ? `Stopped ${name} at revision ${done.revision}` : `Promoted ${variant} of ${name} at revision ${done.revision}` });
      await queries.invalidateQueries({ queryKey: ["config", "experiments"] });
    } catch (error) {
      setFailure(error);
    }
  }
  return (
    <Card withBorder data-testid="experiment-results">
      <Group justify="space-between" mb="xs">
        <Group gap="xs">
          <Title order={4}>{name}</Title>
          <Text c="dimmed" size="sm">on route {experiment.spec.route} · {experiment.spec.primary_metric ?? "success_rate"}</Text>
          <Badge variant="dot" color={stream.live ? "green" : "red"}>{stream.live ? "live" : "reconnecting"}</Badge>
        </Group>
        {experiment.spec.state === "running" && <Button color="red" variant="light" onClick={() => act("stop")}>Stop</Button>}
      </Group>
      <Failure error={failure} title="Not done" />
      {stream.error && !shown && <Alert color="red">{stream.error}</Alert>}
      {!shown && !stream.error && <Text c="dimmed">waiting for the first results…</Text>}
      {shown && (
        <>
          <Table data-testid="variants">
            <Table.Thead>
              <Table.Tr>
                <Table.Th>Variant</Table.Th>
                <Table.Th>Model</Table.Th>
                <Table.Th>Requests</Table.Th>
                <Table.Th>Success rate (95% CI)</Table.Th>
                <Table.Th>Latency mean (95% CI)</Table.Th>
                <Table.Th>p95</Table.Th>
                <Table.Th>Feedback</Table.Th>
                <Table.Th>P(best)</Table.Th>
                <Table.Th>Guardrails</Table.Th>
                <Table.Th />
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {shown.variants.map((v) => (
                <Table.Tr key={v.variant} data-variant={v.variant}>
                  <Table.Td fw={600}>{v.variant}</Table.Td>
                  <Table.Td>{experiment.spec.variants.find((x) => x.name === v.variant)?.model}</Table.Td>
                  <Table.Td data-testid={`requests-${v.variant}`}>{v.requests}</Table.Td>
                  <Table.Td>{percent(v.success_rate)}{interval(v.success_rate_ci95, (x) => percent(x))}</Table.Td>
                  <Table.Td>{ms(v.latency_ms.mean)}{interval(v.latency_ms.ci95, (x) => x.toFixed(0))}</Table.Td>
                  <Table.Td>{ms(v.latency_ms.p95)}</Table.Td>
                  <Table.Td>{v.feedback.mean == null ? "–" : `${v.feedback.mean.toFixed(2)} (${v.feedback.count})`}</Table.Td>
                  <Table.Td>{percent(shown.probability_best[v.variant], 0)}</Table.Td>
                  <Table.Td>{v.guardrails_breached.length ? <Text c="red" size="xs">{v.guardrails_breached.join("; ")}</Text> : "ok"}</Table.Td>
                  <Table.Td>
                    {experiment.spec.state !== "completed" && (
                      <Button size="compact-xs" variant="light" onClick={() => setPromoting(v.variant)}>Promote</Button>
                    )}
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
          <Stack gap={4} mt="sm" data-testid="verdicts">
            {shown.comparisons.map((c) => (
              <Text key={c.variant} size="sm">
                <Badge size="xs" color={c.significant ? "green" : "gray"} mr={6}>{c.significant ? "significant" : "not yet"}</Badge>
                {c.verdict}
              </Text>
            ))}
          </Stack>
        </>
      )}
      <Modal opened={promoting !== null} onClose={() => setPromoting(null)} title={`Promote ${promoting} of ${name}?`}>
        <Text size="sm" mb="md">
          Its model (and options) become route {experiment.spec.route}'s only target and the experiment is completed, as one revision.
        </Text>
        <Group justify="flex-end">
          <Button variant="default" onClick={() => setPromoting(null)}>Cancel</Button>
          <Button onClick={() => { const v = promoting!; setPromoting(null); act("promote", v); }}>Promote</Button>
        </Group>
      </Modal>
    </Card>
  );
}

function CreateExperiment({ opened, onClose }: { opened: boolean; onClose: () => void }) {
  const queries = useQueryClient();
  const routes = useQuery({
    queryKey: ["config", "routes", "all"],
    queryFn: () => unwrap(api.GET("/api/v1/config/{kind}", { params: { path: { kind: "routes" }, query: { limit: 200 } } })),
    enabled: opened,
  });
  const models = useQuery({
    queryKey: ["config", "models", "names"],
    queryFn: () => unwrap(api.GET("/api/v1/config/{kind}", { params: { path: { kind: "models" }, query: { limit: 200 } } })),
    enabled: opened,
  });
  const [name, setName] = useState("");
  const [route, setRoute] = useState<string | null>(null);
  const [metric, setMetric] = useState<string>("success_rate");
  const [variants, setVariants] = useState([{ name: "a", model: "", weight: 50 }, { name: "b", model: "", weight: 50 }]);
  const [failure, setFailure] = useState<unknown>(null);
  const modelNames = (models.data?.items ?? []).map((m) => m.metadata.name);
  async function start() {
    setFailure(null);
    try {
      const stored = (await (await raw(`/api/v1/config/routes/${encodeURIComponent(route!)}`)).json()) as { metadata: Record<string, unknown>; spec: Record<string, unknown> };
      delete stored.metadata.revision;
      const experiment = {
        kind: "Experiment",
        metadata: { name: name.trim() },
        spec: { route, variants: variants.map((v) => ({ name: v.name, model: v.model, weight: v.weight })), primary_metric: metric, state: "running" },
      };
      const done = await unwrap(api.POST("/api/v1/config:apply", {
        body: { objects: [experiment, { ...stored, spec: { ...stored.spec, experiment: name.trim() } }], message: `experiment ${name.trim()} on route ${route}` },
      }));
      notifications.show({ color: "green", message: `Started ${name.trim()} on route ${route} at revision ${done.revision}` });
      await queries.invalidateQueries({ queryKey: ["config"] });
      onClose();
    } catch (error) {
      setFailure(error);
    }
  }
  return (
    <Modal opened={opened} onClose={onClose} title="Start an experiment" size="lg">
      <Stack>
        <TextInput label="Name" value={name} onChange={(e) => setName(e.currentTarget.value)} />
        <Select label="Route" data={(routes.data?.items ?? []).map((r) => r.metadata.name)} value={route} onChange={setRoute} />
        <Select label="Primary metric" data={["success_rate", "latency", "feedback_score"]} value={metric} onChange={(v) => setMetric(v ?? "success_rate")} allowDeselect={false} />
        {variants.map((v, i) => (
          <Group key={i} grow>
            <TextInput label={`Variant ${i + 1}`} value={v.name} onChange={(e) => setVariants(variants.map((x, j) => (j === i ? { ...x, name: e.currentTarget.value } : x)))} />
            <Select label="Model" data={modelNames} value={v.model || null} onChange={(m) => setVariants(variants.map((x, j) => (j === i ? { ...x, model: m ?? "" } : x)))} />
            <NumberInput label="Weight" value={v.weight} min={0} max={10_000} onChange={(w) => setVariants(variants.map((x, j) => (j === i ? { ...x, weight: Number(w) || 0 } : x)))} />
          </Group>
        ))}
        <Group>
          <Button variant="default" size="xs" onClick={() => setVariants([...variants, { name: String.fromCharCode(97 + variants.length), model: "", weight: 50 }])}>Add a variant</Button>
        </Group>
        {failure ? <Text c="red" size="sm">{describe(failure)}</Text> : null}
        <Group justify="flex-end">
          <Button variant="default" onClick={onClose}>Cancel</Button>
          <Button onClick={start} disabled={!name.trim() || !route || variants.some((v) => !v.model || !v.name)}>Start</Button>
        </Group>
      </Stack>
    </Modal>
  );
}
