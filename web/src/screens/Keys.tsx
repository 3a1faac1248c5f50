// Keys and tokens: the router's API keys (tenant, allowed routes and models, priority, limits and
// budgets, last use from the usage buckets) and the control plane's tokens (role, expiry, last
// use): create (the secret shown once), rotate with a grace period, revoke.
import { Badge, Button, Group, Modal, NumberInput, Select, SimpleGrid, Stack, Table, Tabs, TagsInput, Text, TextInput, Title } from "@mantine/core";
import { notifications } from "@mantine/notifications";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { api, describe, unwrap, type Schemas } from "../api/client";
import { Failure } from "../components/Failure";
import { ScreenHeader } from "../components/Freshness";
import { when } from "../components/format";
import { SecretOnce } from "../components/Secret";

const EVERY_S = 10;
const EXPIRY = [
  { value: "", label: "never" },
  { value: String(86_400), label: "1 day" },
  { value: String(30 * 86_400), label: "30 days" },
  { value: String(90 * 86_400), label: "90 days" },
  { value: String(365 * 86_400), label: "1 year" },
];

export function KeysScreen() {
  const [secret, setSecret] = useState<{ title: string; value: string } | null>(null);
  return (
    <>
      <Tabs defaultValue="keys" keepMounted={false}>
        <Tabs.List mb="md">
          <Tabs.Tab value="keys">Router API keys</Tabs.Tab>
          <Tabs.Tab value="tokens">Control-plane tokens</Tabs.Tab>
          <Tabs.Tab value="tenants">Tenant budgets</Tabs.Tab>
        </Tabs.List>
        <Tabs.Panel value="keys"><ApiKeys onSecret={(title, value) => setSecret({ title, value })} /></Tabs.Panel>
        <Tabs.Panel value="tokens"><Tokens onSecret={(title, value) => setSecret({ title, value })} /></Tabs.Panel>
        <Tabs.Panel value="tenants"><Tenants /></Tabs.Panel>
      </Tabs>
      <SecretOnce title={secret?.title ?? ""} secret={secret?.value ?? null} onClose={() => setSecret(null)} />
    </>
  );
}

function limit(value: number | null | undefined): string {
  return value == null ? "∞" : value.toLocaleString();
}

type OnSecret = (title: string, value: string) => void;

