// Configuration: each kind's objects as a list, paged and filtered by the server (limit, continue,
// q), with the stored items that do not validate; open one to edit it as YAML.
import { Alert, Badge, Button, Group, SegmentedControl, Table, Text, TextInput } from "@mantine/core";
import { useDebouncedValue } from "@mantine/hooks";
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { Link, useNavigate, useParams } from "@tanstack/react-router";
import { useState } from "react";
import { api, unwrap, type Schemas } from "../api/client";
import { KINDS } from "../config/kinds";
import { Failure } from "../components/Failure";
import { ScreenHeader } from "../components/Freshness";

const PAGE = 25;
const EVERY_S = 5;

type Item = Schemas["ConfigList"]["items"][number];

export function ConfigListScreen() {
  const { kind } = useParams({ from: "/config/$kind" });
  const navigate = useNavigate();
  const [text, setText] = useState("");
  const [q] = useDebouncedValue(text.trim(), 250);
  const [pages, setPages] = useState<(string | null)[]>([null]); // the continue token of each page seen
  const after = pages[pages.length - 1];
  const listing = useQuery({
    queryKey: ["config", kind, "list", q, after],
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/config/{kind}", {
          params: { path: { kind }, query: { limit: PAGE, q: q || undefined, continue: after ?? undefined } },
        }),
      ),
    refetchInterval: EVERY_S * 1000,
    placeholderData: keepPreviousData,
  });
  const data = listing.data;
  const first = (pages.length - 1) * PAGE;
  return (
    <>
      <ScreenHeader
        title="Configuration"
        freshness={{ revision: data?.revision, updatedAt: listing.dataUpdatedAt, error: listing.error, every: EVERY_S }}
      >
        <Button size="sm" onClick={() => navigate({ to: "/config/$kind/$name", params: { kind, name: "new" } })}>
          New {KINDS.find((k) => k.plural === kind)?.kind ?? "object"}
        </Button>
      </ScreenHeader>
      <Group mb="sm" wrap="wrap">
        <SegmentedControl
          value={kind}
          data={KINDS.map((k) => ({ value: k.plural, label: k.label }))}
          onChange={(value) => {
            setPages([null]);
            navigate({ to: "/config/$kind", params: { kind: value } });
          }}
        />
        <TextInput
          placeholder="filter by name"
          aria-label="filter by name"
          value={text}
          onChange={(e) => {
            setText(e.currentTarget.value);
            setPages([null]);
          }}
          w={240}
        />
      </Group>
      <Failure error={listing.error} />
      {data && data.invalid.length > 0 && (
        <Alert color="orange" title="Stored objects that do not validate (processes keep their last good value)" mb="sm">
          {data.invalid.map((bad) => (
            <Text key={bad.key} size="sm">
              {bad.kind}/{bad.name} at revision {bad.revision}: {bad.error}
            </Text>
          ))}
          <Text size="sm" mt="xs">Repair: save a valid document under the same name, or delete it.</Text>
        </Alert>
      )}
      <Table striped highlightOnHover data-testid="config-list">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>Name</Table.Th>
            <Table.Th>Revision</Table.Th>
            <Table.Th>Labels</Table.Th>
            <Table.Th>Summary</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {(data?.items ?? []).map((item) => (
            <Table.Tr key={item.metadata.name}>
              <Table.Td>
                <Link to="/config/$kind/$name" params={{ kind, name: item.metadata.name }}>
                  {item.metadata.name}
                </Link>
              </Table.Td>
              <Table.Td>{item.metadata.revision ?? "–"}</Table.Td>
              <Table.Td>
                <Group gap={4}>
                  {Object.entries(item.metadata.labels ?? {}).map(([k, v]) => (
                    <Badge key={k} variant="outline" size="sm">
                      {k}={v}
                    </Badge>
                  ))}
                </Group>
              </Table.Td>
              <Table.Td>
                <Text size="sm" c="dimmed">{summary(item)}</Text>
              </Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      {data && data.items.length === 0 && <Text c="dimmed" mt="sm">{q ? `No name contains "${q}".` : "None yet."}</Text>}
      <Group mt="sm" justify="space-between">
        <Text size="sm" c="dimmed" data-testid="config-page">
          {data ? `${data.items.length ? first + 1 : 0}–${first + data.items.length} of ${data.total}` : ""}
        </Text>
        <Group gap="xs">
          <Button variant="default" size="xs" disabled={pages.length === 1} onClick={() => setPages(pages.slice(0, -1))}>
            Previous
          </Button>
          <Button variant="default" size="xs" disabled={!data?.next} onClick={() => data?.next && setPages([...pages, data.next])}>
            Next
          </Button>
        </Group>
      </Group>
    </>
  );
}

function summary(item: Item): string {
  const spec = item.spec as Record<string, unknown>;
  switch (item.kind) {
    case "Model":
      return `${spec.ollama_tag ?? ""} · ${(spec.capabilities as string[] | undefined)?.join(", ") ?? ""}`;
    case "Route":
      return `→ ${((spec.targets as { model: string }[] | undefined) ?? []).map((t) => t.model).join(", ")}`;
    case "Experiment":
      return `${spec.state ?? "draft"} on ${spec.route}`;
    case "RagCollection":
      return `embeds with ${spec.embedding_model}`;
    default:
      return "";
  }
}
