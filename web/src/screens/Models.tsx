// Models: desired against actual on every node that should hold each model (present, loaded,
// ready, applied, the agent's condition with pull progress), the autoscaler's replicas, and a
// tune form on each model that writes one revision and shows every node confirm it.
import { Badge, Button, Card, Group, NumberInput, Progress, SimpleGrid, Stack, Table, Text, TextInput, Title } from "@mantine/core";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { api, describe, raw, unwrap, type Schemas } from "../api/client";
import { Failure } from "../components/Failure";
import { ScreenHeader } from "../components/Freshness";

const EVERY_S = 2;
/** The options a person tunes most; the YAML editor (Configuration) reaches every other. */
export const TUNABLE = ["temperature", "top_p", "top_k", "num_ctx", "num_predict", "repeat_penalty", "seed"] as const;
const INTEGERS = new Set(["top_k", "num_ctx", "num_predict", "seed"]);

export function ModelsScreen() {
  const status = useQuery({
    queryKey: ["models-status"],
    queryFn: () => unwrap(api.GET("/api/v1/models/status")),
    refetchInterval: EVERY_S * 1000,
  });
  const models = status.data?.models ?? [];
  return (
    <>
      <ScreenHeader
        title="Models"
        freshness={{ revision: status.data?.revision, updatedAt: status.dataUpdatedAt, error: status.error, every: EVERY_S }}
      />
      <Failure error={status.error} />
      {status.data && models.length === 0 && <Text c="dimmed">No Model is configured: add one under Configuration.</Text>}
      <Stack>
        {models.map((model) => (
          <ModelCard key={model.model} model={model} />
        ))}
      </Stack>
    </>
  );
}

function yes(value: boolean) {
  return <Badge color={value ? "green" : "red"} variant="light">{value ? "yes" : "no"}</Badge>;
}

function Condition({ condition }: { condition?: Schemas["ModelCondition"] | null }) {
  if (!condition) return <Text c="dimmed">–</Text>;
  const color = condition.type === "Ready" ? "green" : condition.type === "Failed" ? "red" : "blue";
  return (
    <Stack gap={2}>
      <Group gap={4}>
        <Badge color={color} variant="dot">{condition.type}</Badge>
        {condition.reason && <Text size="xs">{condition.reason}</Text>}
      </Group>
      {condition.type === "Pulling" && condition.progress != null && (
        <Progress value={condition.progress * 100} size="sm" aria-label="pull progress" />
      )}
      {condition.message && <Text size="xs" c="dimmed" lineClamp={2}>{condition.message}</Text>}
    </Stack>
  );
}