function ApiKeys({ onSecret }: { onSecret: OnSecret }) {
  const queries = useQueryClient();
  const keys = useQuery({ queryKey: ["keys"], queryFn: () => unwrap(api.GET("/api/v1/keys")), refetchInterval: EVERY_S * 1000 });
  const usage = useQuery({
    queryKey: ["usage", "key", "30d"],
    queryFn: () => unwrap(api.GET("/api/v1/usage", { params: { query: { group_by: "key", window: "30d" } } })),
    refetchInterval: EVERY_S * 1000,
  });
  const used = new Map((usage.data?.rows ?? []).map((r) => [r.group, r]));
  const [creating, setCreating] = useState(false);
  const [acting, setActing] = useState<{ key: Schemas["ApiKeyPublic"]; action: "rotate" | "revoke" } | null>(null);
  const revoke = useMutation({
    mutationFn: (name: string) => unwrap(api.DELETE("/api/v1/keys/{name}", { params: { path: { name } } })),
    onSuccess: (_d, name) => {
      notifications.show({ color: "green", message: `Revoked key ${name}: the routers refuse it within a second` });
      queries.invalidateQueries({ queryKey: ["keys"] });
    },
  });
  const rotate = useMutation({
    mutationFn: ({ name, grace }: { name: string; grace: number }) =>
      unwrap(api.POST("/api/v1/keys/{name}:rotate", { params: { path: { name } }, body: { grace_s: grace } })),
    onSuccess: (issued) => {
      onSecret(`New secret of key ${issued.name}`, issued.secret);
      queries.invalidateQueries({ queryKey: ["keys"] });
    },
  });
  return (
    <>
      <ScreenHeader title="Router API keys" freshness={{ updatedAt: keys.dataUpdatedAt, error: keys.error ?? usage.error, every: EVERY_S }}>
        <Button onClick={() => setCreating(true)}>Create key</Button>
      </ScreenHeader>
      <Failure error={keys.error} />
      <Failure error={revoke.error ?? rotate.error} title="Not done" />
      <Table.ScrollContainer minWidth={1000}>
        <Table striped data-testid="keys">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Name</Table.Th>
              <Table.Th>Tenant</Table.Th>
              <Table.Th>May use</Table.Th>
              <Table.Th>Limits (req/min, tokens/min, at once)</Table.Th>
              <Table.Th>Budgets (tokens/day, /month)</Table.Th>
              <Table.Th>Last used</Table.Th>
              <Table.Th>Requests (30 d)</Table.Th>
              <Table.Th>Created</Table.Th>
              <Table.Th />
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {(keys.data?.items ?? []).map((key) => {
              const u = used.get(key.name);
              const spec = key.spec;
              return (
                <Table.Tr key={key.name} data-key={key.name}>
                  <Table.Td>
                    <Text fw={600}>{key.name}</Text>
                    <Text size="xs" c="dimmed">{key.prefix}…</Text>
                  </Table.Td>
                  <Table.Td>{spec.tenant} <Badge size="xs" variant="outline">{spec.priority ?? "normal"}</Badge></Table.Td>
                  <Table.Td><Text size="xs">routes {(spec.routes ?? ["*"]).join(", ")}; models {(spec.models ?? ["*"]).join(", ")}</Text></Table.Td>
                  <Table.Td>{limit(spec.limits?.requests_per_minute)} / {limit(spec.limits?.tokens_per_minute)} / {limit(spec.limits?.concurrent)}</Table.Td>
                  <Table.Td>{limit(spec.budgets?.tokens_per_day)} / {limit(spec.budgets?.tokens_per_month)}</Table.Td>
                  <Table.Td>{u?.last_at ? when(u.last_at) : "not in 30 days"}</Table.Td>
                  <Table.Td>{u ? `${u.requests} (${u.total_tokens.toLocaleString()} tokens)` : "0"}</Table.Td>
                  <Table.Td>
                    <Text size="xs">{when(key.created_at)} by {key.created_by}</Text>
                    {key.rotated_at && <Text size="xs" c="dimmed">rotated {when(key.rotated_at)}</Text>}
                    {spec.expires_at && <Text size="xs" c="orange">expires {when(spec.expires_at)}</Text>}
                  </Table.Td>
                  <Table.Td>
                    <Group gap={4} wrap="nowrap">
                      <Button size="compact-xs" variant="light" onClick={() => setActing({ key, action: "rotate" })}>Rotate</Button>
                      <Button size="compact-xs" variant="light" color="red" onClick={() => setActing({ key, action: "revoke" })}>Revoke</Button>
                    </Group>
                  </Table.Td>
                </Table.Tr>
              );
            })}
          </Table.Tbody>
        </Table>
      </Table.ScrollContainer>
      {keys.data && keys.data.items.length === 0 && <Text c="dimmed">No key yet: the routers refuse every request until one exists.</Text>}
      <CreateKey opened={creating} onClose={() => setCreating(false)} onSecret={onSecret} />
      <Confirm
        opened={acting !== null}
        title={acting?.action === "revoke" ? `Revoke key ${acting?.key.name}?` : `Rotate key ${acting?.key.name}?`}
        text={acting?.action === "revoke" ? "Every request with it is refused (401) from now on." : "A new secret is issued; the old one keeps working for the grace period."}
        withGrace={acting?.action === "rotate"}
        danger={acting?.action === "revoke"}
        onClose={() => setActing(null)}
        onConfirm={(grace) => {
          if (!acting) return;
          if (acting.action === "revoke") revoke.mutate(acting.key.name);
          else rotate.mutate({ name: acting.key.name, grace });
          setActing(null);
        }}
      />
    </>
  );
}

function Confirm(props: { opened: boolean; title: string; text: string; withGrace: boolean; danger: boolean; onClose: () => void; onConfirm: (grace: number) => void }) {
  const [grace, setGrace] = useState<number | string>(3600);
  return (
    <Modal opened={props.opened} onClose={props.onClose} title={props.title}>
      <Stack>
        <Text size="sm">{props.text}</Text>
        {props.withGrace && <NumberInput label="Grace (seconds the old secret still works)" value={grace} onChange={setGrace} min={0} max={30 * 86_400} />}
        <Group justify="flex-end">
          <Button variant="default" onClick={props.onClose}>Cancel</Button>
          <Button color={props.danger ? "red" : "blue"} onClick={() => props.onConfirm(Number(grace) || 0)}>
            {props.danger ? "Revoke" : "Rotate"}
          </Button>
        </Group>
      </Stack>
    </Modal>
  );
}

