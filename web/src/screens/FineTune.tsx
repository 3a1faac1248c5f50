// Fine-tuning: jobs with their state and progress; the chosen job's loss curve, its log following
// live (Server-Sent Events, resumable; a failed job's last lines stay), cancel; and a form that
// uploads a JSONL dataset (once per content) and submits a job.
import { LineChart } from "@mantine/charts";
import { Alert, Badge, Button, Card, Checkbox, Code, FileInput, Group, Modal, Progress, ScrollArea, Select, SimpleGrid, Stack, Table, Text, TextInput, Textarea, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback, useEffect, useRef, useState } from "react";
import { api, describe, raw, unwrap, type Schemas } from "../api/client";
import { useEventStream } from "../api/sse";
import { Failure } from "../components/Failure";
import { ScreenHeader } from "../components/Freshness";
import { when } from "../components/format";

const EVERY_S = 2;
const MAX_LINES = 2000;
type Job = Schemas["FineTuneJob"];
type Line = Schemas["LogLine"];
const STATE_COLOR: Record<string, string> = { queued: "gray", running: "blue", registering: "cyan", succeeded: "green", failed: "red", cancelled: "orange" };

export function FineTuneScreen() {
  const jobs = useQuery({
    queryKey: ["fine-tune"],
    queryFn: () => unwrap(api.GET("/api/v1/fine-tune", { params: { query: { limit: 100 } } })),
    refetchInterval: EVERY_S * 1000,
  });
  const [chosen, setChosen] = useState<string | null>(null);
  const [submitting, setSubmitting] = useState(false);
  const list = (jobs.data ?? []) as Job[];
  const current = list.find((j) => j.id === chosen) ?? list[0];
  return (
    <>
      <ScreenHeader title="Fine-tuning" freshness={{ updatedAt: jobs.dataUpdatedAt, error: jobs.error, every: EVERY_S }}>
        <Button onClick={() => setSubmitting(true)}>Submit a job</Button>
      </ScreenHeader>
      <Failure error={jobs.error} />
      {jobs.data && list.length === 0 && <Text c="dimmed">No job yet.</Text>}
      <Table highlightOnHover data-testid="jobs" mb="md">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>Job</Table.Th>
            <Table.Th>State</Table.Th>
            <Table.Th>Method</Table.Th>
            <Table.Th>Base → output</Table.Th>
            <Table.Th>Progress</Table.Th>
            <Table.Th>Try</Table.Th>
            <Table.Th>Created</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {list.map((job) => (
            <Table.Tr key={job.id} data-job={job.id} bg={current?.id === job.id ? "var(--mantine-color-blue-light)" : undefined}>
              <Table.Td><Button variant="subtle" size="compact-sm" onClick={() => setChosen(job.id)}>{job.id}</Button></Table.Td>
              <Table.Td><Badge color={STATE_COLOR[job.state]}>{job.state}</Badge></Table.Td>
              <Table.Td>{job.method}</Table.Td>
              <Table.Td>{job.base_model} → {job.output_model}</Table.Td>
              <Table.Td miw={140}><Progress value={job.progress * 100} aria-label={`progress of ${job.id}`} /></Table.Td>
              <Table.Td>{job.attempt}</Table.Td>
              <Table.Td><Text size="xs">{when(job.created_at)}</Text></Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      {current && <JobDetail key={current.id} job={current} />}
      <Submit opened={submitting} onClose={() => setSubmitting(false)} onSubmitted={(id) => setChosen(id)} />
    </>
  );
}

function JobDetail({ job: listed }: { job: Job }) {
  const [job, setJob] = useState<Job>(listed);
  const [lines, setLines] = useState<Line[]>([]);
  const [ended, setEnded] = useState(false);
  const bottom = useRef<HTMLDivElement>(null);
  const onEvent = useCallback((event: { event?: string; data: string }) => {
    if (event.event === "log") {
      const line = JSON.parse(event.data) as Line;
      setLines((old) => (old.some((l) => l.id === line.id) ? old : [...old, line].slice(-MAX_LINES)));
      return false;
    }
    if (event.event === "progress" || event.event === "end") setJob(JSON.parse(event.data) as Job);
    if (event.event === "end") {
      setEnded(true);
      return true; // the job ended: the stream is done, its lines stay on the page
    }
    return false;
  }, []);
  // A reconnect reads the log from its start again; lines already shown are skipped by their id.
  const stream = useEventStream(ended ? null : `/api/v1/fine-tune/${encodeURIComponent(listed.id)}/logs/stream?after=0&every_s=0.5`, onEvent);
  useEffect(() => {
    bottom.current?.scrollIntoView({ block: "nearest" }); // (newer browsers return a promise: never the effect's result)
  }, [lines.length]);
  const queries = useQueryClient();
  const [failure, setFailure] = useState<unknown>(null);
  async function cancel() {
    try {
      setJob((await unwrap(api.POST("/api/v1/fine-tune/{job_id}/cancel", { params: { path: { job_id: job.id } } }))) as Job);
      notifications.show({ message: `Cancellation of ${job.id} requested` });
      queries.invalidateQueries({ queryKey: ["fine-tune"] });
    } catch (error) {
      setFailure(error);
    }
  }
  const loss = job.metrics?.loss ?? [];
  const evalLoss = new Map((job.metrics?.eval_loss ?? []).map(([step, value]) => [step, value]));
  const curve = loss.map(([step, value]) => ({ step, loss: value, eval_loss: evalLoss.get(step) ?? null }));
  const extra = Object.entries(job.metrics ?? {}).filter(([k]) => k !== "loss" && k !== "eval_loss");
  const final = ["succeeded", "failed", "cancelled"].includes(job.state);
  return (
    <Card withBorder data-testid="job-detail">
      <Group justify="space-between" mb="xs">
        <Group gap="xs">
          <Title order={4}>{job.id}</Title>
          <Badge color={STATE_COLOR[job.state]} data-testid="job-state">{job.state}</Badge>
          {!final && <Badge variant="dot" color={stream.live ? "green" : "red"}>{stream.live ? "following" : "reconnecting"}</Badge>}
        </Group>
        {!final && <Button color="red" variant="light" onClick={cancel} disabled={job.cancel_requested}>{job.cancel_requested ? "Cancelling…" : "Cancel"}</Button>}
      </Group>
      <Failure error={failure} title="Not done" />
      {job.error && <Alert color="red" mb="sm" title="The job failed">{job.error}</Alert>}
      {job.state === "succeeded" && (
        <Alert color="green" mb="sm">
          Model {job.output_model} registered at revision {job.model_revision}{job.experiment ? `; experiment ${job.experiment} started` : ""}.
        </Alert>
      )}
      <Progress value={job.progress * 100} mb="sm" />
      <SimpleGrid cols={{ base: 1, lg: 2 }}>
        <div>
          <Text fw={600} mb={4}>Loss</Text>
          {curve.length ? (
            <LineChart h={220} data={curve} dataKey="step" withLegend series={[{ name: "loss", color: "blue.6" }, { name: "eval_loss", color: "orange.6" }]} connectNulls data-testid="loss-chart" />
          ) : (
            <Text size="sm" c="dimmed">No curve: {job.method === "modelfile" ? "a modelfile job derives parameters, it does not train" : "none reported yet"}.</Text>
          )}
          {extra.length > 0 && (
            <Code block mt="xs">{JSON.stringify(Object.fromEntries(extra), null, 2)}</Code>
          )}
        </div>
        <div>
          <Text fw={600} mb={4}>Log ({lines.length} line{lines.length === 1 ? "" : "s"})</Text>
          <ScrollArea h={260} type="auto" data-testid="job-log">
            <Code block>
              {lines.map((l) => (
                <div key={l.id} style={{ color: l.level === "error" ? "var(--mantine-color-red-7)" : undefined }}>
                  {new Date(l.at * 1000).toLocaleTimeString()} {l.level.padStart(7)} {l.message}
                </div>
              ))}
              <div ref={bottom} />
            </Code>
          </ScrollArea>
        </div>
      </SimpleGrid>
    </Card>
  );
}

function Submit({ opened, onClose, onSubmitted }: { opened: boolean; onClose: () => void; onSubmitted: (id: string) => void }) {
  const queries = useQueryClient();
  const models = useQuery({
    queryKey: ["config", "models", "names"],
    queryFn: () => unwrap(api.GET("/api/v1/config/{kind}", { params: { path: { kind: "models" }, query: { limit: 200 } } })),
    enabled: opened,
  });
  const [file, setFile] = useState<File | null>(null);
  const [base, setBase] = useState<string | null>(null);
  const [output, setOutput] = useState("");
  const [method, setMethod] = useState<string>("modelfile");
  const [params, setParams] = useState("{}");
  const [experiment, setExperiment] = useState(false);
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<unknown>(null);
  async function submit() {
    setBusy(true);
    setFailure(null);
    try {
      const hyperparameters = JSON.parse(params || "{}") as Record<string, unknown>;
      const uploaded = (await (await raw("/api/v1/fine-tune/datasets", { method: "POST", body: await file!.text(), headers: { "Content-Type": "application/x-ndjson" } })).json()) as Schemas["DatasetInfo"];
      const job = await unwrap(api.POST("/api/v1/fine-tune", {
        body: { base_model: base!, output_model: output.trim(), method: method as "modelfile", dataset_id: uploaded.id, hyperparameters, auto_experiment: experiment },
      }));
      notifications.show({ color: "green", message: `Job ${job.id} queued (${uploaded.rows} rows)` });
      await queries.invalidateQueries({ queryKey: ["fine-tune"] });
      onSubmitted(job.id);
      onClose();
    } catch (error) {
      setFailure(error instanceof SyntaxError ? new Error(`hyperparameters: not JSON (${error.message})`) : error);
    } finally {
      setBusy(false);
    }
  }
  return (
    <Modal opened={opened} onClose={onClose} title="Submit a fine-tuning job" size="lg">
      <Stack>
        <FileInput label="Dataset (JSONL: {prompt, response} or {messages} per line)" placeholder="choose a .jsonl file" value={file} onChange={setFile} accept=".jsonl,.json,.txt" clearable />
        <Select label="Base model" data={(models.data?.items ?? []).map((m) => m.metadata.name)} value={base} onChange={setBase} searchable />
        <TextInput label="Output model (a new Model object)" value={output} onChange={(e) => setOutput(e.currentTarget.value)} />
        <Select label="Method" data={[{ value: "modelfile", label: "modelfile (no GPU: derives a system prompt and parameters)" }, { value: "lora", label: "lora (trains an adapter)" }]} value={method} onChange={(v) => setMethod(v ?? "modelfile")} allowDeselect={false} />
        <Textarea label="Hyperparameters (JSON)" value={params} onChange={(e) => setParams(e.currentTarget.value)} autosize minRows={2} />
        <Checkbox label="A/B test the new model against the base when done" checked={experiment} onChange={(e) => setExperiment(e.currentTarget.checked)} />
        {failure ? <Text c="red" size="sm" data-testid="submit-error">{describe(failure)}</Text> : null}
        <Group justify="flex-end">
          <Button variant="default" onClick={onClose}>Cancel</Button>
          <Button onClick={submit} loading={busy} disabled={!file || !base || !output.trim()}>Submit</Button>
        </Group>
      </Stack>
    </Modal>
  );
}
