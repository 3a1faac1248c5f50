// Fleet: every node with its health, Ollama version, agent heartbeat, memory in use, loaded
// models, applied revision and lag; refreshed every two seconds.
import { Badge, Group, Table, Text, Tooltip } from "@mantine/core";
import { useQuery } from "@tanstack/react-query";
import { api, unwrap, type Schemas } from "../api/client";
import { Failure } from "../components/Failure";
import { ScreenHeader } from "../components/Freshness";
import { age, bytes } from "../components/format";

const EVERY_S = 2;
const HEALTH_COLOR: Record<string, string> = { ready: "green", draining: "yellow", degraded: "orange" };

export function nodesQuery() {
  return { queryKey: ["nodes"], queryFn: () => unwrap(api.GET("/api/v1/nodes")), refetchInterval: EVERY_S * 1000 };
}

export function FleetScreen() {
  const nodes = useQuery(nodesQuery());
  const list = nodes.data?.nodes ?? [];
  return (
    <>
      <ScreenHeader
        title="Fleet"
        freshness={{ revision: nodes.data?.revision, updatedAt: nodes.dataUpdatedAt, error: nodes.error, every: EVERY_S }}
      >
        <Text size="sm" c="dimmed" data-testid="node-count">
          {list.length} node{list.length === 1 ? "" : "s"}, {list.filter((n) => n.health === "ready").length} ready
        </Text>
      </ScreenHeader>
      <Failure error={nodes.error} />
      {nodes.data && list.length === 0 && (
        <Text c="dimmed">No node reports to this control plane yet: start an agent beside an Ollama (README, "Agents").</Text>
      )}
      {list.length > 0 && (
        <Table.ScrollContainer minWidth={900}>
          <Table striped highlightOnHover data-testid="nodes">
            <Table.Thead>
              <Table.Tr>
                <Table.Th>Node</Table.Th>
                <Table.Th miw={150}>Health</Table.Th>
                <Table.Th>Ollama</Table.Th>
                <Table.Th>Heartbeat</Table.Th>
                <Table.Th>Memory / VRAM</Table.Th>
                <Table.Th>Loaded models</Table.Th>
                <Table.Th>Applied</Table.Th>
                <Table.Th>Lag</Table.Th>
                <Table.Th>Labels</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {list.map((node) => (
                <NodeRow key={node.node} node={node} />
              ))}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      )}
    </>
  );
}

function NodeRow({ node }: { node: Schemas["NodeSummary"] }) {
  const beat = node.heartbeat_age_s ?? null;
  const notes = [
    ...(node.restart_required ?? []).map((s) => `restart Ollama for ${s}`),
    ...(node.last_errors ?? []),
  ];
  return (
    <Table.Tr data-node={node.node}>
      <Table.Td>
        <Text fw={600}>{node.node}</Text>
        <Text size="xs" c="dimmed">
          {node.ollama_url ?? "not registered"}
        </Text>
      </Table.Td>
      <Table.Td>
        <Tooltip label={notes.join("\n") || "no recent errors"} multiline disabled={notes.length === 0}>
          <Badge color={HEALTH_COLOR[node.health] ?? "red"} style={{ overflow: "visible" }}>{node.health}</Badge>
        </Tooltip>
      </Table.Td>
      <Table.Td>{node.ollama_version ?? "–"}</Table.Td>
      <Table.Td>
        <Text c={beat !== null && beat > 30 ? "red" : undefined}>{beat === null ? "–" : `${age(beat)} ago`}</Text>
      </Table.Td>
      <Table.Td>
        {bytes(node.memory_used_bytes)} / {bytes(node.vram_used_bytes)}
        {node.capacity?.memory_bytes ? (
          <Text size="xs" c="dimmed">
            of {bytes(node.capacity.memory_bytes)}
            {node.capacity.gpu_memory_bytes ? ` / ${bytes(node.capacity.gpu_memory_bytes)}` : ""}
          </Text>
        ) : null}
      </Table.Td>
      <Table.Td>
        <Group gap={4}>
          {(node.loaded_models ?? []).map((m) => (
            <Badge key={m} variant="outline" size="sm">
              {m}
            </Badge>
          ))}
          {(node.loaded_models ?? []).length === 0 && <Text c="dimmed">none</Text>}
        </Group>
      </Table.Td>
      <Table.Td>{node.applied_revision ?? "–"}</Table.Td>
      <Table.Td>
        <Text c={node.lag ? "orange" : undefined}>{node.lag ?? "–"}</Text>
      </Table.Td>
      <Table.Td>
        <Text size="xs">{Object.entries(node.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–"}</Text>
      </Table.Td>
    </Table.Tr>
  );
}