function CreateKey({ opened, onClose, onSecret }: { opened: boolean; onClose: () => void; onSecret: OnSecret }) {
  const queries = useQueryClient();
  const [form, setForm] = useState({ name: "", tenant: "", routes: ["*"], models: ["*"], priority: "normal", rpm: "", tpm: "", concurrent: "", day: "", month: "", expires: "" });
  const set = (field: string) => (value: unknown) => setForm({ ...form, [field]: value });
  const n = (value: string | number) => (value === "" ? null : Number(value));
  const create = useMutation({
    mutationFn: () =>
      unwrap(
        api.POST("/api/v1/keys", {
          body: {
            name: form.name.trim(),
            tenant: form.tenant.trim(),
            routes: form.routes,
            models: form.models,
            priority: form.priority as "high" | "normal" | "low",
            limits: { requests_per_minute: n(form.rpm), tokens_per_minute: n(form.tpm), concurrent: n(form.concurrent) },
            budgets: { tokens_per_day: n(form.day), tokens_per_month: n(form.month) },
            expires_at: form.expires ? new Date(Date.now() + Number(form.expires) * 1000).toISOString() : null,
          },
        }),
      ),
    onSuccess: (issued) => {
      onClose();
      onSecret(`Key ${issued.name} (tenant ${issued.spec.tenant})`, issued.secret);
      queries.invalidateQueries({ queryKey: ["keys"] });
    },
  });
  return (
    <Modal opened={opened} onClose={onClose} title="Create a router API key" size="lg">
      <Stack>
        <SimpleGrid cols={2}>
          <TextInput label="Name" value={form.name} onChange={(e) => set("name")(e.currentTarget.value)} required />
          <TextInput label="Tenant" value={form.tenant} onChange={(e) => set("tenant")(e.currentTarget.value)} required />
          <TagsInput label="Routes it may use (globs)" value={form.routes} onChange={set("routes")} />
          <TagsInput label="Models it may ask for (globs)" value={form.models} onChange={set("models")} />
          <Select label="Priority" data={["high", "normal", "low"]} value={form.priority} onChange={(v) => set("priority")(v ?? "normal")} allowDeselect={false} />
          <Select label="Expires" data={EXPIRY} value={form.expires} onChange={(v) => set("expires")(v ?? "")} allowDeselect={false} />
          <NumberInput label="Requests per minute" placeholder="unlimited" value={form.rpm} onChange={set("rpm")} min={1} />
          <NumberInput label="Tokens per minute" placeholder="unlimited" value={form.tpm} onChange={set("tpm")} min={1} />
          <NumberInput label="Requests at once" placeholder="unlimited" value={form.concurrent} onChange={set("concurrent")} min={1} />
          <NumberInput label="Tokens per day" placeholder="unlimited" value={form.day} onChange={set("day")} min={1} />
          <NumberInput label="Tokens per month" placeholder="unlimited" value={form.month} onChange={set("month")} min={1} />
        </SimpleGrid>
        {create.error && <Text c="red" size="sm">{describe(create.error)}</Text>}
        <Group justify="flex-end">
          <Button variant="default" onClick={onClose}>Cancel</Button>
          <Button onClick={() => create.mutate()} loading={create.isPending} disabled={!form.name.trim() || !form.tenant.trim()}>Create</Button>
        </Group>
      </Stack>
    </Modal>
  );
}

