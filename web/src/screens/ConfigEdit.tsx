// One configuration object as YAML: edited with its kind's JSON Schema checked as you type, the
// change reviewed as a diff against the live revision, saved with If-Match (If-None-Match: * for a
// new one). When someone else saved first, the 409 shows who and their version against yours.
import { yaml } from "@codemirror/lang-yaml";
import { lintGutter, linter, type Diagnostic } from "@codemirror/lint";
import { EditorState } from "@codemirror/state";
import { EditorView } from "@codemirror/view";
import { Alert, Badge, Button, Group, Modal, Stack, Text, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { Link, useNavigate, useParams } from "@tanstack/react-router";
import CodeMirror from "@uiw/react-codemirror";
import { useEffect, useMemo, useState } from "react";
import CodeMirrorMerge from "react-codemirror-merge";
import { api, ApiError, raw, unwrap } from "../api/client";
import { Failure } from "../components/Failure";
import { Freshness } from "../components/Freshness";
import { kindOf, template } from "../config/kinds";
import { check, toYaml, validator } from "../config/yamlcheck";

interface Live {
  doc: Record<string, unknown>;
  revision: number;
}

async function readDoc(kind: string, name: string): Promise<Live> {
  const response = await raw(`/api/v1/config/${kind}/${encodeURIComponent(name)}`);
  const doc = (await response.json()) as Record<string, unknown> & { metadata: { revision: number } };
  return { doc, revision: doc.metadata.revision };
}

const READ_ONLY = [EditorView.editable.of(false), EditorState.readOnly.of(true)];

interface Conflict {
  theirs: string;
  revision: number;
  who: string;
}

export function ConfigEditScreen() {
  const { kind, name } = useParams({ from: "/config/$kind/$name" });
  const creating = name === "new";
  const navigate = useNavigate();
  const queries = useQueryClient();
  const schema = useQuery({
    queryKey: ["schema", kind],
    queryFn: () => unwrap(api.GET("/api/v1/schemas/{kind}", { params: { path: { kind } } })),
    staleTime: Infinity,
  });
  const live = useQuery({ queryKey: ["config", kind, name], queryFn: () => readDoc(kind, name), enabled: !creating });
  const [base, setBase] = useState<string | null>(creating ? "" : null);
  const [revision, setRevision] = useState<number | null>(null);
  const [text, setText] = useState<string | null>(creating ? template(kind) : null);
  const [reviewing, setReviewing] = useState(false);
  const [conflict, setConflict] = useState<Conflict | null>(null);
  const [saving, setSaving] = useState(false);
  const [failure, setFailure] = useState<unknown>(null);
  const [deleting, setDeleting] = useState(false);

  useEffect(() => {
    if (live.data && text === null) {
      const yamlText = toYaml(live.data.doc);
      setBase(yamlText);
      setText(yamlText);
      setRevision(live.data.revision);
    }
  }, [live.data, text]);

  const check_ = useMemo(() => (schema.data ? validator(schema.data) : null), [schema.data]);
  const checked = useMemo(() => check(text ?? "", check_), [text, check_]);
  const lint = useMemo(
    () =>
      linter((view): Diagnostic[] =>
        check(view.state.doc.toString(), check_).problems.map((p) => ({ from: p.from, to: p.to, severity: "error", message: p.message })),
      ),
    [check_],
  );
  const changed = text !== null && text !== base;
  const newer = !creating && live.data && revision !== null && live.data.revision > revision && !conflict;

  async function save(over: number | null) {
    setSaving(true);
    setFailure(null);
    const doc = checked.value as { metadata?: { name?: string } };
    const target = doc.metadata?.name ?? name;
    const headers: Record<string, string> = over === null ? { "If-None-Match": "*" } : { "If-Match": `"${over}"` };
    try {
      const response = await raw(`/api/v1/config/${kind}/${encodeURIComponent(target)}`, {
        method: "PUT",
        headers: { ...headers, "Content-Type": "application/json" },
        body: JSON.stringify(doc),
      });
      const saved = (await response.json()) as { metadata: { revision: number } };
      notifications.show({ color: "green", message: `Saved ${kind}/${target} at revision ${saved.metadata.revision}` });
      setConflict(null);
      setReviewing(false);
      setBase(toYaml(saved));
      setText(toYaml(saved));
      setRevision(saved.metadata.revision);
      await queries.invalidateQueries({ queryKey: ["config", kind] });
      if (creating || target !== name) navigate({ to: "/config/$kind/$name", params: { kind, name: target } });
    } catch (error) {
      if (error instanceof ApiError && error.status === 409 && !creating) {
        const latest = await readDoc(kind, target);
        const last = await unwrap(
          api.GET("/api/v1/config/{kind}/{name}/history", { params: { path: { kind, name: target }, query: { limit: 1 } } }),
        ).catch(() => null);
        const record = last?.items[0];
        const who = record ? `${record.actor}${record.message ? ` ("${record.message}")` : ""}` : "someone";
        setConflict({ theirs: toYaml(latest.doc), revision: latest.revision, who });
      } else {
        setFailure(error);
      }
    } finally {
      setSaving(false);
    }
  }

  async function remove() {
    setDeleting(false);
    try {
      await raw(`/api/v1/config/${kind}/${encodeURIComponent(name)}`, { method: "DELETE", headers: { "If-Match": `"${revision}"` } });
      notifications.show({ color: "green", message: `Deleted ${kind}/${name}` });
      await queries.invalidateQueries({ queryKey: ["config", kind] });
      navigate({ to: "/config/$kind", params: { kind } });
    } catch (error) {
      setFailure(error);
    }
  }

  const label = kindOf(kind)?.kind ?? kind;
  return (
    <>
      <Group justify="space-between" mb="sm" wrap="wrap">
        <div>
          <Group gap="xs">
            <Link to="/config/$kind" params={{ kind }}>{kindOf(kind)?.label ?? kind}</Link>
            <Text>/</Text>
            <Title order={2}>{creating ? `New ${label}` : name}</Title>
          </Group>
          {!creating && <Freshness revision={revision} updatedAt={live.dataUpdatedAt} error={live.error} every={30} />}
        </div>
        <Group gap="xs">
          {!creating && (
            <Button color="red" variant="light" onClick={() => setDeleting(true)} disabled={revision === null}>
              Delete
            </Button>
          )}
          {reviewing ? (
            <>
              <Button variant="default" onClick={() => setReviewing(false)}>Back to editing</Button>
              <Button onClick={() => save(creating ? null : revision)} loading={saving} disabled={Boolean(conflict)}>
                {creating ? "Create" : `Save (If-Match revision ${revision})`}
              </Button>
            </>
          ) : (
            <Button onClick={() => setReviewing(true)} disabled={!changed || checked.problems.length > 0}>
              Review changes
            </Button>
          )}
        </Group>
      </Group>
      <Failure error={live.error ?? schema.error} />
      <Failure error={failure} title="Not saved" />
      {newer && (
        <Alert color="yellow" mb="sm">
          The store has a newer revision ({live.data?.revision}) than the one you are editing ({revision}): saving will be refused.
        </Alert>
      )}
      {conflict && (
        <Alert color="red" title="Conflict: someone else changed it" mb="sm" data-testid="conflict">
          <Stack gap="xs">
            <Text size="sm">
              {kind}/{name} was changed by {conflict.who} at revision {conflict.revision}, after revision {revision} you started
              from. Nothing of yours was saved. Below: their version (left) against yours (right).
            </Text>
            <Group gap="xs">
              <Button
                size="xs"
                variant="default"
                onClick={() => {
                  setBase(conflict.theirs);
                  setText(conflict.theirs);
                  setRevision(conflict.revision);
                  setConflict(null);
                  setReviewing(false);
                }}
              >
                Discard mine, load theirs
              </Button>
              <Button
                size="xs"
                color="red"
                onClick={() => {
                  setBase(conflict.theirs);
                  setRevision(conflict.revision);
                  setConflict(null);
                  setReviewing(true);
                }}
              >
                Keep mine: review it against theirs
              </Button>
            </Group>
          </Stack>
        </Alert>
      )}
      {text === null ? (
        <Text c="dimmed">loading…</Text>
      ) : reviewing || conflict ? (
        <Stack gap={4} data-testid="diff">
          <Group justify="space-between">
            <Badge color="gray">{conflict ? `theirs (revision ${conflict.revision})` : creating ? "nothing yet" : `live (revision ${revision})`}</Badge>
            <Badge color="blue">yours</Badge>
          </Group>
          <CodeMirrorMerge orientation="a-b" highlightChanges gutter>
            <CodeMirrorMerge.Original value={conflict ? conflict.theirs : (base ?? "")} extensions={[yaml(), ...READ_ONLY]} />
            <CodeMirrorMerge.Modified value={text} extensions={[yaml(), ...READ_ONLY]} />
          </CodeMirrorMerge>
        </Stack>
      ) : (
        <Stack gap={4}>
          <CodeMirror
            value={text}
            onChange={setText}
            extensions={[yaml(), lint, lintGutter()]}
            minHeight="420px"
            aria-label={`${kind} YAML`}
            data-testid="yaml-editor"
          />
          <Text size="sm" c={checked.problems.length ? "red" : "dimmed"} data-testid="schema-check">
            {checked.problems.length
              ? checked.problems.map((p) => `line ${p.line}: ${p.message}`).join("; ")
              : check_
                ? `valid against the ${label} schema${changed ? "" : " (unchanged)"}`
                : "loading the schema…"}
          </Text>
        </Stack>
      )}
      <Modal opened={deleting} onClose={() => setDeleting(false)} title={`Delete ${kind}/${name}?`}>
        <Text size="sm" mb="md">
          Deleted at the next revision (only if it is still at revision {revision}). History keeps it: you can roll it back.
        </Text>
        <Group justify="flex-end">
          <Button variant="default" onClick={() => setDeleting(false)}>Cancel</Button>
          <Button color="red" onClick={remove}>Delete</Button>
        </Group>
      </Modal>
    </>
  );
}
