// Playground: a chat through the router with a router API key, the answer as it streams, the
// router's decision (route, model, node, variant, decision time, attempts, request id), and two
// models side by side. The key stays in this tab's session storage.
import { Alert, Autocomplete, Badge, Button, Card, Checkbox, Group, NumberInput, PasswordInput, SimpleGrid, Stack, Table, Text, Textarea } from "@mantine/core";
import { useQuery } from "@tanstack/react-query";
import { useRef, useState } from "react";
import { api, describe, raw, unwrap } from "../api/client";
import { readLines } from "../api/ndjson";
import { ScreenHeader } from "../components/Freshness";

const KEY = "llmtune.routerKey";

interface Decision {
  route: string;
  model: string;
  node: string;
  variant: string;
  decisionUs: string;
  attempts: string;
  requestId: string;
}

interface Run {
  model: string;
  text: string;
  decision: Decision | null;
  error: string | null;
  done: boolean;
  stats: { tokens?: number; totalMs?: number; tokensPerS?: number } | null;
}

function decisionOf(headers: Headers): Decision {
  const get = (name: string) => headers.get(name) ?? "";
  return { route: get("x-route-name"), model: get("x-route-model"), node: get("x-route-node"), variant: get("x-route-variant"),
           decisionUs: get("x-route-decision-us"), attempts: get("x-route-attempts"), requestId: get("x-request-id") };
}

interface ChatLine {
  message?: { content?: string };
  done?: boolean;
  error?: string;
  eval_count?: number;
  total_duration?: number;
  eval_duration?: number;
}

/** Send one chat and follow its NDJSON lines into ``update``. */
export async function chat(key: string, model: string, prompt: string, options: Record<string, number>, update: (run: Partial<Run>) => void, signal: AbortSignal) {
  try {
    const response = await raw("/api/v1/playground/chat", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Router-Key": key },
      body: JSON.stringify({ model, messages: [{ role: "user", content: prompt }], options }),
      signal,
    });
    update({ decision: decisionOf(response.headers) });
    let text = "";
    await readLines<ChatLine>(response, (part) => {
      if (part.error) throw new Error(part.error);
      text += part.message?.content ?? "";
      update({ text });
      if (part.done) {
        const tokensPerS = part.eval_count && part.eval_duration ? part.eval_count / (part.eval_duration / 1e9) : undefined;
        update({ stats: { tokens: part.eval_count, totalMs: part.total_duration ? part.total_duration / 1e6 : undefined, tokensPerS } });
      }
    });
    update({ done: true });
  } catch (error) {
    if (!signal.aborted) update({ error: describe(error), done: true });
  }
}