function Tokens({ onSecret }: { onSecret: OnSecret }) {
  const queries = useQueryClient();
  const tokens = useQuery({ queryKey: ["tokens"], queryFn: () => unwrap(api.GET("/api/v1/tokens")), refetchInterval: EVERY_S * 1000 });
  const [name, setName] = useState("");
  const [role, setRole] = useState<string>("viewer");
  const [expires, setExpires] = useState<string>(String(90 * 86_400));
  const [acting, setActing] = useState<{ token: Schemas["TokenPublic"]; action: "rotate" | "revoke" } | null>(null);
  const create = useMutation({
    mutationFn: () =>
      unwrap(api.POST("/api/v1/tokens", { body: { name: name.trim(), role: role as "viewer", expires_in_s: expires ? Number(expires) : null } })),
    onSuccess: (issued) => {
      setName("");
      onSecret(`Token ${issued.name} (${issued.role})`, issued.token);
      queries.invalidateQueries({ queryKey: ["tokens"] });
    },
  });
  const act = useMutation({
    mutationFn: async ({ token, action, grace }: { token: Schemas["TokenPublic"]; action: "rotate" | "revoke"; grace: number }) => {
      const path = { token_id: token.id };
      if (action === "revoke") {
        await unwrap(api.DELETE("/api/v1/tokens/{token_id}", { params: { path } }));
        return null;
      }
      return unwrap(api.POST("/api/v1/tokens/{token_id}:rotate", { params: { path }, body: { grace_s: grace } }));
    },
    onSuccess: (issued) => {
      if (issued) onSecret(`New secret of token ${issued.name}`, issued.token);
      queries.invalidateQueries({ queryKey: ["tokens"] });
    },
  });
  return (
    <>
      <ScreenHeader title="Control-plane tokens" freshness={{ updatedAt: tokens.dataUpdatedAt, error: tokens.error, every: EVERY_S }} />
      <Group align="flex-end" mb="md">
        <TextInput label="New token's name" value={name} onChange={(e) => setName(e.currentTarget.value)} />
        <Select label="Role" data={["viewer", "operator", "admin"]} value={role} onChange={(v) => setRole(v ?? "viewer")} allowDeselect={false} w={130} />
        <Select label="Expires" data={EXPIRY} value={expires} onChange={(v) => setExpires(v ?? "")} allowDeselect={false} w={130} />
        <Button onClick={() => create.mutate()} loading={create.isPending} disabled={!name.trim()}>Create token</Button>
      </Group>
      <Failure error={tokens.error ?? create.error ?? act.error} />
      <Table striped data-testid="tokens">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>Name</Table.Th>
            <Table.Th>Role</Table.Th>
            <Table.Th>Prefix</Table.Th>
            <Table.Th>Created</Table.Th>
            <Table.Th>Expires</Table.Th>
            <Table.Th>Last used</Table.Th>
            <Table.Th />
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {(tokens.data?.items ?? []).map((t) => (
            <Table.Tr key={t.id} data-token={t.name}>
              <Table.Td>{t.name}</Table.Td>
              <Table.Td><Badge variant="light">{t.role}</Badge></Table.Td>
              <Table.Td><Text size="xs">{t.prefix || "–"}</Text></Table.Td>
              <Table.Td><Text size="xs">{when(t.created_at)} by {t.created_by}</Text></Table.Td>
              <Table.Td><Text size="xs">{t.expires_at ? when(t.expires_at) : "never"}</Text></Table.Td>
              <Table.Td><Text size="xs">{t.last_used_at ? when(t.last_used_at) : "never"}</Text></Table.Td>
              <Table.Td>
                {t.revoked ? (
                  <Badge color="red">revoked</Badge>
                ) : (
                  <Group gap={4} wrap="nowrap">
                    <Button size="compact-xs" variant="light" onClick={() => setActing({ token: t, action: "rotate" })}>Rotate</Button>
                    <Button size="compact-xs" variant="light" color="red" onClick={() => setActing({ token: t, action: "revoke" })}>Revoke</Button>
                  </Group>
                )}
              </Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      <Confirm
        opened={acting !== null}
        title={`${acting?.action === "revoke" ? "Revoke" : "Rotate"} token ${acting?.token.name}?`}
        text={acting?.action === "revoke" ? "It stops working at once (a session signed in with it is signed out)." : "A new secret is issued; the old one keeps working for the grace period."}
        withGrace={acting?.action === "rotate"}
        danger={acting?.action === "revoke"}
        onClose={() => setActing(null)}
        onConfirm={(grace) => {
          if (acting) act.mutate({ ...acting, grace });
          setActing(null);
        }}
      />
    </>
  );
}

function Tenants() {
  const queries = useQueryClient();
  const tenants = useQuery({ queryKey: ["tenants"], queryFn: () => unwrap(api.GET("/api/v1/tenants")), refetchInterval: EVERY_S * 1000 });
  const [tenant, setTenant] = useState("");
  const [day, setDay] = useState<number | string>("");
  const [month, setMonth] = useState<number | string>("");
  const save = useMutation({
    mutationFn: () =>
      unwrap(api.PUT("/api/v1/tenants/{tenant}", {
        params: { path: { tenant: tenant.trim() } },
        body: { tenant: tenant.trim(), budgets: { tokens_per_day: day === "" ? null : Number(day), tokens_per_month: month === "" ? null : Number(month) } },
      })),
    onSuccess: () => queries.invalidateQueries({ queryKey: ["tenants"] }),
  });
  return (
    <>
      <Title order={3} mb="xs">Tenant budgets</Title>
      <Text size="sm" c="dimmed" mb="sm">Tokens a tenant's keys may use together per day and month (on top of each key's own budgets).</Text>
      <Group align="flex-end" mb="md">
        <TextInput label="Tenant" value={tenant} onChange={(e) => setTenant(e.currentTarget.value)} />
        <NumberInput label="Tokens per day" placeholder="unlimited" value={day} onChange={setDay} min={1} />
        <NumberInput label="Tokens per month" placeholder="unlimited" value={month} onChange={setMonth} min={1} />
        <Button onClick={() => save.mutate()} loading={save.isPending} disabled={!tenant.trim()}>Save budget</Button>
      </Group>
      <Failure error={tenants.error ?? save.error} />
      <Table striped>
        <Table.Thead>
          <Table.Tr><Table.Th>Tenant</Table.Th><Table.Th>Tokens per day</Table.Th><Table.Th>Tokens per month</Table.Th></Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {(tenants.data?.items ?? []).map((t) => (
            <Table.Tr key={t.tenant}>
              <Table.Td>{t.tenant}</Table.Td>
              <Table.Td>{limit(t.budgets.tokens_per_day)}</Table.Td>
              <Table.Td>{limit(t.budgets.tokens_per_month)}</Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
    </>
  );
}
