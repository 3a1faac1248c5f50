// History: the audit log (time, actor, revision, object, message), each change's before and after
// side by side, and rollback of one object or of everything to before a change: a dry run's diff
// first, then the rollback as a new revision.
import { yaml } from "@codemirror/lang-yaml";
import { EditorState } from "@codemirror/state";
import { EditorView } from "@codemirror/view";
import { Badge, Button, Checkbox, Group, Modal, Stack, Table, Text, TextInput } from "@mantine/core";
import { useDebouncedValue } from "@mantine/hooks";
import { notifications } from "@mantine/notifications";
import { keepPreviousData, useQuery, useQueryClient } from "@tanstack/react-query";
import { Fragment, useState } from "react";
import CodeMirrorMerge from "react-codemirror-merge";
import { api, describe, unwrap, type Schemas } from "../api/client";
import { DiffText } from "../components/DiffText";
import { Failure } from "../components/Failure";
import { ScreenHeader } from "../components/Freshness";
import { when } from "../components/format";
import { toYaml } from "../config/yamlcheck";

const PAGE = 25;
const EVERY_S = 5;
const READ_ONLY = [yaml(), EditorView.editable.of(false), EditorState.readOnly.of(true)];
type Record_ = Schemas["HistoryRecord"];

export function HistoryScreen() {
  const [filter, setFilter] = useState("");
  const [object] = useDebouncedValue(filter.trim(), 300);
  const [pages, setPages] = useState<(number | null)[]>([null]); // "before" of each page seen
  const before = pages[pages.length - 1];
  const [kind, name] = object.includes("/") ? object.split("/", 2) : [object || undefined, undefined];
  const history = useQuery({
    queryKey: ["history", kind, name, before],
    queryFn: () =>
      unwrap(api.GET("/api/v1/history", { params: { query: { limit: PAGE, kind, name: name || undefined, before: before ?? undefined } } })),
    refetchInterval: EVERY_S * 1000,
    placeholderData: keepPreviousData,
  });
  const [open, setOpen] = useState<string | null>(null);
  const [rollback, setRollback] = useState<{ record: Record_; whole: boolean } | null>(null);
  const items = history.data?.items ?? [];
  const last = items[items.length - 1];
  return (
    <>
      <ScreenHeader
        title="History"
        freshness={{ revision: items[0]?.revision, updatedAt: history.dataUpdatedAt, error: history.error, every: EVERY_S }}
      >
        <TextInput
          placeholder="kind or kind/name (routes/default-chat)"
          aria-label="filter by object"
          value={filter}
          onChange={(e) => {
            setFilter(e.currentTarget.value);
            setPages([null]);
          }}
          w={300}
        />
      </ScreenHeader>
      <Failure error={history.error} />
      <Table data-testid="history" highlightOnHover>
        <Table.Thead>
          <Table.Tr>
            <Table.Th>When</Table.Th>
            <Table.Th>Actor</Table.Th>
            <Table.Th>Revision</Table.Th>
            <Table.Th>Object</Table.Th>
            <Table.Th>Change</Table.Th>
            <Table.Th>Message</Table.Th>
            <Table.Th />
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {items.map((r) => {
            const key = `${r.epoch}/${r.revision}/${r.kind}/${r.name}`;
            const event = r.kind === "scaling";
            return (
              <Fragment key={key}>
                <Table.Tr data-change={`${r.kind}/${r.name}@${r.revision}`}>
                  <Table.Td><Text size="sm">{when(r.at)}</Text></Table.Td>
                  <Table.Td>{r.actor}</Table.Td>
                  <Table.Td>{r.revision}</Table.Td>
                  <Table.Td>{r.kind}/{r.name}</Table.Td>
                  <Table.Td>
                    <Badge color={r.action === "create" ? "green" : r.action === "delete" ? "red" : "blue"} variant="light">{r.action}</Badge>
                  </Table.Td>
                  <Table.Td><Text size="sm" lineClamp={2}>{r.message || "–"}</Text></Table.Td>
                  <Table.Td>
                    <Group gap={4} wrap="nowrap">
                      <Button size="compact-xs" variant="default" onClick={() => setOpen(open === key ? null : key)}>
                        {open === key ? "Hide" : "Diff"}
                      </Button>
                      {!event && (
                        <>
                          <Button size="compact-xs" variant="light" onClick={() => setRollback({ record: r, whole: false })}>
                            Undo this object
                          </Button>
                          <Button size="compact-xs" variant="light" color="orange" onClick={() => setRollback({ record: r, whole: true })}>
                            Undo everything since
                          </Button>
                        </>
                      )}
                    </Group>
                  </Table.Td>
                </Table.Tr>
                {open === key && (
                  <Table.Tr>
                    <Table.Td colSpan={7}>
                      <Group justify="space-between" mb={4}>
                        <Badge color="gray">before</Badge>
                        <Badge color="blue">after (revision {r.revision})</Badge>
                      </Group>
                      <CodeMirrorMerge orientation="a-b" gutter>
                        <CodeMirrorMerge.Original value={r.before ? toYaml(r.before) : ""} extensions={READ_ONLY} />
                        <CodeMirrorMerge.Modified value={r.after ? toYaml(r.after) : ""} extensions={READ_ONLY} />
                      </CodeMirrorMerge>
                    </Table.Td>
                  </Table.Tr>
                )}
              </Fragment>
            );
          })}
        </Table.Tbody>
      </Table>
      {history.data && items.length === 0 && <Text c="dimmed" mt="sm">No change recorded{object ? ` for ${object}` : ""}.</Text>}
      <Group mt="sm" justify="flex-end" gap="xs">
        <Button variant="default" size="xs" disabled={pages.length === 1} onClick={() => setPages(pages.slice(0, -1))}>Newer</Button>
        <Button variant="default" size="xs" disabled={items.length < PAGE || !last} onClick={() => last && setPages([...pages, last.revision])}>
          Older
        </Button>
      </Group>
      {rollback && <Rollback record={rollback.record} whole={rollback.whole} onClose={() => setRollback(null)} />}
    </>
  );
}