function ModelCard({ model }: { model: Schemas["ModelStatus"] }) {
  const [tuning, setTuning] = useState(false);
  const scale = model.autoscale;
  return (
    <Card withBorder data-model={model.model}>
      <Group justify="space-between" mb="xs">
        <Group gap="sm">
          <Title order={4}>{model.model}</Title>
          <Text c="dimmed" size="sm">{model.ollama_tag} · revision {model.revision}</Text>
          <Badge color={model.ready_nodes >= model.desired_nodes && model.desired_nodes > 0 ? "green" : "yellow"}>
            {model.ready_nodes}/{model.desired_nodes} ready
          </Badge>
          {model.autoscaled && (
            <Badge variant="outline" color={scale?.panic ? "red" : "grape"}>
              autoscaled: {scale ? `${scale.desired} desired, ${scale.placed} placed, ${scale.ready} ready${scale.panic ? ", panic" : ""}` : "not decided yet"}
            </Badge>
          )}
        </Group>
        <Button size="xs" variant={tuning ? "light" : "filled"} onClick={() => setTuning(!tuning)}>
          {tuning ? "Close tuning" : "Tune"}
        </Button>
      </Group>
      {scale?.reason && <Text size="xs" c="dimmed" mb="xs">autoscaler: {scale.reason}{scale.short ? ` (short: ${scale.short})` : ""}</Text>}
      {model.nodes.length === 0 ? (
        <Text c="dimmed" size="sm">No node should hold it now (no node matches its placement{model.autoscaled ? ", or no replica is wanted" : ""}).</Text>
      ) : (
        <Table.ScrollContainer minWidth={700}>
          <Table data-testid={`model-nodes-${model.model}`}>
            <Table.Thead>
              <Table.Tr>
                <Table.Th>Node</Table.Th>
                <Table.Th>Present</Table.Th>
                <Table.Th>Loaded</Table.Th>
                <Table.Th>Ready</Table.Th>
                <Table.Th>Applied</Table.Th>
                <Table.Th>Condition</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {model.nodes.map((n) => (
                <Table.Tr key={n.node}>
                  <Table.Td>{n.node}</Table.Td>
                  <Table.Td>{yes(n.present)}</Table.Td>
                  <Table.Td>{yes(n.loaded)}</Table.Td>
                  <Table.Td>{yes(n.ready)}</Table.Td>
                  <Table.Td>{yes(n.applied)} <Text span size="xs" c="dimmed">{n.applied_revision ?? ""}</Text></Table.Td>
                  <Table.Td><Condition condition={n.condition} /></Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      )}
      {tuning && <TuneForm model={model.model} />}
    </Card>
  );
}

type Values = Record<string, number | string>;

export function tuneBody(model: string, current: Values, edited: Values, keepAlive: string, currentKeepAlive: string) {
  const options: Record<string, number> = {};
  const unset: string[] = [];
  for (const name of TUNABLE) {
    const value = edited[name];
    if (value === current[name] || (value === "" && current[name] === undefined)) continue;
    if (value === "" || value === undefined) unset.push(name);
    else options[name] = Number(value);
  }
  const body: Record<string, unknown> = { model, options, unset, message: "tuned in the web UI" };
  if (keepAlive.trim() && keepAlive.trim() !== currentKeepAlive) body.keep_alive = keepAlive.trim();
  return body;
}

function TuneForm({ model }: { model: string }) {
  const queries = useQueryClient();
  const doc = useQuery({
    queryKey: ["config", "models", model],
    queryFn: async () => (await (await raw(`/api/v1/config/models/${encodeURIComponent(model)}`)).json()) as Schemas["Model"],
  });
  const current: Values = (doc.data?.spec.options ?? {}) as Values;
  const currentKeepAlive = String(doc.data?.spec.keep_alive ?? "");
  const [edited, setEdited] = useState<Values | null>(null);
  const [keepAlive, setKeepAlive] = useState<string | null>(null);
  const values = edited ?? current;
  const tune = useMutation({
    mutationFn: (body: Record<string, unknown>) =>
      unwrap(api.PUT("/api/v1/tune", { params: { query: { wait: "applied", timeout: 30 } }, body: body as never })),
    onSuccess: () => {
      setEdited(null);
      setKeepAlive(null);
      queries.invalidateQueries({ queryKey: ["config", "models", model] });
      queries.invalidateQueries({ queryKey: ["models-status"] });
    },
  });
  if (doc.error) return <Failure error={doc.error} />;
  if (!doc.data) return <Text size="sm">loading its options…</Text>;
  const body = tuneBody(model, current, values, keepAlive ?? currentKeepAlive, currentKeepAlive);
  const changes = Object.keys(body.options as object).length + (body.unset as string[]).length + ("keep_alive" in body ? 1 : 0);
  return (
    <Card withBorder mt="sm" bg="var(--mantine-color-gray-0)" data-testid={`tune-${model}`}>
      <SimpleGrid cols={{ base: 2, md: 4 }}>
        {TUNABLE.map((name) => (
          <NumberInput
            key={name}
            label={name}
            value={values[name] ?? ""}
            allowDecimal={!INTEGERS.has(name)}
            placeholder="server default"
            onChange={(v) => setEdited({ ...values, [name]: v })}
          />
        ))}
        <TextInput
          label="keep_alive"
          placeholder="5m, 1h, -1"
          value={keepAlive ?? currentKeepAlive}
          onChange={(e) => setKeepAlive(e.currentTarget.value)}
        />
      </SimpleGrid>
      <Group mt="sm">
        <Button onClick={() => tune.mutate(body)} loading={tune.isPending} disabled={changes === 0}>
          Apply to every node and wait
        </Button>
        <Text size="sm" c="dimmed">{changes === 0 ? "nothing changed yet" : `${changes} change${changes === 1 ? "" : "s"}`}</Text>
      </Group>
      {tune.error && <Text c="red" size="sm" mt="xs" data-testid="tune-error">{describe(tune.error)}</Text>}
      {tune.data && <TuneResult answer={tune.data} />}
    </Card>
  );
}

function TuneResult({ answer }: { answer: Schemas["TuneAnswer"] }) {
  return (
    <Stack gap={4} mt="sm" data-testid="tune-result">
      <Text size="sm" fw={600} c={answer.complete ? "green" : "orange"}>
        {answer.changed ? `Written at revision ${answer.revision}` : `Unchanged (revision ${answer.revision})`}
        {answer.complete ? `: every node applied it in ${answer.elapsed_ms.toFixed(0)} ms` : `: ${answer.not_applied.length} node(s) have not confirmed it`}
      </Text>
      <Table>
        <Table.Tbody>
          {answer.nodes.map((n) => (
            <Table.Tr key={`${n.node}/${n.model}`}>
              <Table.Td>{n.node}</Table.Td>
              <Table.Td>
                <Badge color={n.state === "applied" ? "green" : n.state === "pending" ? "yellow" : "red"}>{n.state}</Badge>
              </Table.Td>
              <Table.Td><Text size="xs">{n.message}</Text></Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
    </Stack>
  );
}
