// RAG: the collections, each one's documents (paged, deletable), ingest of files with the
// embedding progress as it goes, and a query with its answer, sources, scores and timings.
import { Alert, Badge, Button, Card, Checkbox, FileInput, Group, Modal, NumberInput, Progress, SegmentedControl, SimpleGrid, Stack, Table, Text, TextInput, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { api, describe, raw, unwrap, type Schemas } from "../api/client";
import { readLines } from "../api/ndjson";
import { Failure } from "../components/Failure";
import { ScreenHeader } from "../components/Freshness";
import { bytes, ms, when } from "../components/format";

const PAGE = 20;

export function RagScreen() {
  const collections = useQuery({
    queryKey: ["config", "rag", "all"],
    queryFn: () => unwrap(api.GET("/api/v1/config/{kind}", { params: { path: { kind: "rag" }, query: { limit: 200 } } })),
    refetchInterval: 10_000,
  });
  const names = (collections.data?.items ?? []).map((c) => c.metadata.name);
  const [chosen, setChosen] = useState<string | null>(null);
  const name = chosen && names.includes(chosen) ? chosen : (names[0] ?? null);
  return (
    <>
      <ScreenHeader title="RAG" freshness={{ revision: collections.data?.revision, updatedAt: collections.dataUpdatedAt, error: collections.error, every: 10 }}>
        {names.length > 0 && <SegmentedControl value={name ?? ""} data={names} onChange={setChosen} aria-label="collection" />}
      </ScreenHeader>
      <Failure error={collections.error} />
      {collections.data && names.length === 0 && <Text c="dimmed">No RAG collection is configured: add a RagCollection under Configuration.</Text>}
      {name && (
        <Stack key={name}>
          <Query collection={name} />
          <Ingest collection={name} />
          <Documents collection={name} />
        </Stack>
      )}
    </>
  );
}

function Documents({ collection }: { collection: string }) {
  const queries = useQueryClient();
  const [offset, setOffset] = useState(0);
  const [removing, setRemoving] = useState<string | null>(null);
  const docs = useQuery({
    queryKey: ["rag-docs", collection, offset],
    queryFn: () => unwrap(api.GET("/api/v1/rag/collections/{name}/documents", { params: { path: { name: collection }, query: { offset, limit: PAGE } } })),
    placeholderData: keepPreviousData,
    refetchInterval: 10_000,
  });
  async function remove(id: string) {
    setRemoving(null);
    try {
      await unwrap(api.DELETE("/api/v1/rag/collections/{name}/documents/{doc_id}", { params: { path: { name: collection, doc_id: id } } }));
      notifications.show({ color: "green", message: `Removed ${id} from ${collection}` });
      queries.invalidateQueries({ queryKey: ["rag-docs", collection] });
    } catch (error) {
      notifications.show({ color: "red", message: describe(error) });
    }
  }
  const total = docs.data?.total ?? 0;
  return (
    <Card withBorder>
      <Title order={4} mb="xs">Documents</Title>
      <Failure error={docs.error} />
      <Table data-testid="rag-docs">
        <Table.Thead>
          <Table.Tr><Table.Th>Document</Table.Th><Table.Th>Chunks</Table.Th><Table.Th>Size</Table.Th><Table.Th>Updated</Table.Th><Table.Th /></Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {(docs.data?.documents ?? []).map((d) => (
            <Table.Tr key={d.id} data-doc={d.id}>
              <Table.Td><Text size="sm" style={{ wordBreak: "break-all" }}>{d.id}</Text></Table.Td>
              <Table.Td>{d.chunks}</Table.Td>
              <Table.Td>{bytes(d.bytes)}</Table.Td>
              <Table.Td><Text size="xs">{when(d.updated)}</Text></Table.Td>
              <Table.Td><Button size="compact-xs" color="red" variant="light" onClick={() => setRemoving(d.id)}>Remove</Button></Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      <Group justify="space-between" mt="xs">
        <Text size="sm" c="dimmed">{total ? `${offset + 1}–${Math.min(offset + PAGE, total)} of ${total}` : "no document yet"}</Text>
        <Group gap="xs">
          <Button size="xs" variant="default" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>Previous</Button>
          <Button size="xs" variant="default" disabled={offset + PAGE >= total} onClick={() => setOffset(offset + PAGE)}>Next</Button>
        </Group>
      </Group>
      <Modal opened={removing !== null} onClose={() => setRemoving(null)} title={`Remove ${removing}?`}>
        <Text size="sm" mb="md">Its chunks leave the collection at once; queries stop finding it.</Text>
        <Group justify="flex-end">
          <Button variant="default" onClick={() => setRemoving(null)}>Cancel</Button>
          <Button color="red" onClick={() => removing && remove(removing)}>Remove</Button>
        </Group>
      </Modal>
    </Card>
  );
}

function Ingest({ collection }: { collection: string }) {
  const queries = useQueryClient();
  const [files, setFiles] = useState<File[]>([]);
  const [progress, setProgress] = useState<{ done: number; total: number } | null>(null);
  const ingest = useMutation({
    mutationFn: async () => {
      setProgress({ done: 0, total: 0 });
      const documents = await Promise.all(
        files.map(async (f) => ({ id: f.name, text: await f.text(), format: /\.(md|markdown)$/i.test(f.name) ? "markdown" : "text", metadata: { source: f.name } })),
      );
      const response = await raw(`/api/v1/rag/collections/${encodeURIComponent(collection)}/documents?progress=true`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ documents }),
      });
      let result: Schemas["RagIngestResult"] | null = null;
      await readLines<{ type: string; embedded?: number; total?: number; error?: string } & Schemas["RagIngestResult"]>(response, (part) => {
        if (part.type === "progress") setProgress({ done: part.embedded ?? 0, total: part.total ?? 0 });
        else if (part.type === "error") throw new Error(`nothing of the batch was stored: ${part.error}`);
        else result = part;
      });
      return result as Schemas["RagIngestResult"] | null;
    },
    onSuccess: () => {
      setFiles([]);
      queries.invalidateQueries({ queryKey: ["rag-docs", collection] });
    },
  });
  const result = ingest.data;
  return (
    <Card withBorder>
      <Title order={4} mb="xs">Ingest</Title>
      <Group align="flex-end">
        <FileInput label="Files (.md, .txt)" placeholder="choose files" multiple value={files} onChange={setFiles} accept=".md,.markdown,.txt,.rst" w={360} clearable />
        <Button onClick={() => ingest.mutate()} loading={ingest.isPending} disabled={files.length === 0}>Ingest</Button>
      </Group>
      {progress && ingest.isPending && (
        <Stack gap={2} mt="sm">
          <Text size="sm">embedding {progress.done} of {progress.total || "…"} chunks</Text>
          <Progress value={progress.total ? (progress.done / progress.total) * 100 : 5} animated aria-label="ingest progress" />
        </Stack>
      )}
      {ingest.error ? <Alert color="red" mt="sm" title="Not ingested">{describe(ingest.error)}</Alert> : null}
      {result && (
        <Text size="sm" mt="sm" c="green" data-testid="ingest-result">
          {result.ingested.length} ingested, {result.unchanged.length} unchanged, {result.chunks} chunks written in {ms(result.total_ms)}
        </Text>
      )}
    </Card>
  );
}

function Query({ collection }: { collection: string }) {
  const [question, setQuestion] = useState("");
  const [topK, setTopK] = useState<number | string>("");
  const [retrieveOnly, setRetrieveOnly] = useState(true);
  const ask = useMutation({
    mutationFn: async () =>
      // (the streamed NDJSON variant of this route is not asked for here)
      (await unwrap(api.POST("/api/v1/rag/query", {
        body: { collection, query: question, retrieve_only: retrieveOnly, top_k: topK === "" ? null : Number(topK) },
      }))) as Schemas["RagAnswer"],
  });
  const answer = ask.data;
  const reranked = answer?.sources.some((s) => s.rerank_score != null) ?? false;
  return (
    <Card withBorder>
      <Title order={4} mb="xs">Ask {collection}</Title>
      <SimpleGrid cols={{ base: 1, md: 4 }}>
        <TextInput label="Question" value={question} onChange={(e) => setQuestion(e.currentTarget.value)} style={{ gridColumn: "span 2" }}
          onKeyDown={(e) => e.key === "Enter" && question.trim() && ask.mutate()} />
        <NumberInput label="top k" placeholder="the collection's" value={topK} onChange={setTopK} min={1} max={100} />
        <Checkbox label="Sources only (no generated answer)" checked={retrieveOnly} onChange={(e) => setRetrieveOnly(e.currentTarget.checked)} mt="lg" />
      </SimpleGrid>
      <Button mt="sm" onClick={() => ask.mutate()} loading={ask.isPending} disabled={!question.trim()}>Ask</Button>
      {ask.error ? <Alert color="red" mt="sm">{describe(ask.error)}</Alert> : null}
      {answer && (
        <Stack mt="sm" data-testid="rag-answer">
          {answer.answer && (
            <Card withBorder bg="var(--mantine-color-gray-0)">
              <Text style={{ whiteSpace: "pre-wrap" }}>{answer.answer}</Text>
              <Text size="xs" c="dimmed">model {answer.model} on {answer.node}</Text>
            </Card>
          )}
          <Table data-testid="rag-sources">
            <Table.Thead>
              <Table.Tr><Table.Th>#</Table.Th><Table.Th>Document</Table.Th><Table.Th>Chunk</Table.Th><Table.Th>Score</Table.Th><Table.Th>Similarity</Table.Th><Table.Th>BM25 rank</Table.Th>{reranked && <Table.Th>Rerank</Table.Th>}<Table.Th>Snippet</Table.Th></Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {answer.sources.map((s) => (
                <Table.Tr key={`${s.document_id}/${s.chunk}`}>
                  <Table.Td>{s.n}</Table.Td>
                  <Table.Td><Text size="sm" style={{ wordBreak: "break-all" }}>{s.document_id}</Text></Table.Td>
                  <Table.Td>{s.chunk}</Table.Td>
                  <Table.Td>{s.score.toFixed(3)}</Table.Td>
                  <Table.Td>{s.similarity == null ? "–" : s.similarity.toFixed(3)}</Table.Td>
                  <Table.Td>{s.keyword_rank ?? "–"}</Table.Td>
                  {reranked && <Table.Td>{s.rerank_score == null ? "–" : s.rerank_score.toFixed(3)}</Table.Td>}
                  <Table.Td><Text size="xs" lineClamp={2}>{s.snippet}</Text></Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
          {answer.sources.length === 0 && <Text c="dimmed" size="sm">Nothing in the collection matches.</Text>}
          <Group gap="xs">
            <Badge variant="light">embed {ms(answer.timings.embed_ms)}</Badge>
            <Badge variant="light">retrieve {ms(answer.timings.retrieve_ms)}</Badge>
            {answer.timings.rerank_ms ? <Badge variant="light">rerank {ms(answer.timings.rerank_ms)}</Badge> : null}
            <Badge variant="light">generate {ms(answer.timings.generate_ms)}</Badge>
            <Badge variant="light">total {ms(answer.timings.total_ms)}</Badge>
            {answer.cached && <Badge color="gray">retrieval cached</Badge>}
          </Group>
        </Stack>
      )}
    </Card>
  );
}