function Rollback({ record, whole, onClose }: { record: Record_; whole: boolean; onClose: () => void }) {
  const queries = useQueryClient();
  const [force, setForce] = useState(false);
  const [busy, setBusy] = useState(false);
  const body = {
    revision: record.revision - 1,
    ...(whole ? {} : { kind: record.kind, name: record.name }),
    epoch: record.epoch,
    force,
    message: whole ? `undo every change since revision ${record.revision}` : `undo revision ${record.revision} of ${record.kind}/${record.name}`,
  };
  const preview = useQuery({
    queryKey: ["rollback-preview", body],
    queryFn: () => unwrap(api.POST("/api/v1/rollback", { body: { ...body, dry_run: true } })),
    retry: false,
  });
  const needsForce = preview.error ? /force/.test(describe(preview.error)) : false;
  async function run() {
    setBusy(true);
    try {
      const done = await unwrap(api.POST("/api/v1/rollback", { body: { ...body, dry_run: false } }));
      notifications.show({ color: "green", message: `Rolled back: ${done.changes.length} object(s) at revision ${done.revision}` });
      await queries.invalidateQueries();
      onClose();
    } catch (error) {
      notifications.show({ color: "red", message: describe(error) });
    } finally {
      setBusy(false);
    }
  }
  const what = whole ? `everything to how it was before revision ${record.revision}` : `${record.kind}/${record.name} to how it was before revision ${record.revision}`;
  return (
    <Modal opened onClose={onClose} title={`Roll back ${what}`} size="xl">
      <Stack>
        <Text size="sm">A dry run first: this is what the rollback would write, as a new revision. Nothing is written until you confirm.</Text>
        <Failure error={preview.error} title="The rollback cannot be done as it is" />
        {needsForce && <Checkbox label="It deletes several objects: I mean it (force)" checked={force} onChange={(e) => setForce(e.currentTarget.checked)} />}
        {preview.data && (
          <>
            <Text size="sm" data-testid="rollback-summary">
              {preview.data.changes.length === 0
                ? "Nothing would change: the configuration already is that way."
                : preview.data.changes.map((c) => `${c.action} ${c.kind}/${c.name}`).join(", ")}
            </Text>
            <DiffText diff={preview.data.diff} testId="rollback-diff" />
          </>
        )}
        <Group justify="flex-end">
          <Button variant="default" onClick={onClose}>Cancel</Button>
          <Button color="orange" onClick={run} loading={busy} disabled={!preview.data || preview.data.changes.length === 0}>
            Roll back
          </Button>
        </Group>
      </Stack>
    </Modal>
  );
}