export function PlaygroundScreen() {
  const [key, setKey] = useState(sessionStorage.getItem(KEY) ?? "");
  const [models, setModels] = useState<[string, string]>(["chat", ""]);
  const [compare, setCompare] = useState(false);
  const [prompt, setPrompt] = useState("Say hello in five words.");
  const [temperature, setTemperature] = useState<number | string>("");
  const [runs, setRuns] = useState<Run[]>([]);
  const abort = useRef<AbortController | null>(null);
  const names = useQuery({
    queryKey: ["config", "models", "names"],
    queryFn: () => unwrap(api.GET("/api/v1/config/{kind}", { params: { path: { kind: "models" }, query: { limit: 200 } } })),
    refetchInterval: 30_000,
  });
  const suggestions = (names.data?.items ?? []).map((m) => m.metadata.name);

  function send() {
    abort.current?.abort();
    const controller = new AbortController();
    abort.current = controller;
    sessionStorage.setItem(KEY, key.trim());
    const chosen = (compare ? models : [models[0]]).map((m) => m.trim()).filter(Boolean);
    setRuns(chosen.map((model) => ({ model, text: "", decision: null, error: null, done: false, stats: null })));
    const options: Record<string, number> = temperature === "" ? {} : { temperature: Number(temperature) };
    chosen.forEach((model, i) =>
      chat(key.trim(), model, prompt, options, (part) => setRuns((all) => all.map((r, j) => (j === i ? { ...r, ...part } : r))), controller.signal),
    );
  }

  return (
    <>
      <ScreenHeader title="Playground" freshness={{ revision: names.data?.revision, updatedAt: names.dataUpdatedAt, error: names.error, every: 30 }} />
      <Text size="sm" c="dimmed" mb="md">A chat through the router, as a service would send it: with a router API key (kept in this tab only).</Text>
      <Stack maw={1100}>
        <SimpleGrid cols={{ base: 1, md: 3 }}>
          <PasswordInput label="Router API key" placeholder="llmk_…" value={key} onChange={(e) => setKey(e.currentTarget.value)} />
          <Autocomplete label="Model (an alias, Model name or tag)" data={suggestions} value={models[0]} onChange={(v) => setModels([v, models[1]])} />
          <NumberInput label="temperature" placeholder="the model's own" value={temperature} onChange={setTemperature} min={0} max={2} step={0.1} decimalScale={2} />
        </SimpleGrid>
        <Group align="flex-end">
          <Checkbox label="Compare side by side with" checked={compare} onChange={(e) => setCompare(e.currentTarget.checked)} />
          <Autocomplete aria-label="second model" data={suggestions} value={models[1]} onChange={(v) => setModels([models[0], v])} disabled={!compare} w={260} />
        </Group>
        <Textarea label="Message" value={prompt} onChange={(e) => setPrompt(e.currentTarget.value)} autosize minRows={3} />
        <Group>
          <Button onClick={send} disabled={!key.trim() || !models[0].trim() || !prompt.trim()}>Send</Button>
          {runs.some((r) => !r.done) && <Button variant="default" onClick={() => abort.current?.abort()}>Stop</Button>}
        </Group>
      </Stack>
      <SimpleGrid cols={{ base: 1, md: runs.length > 1 ? 2 : 1 }} mt="md">
        {runs.map((run, i) => (
          <Card key={i} withBorder data-testid={`answer-${i}`}>
            <Group justify="space-between" mb="xs">
              <Text fw={600}>{run.model}</Text>
              {!run.done && <Badge color="blue" variant="dot">streaming</Badge>}
            </Group>
            {run.error && <Alert color="red" data-testid="chat-error">{run.error}</Alert>}
            <Text style={{ whiteSpace: "pre-wrap" }} data-testid="answer-text">{run.text}</Text>
            {run.decision && (
              <Table mt="sm" data-testid="decision">
                <Table.Tbody>
                  <Table.Tr><Table.Td>route</Table.Td><Table.Td>{run.decision.route || "–"}</Table.Td></Table.Tr>
                  <Table.Tr><Table.Td>model</Table.Td><Table.Td>{run.decision.model}</Table.Td></Table.Tr>
                  <Table.Tr><Table.Td>node</Table.Td><Table.Td>{run.decision.node}</Table.Td></Table.Tr>
                  <Table.Tr><Table.Td>variant</Table.Td><Table.Td>{run.decision.variant || "–"}</Table.Td></Table.Tr>
                  <Table.Tr><Table.Td>decision</Table.Td><Table.Td>{run.decision.decisionUs} µs</Table.Td></Table.Tr>
                  <Table.Tr><Table.Td>attempts</Table.Td><Table.Td>{run.decision.attempts}</Table.Td></Table.Tr>
                  <Table.Tr><Table.Td>request id</Table.Td><Table.Td><Text size="xs">{run.decision.requestId}</Text></Table.Td></Table.Tr>
                  {run.stats && (
                    <Table.Tr>
                      <Table.Td>answer</Table.Td>
                      <Table.Td>
                        {run.stats.tokens ?? "?"} tokens{run.stats.totalMs ? ` in ${run.stats.totalMs.toFixed(0)} ms` : ""}
                        {run.stats.tokensPerS ? ` (${run.stats.tokensPerS.toFixed(1)} tokens/s)` : ""}
                      </Table.Td>
                    </Table.Tr>
                  )}
                </Table.Tbody>
              </Table>
            )}
          </Card>
        ))}
      </SimpleGrid>
    </>
  );
}
