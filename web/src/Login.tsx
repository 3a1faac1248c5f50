// The sign-in: an API token (llmctl's, or one from 'llmctl token create'), checked against the API
// before it is kept in session storage.
import { Button, Card, Center, PasswordInput, Stack, Text, Title } from "@mantine/core";
import { useState, type FormEvent } from "react";
import { api, describe, session, unwrap } from "./api/client";

export function Login({ onLogin }: { onLogin: () => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await unwrap(api.GET("/api/v1/status", { headers: { Authorization: `Bearer ${token.trim()}` } }));
      session.login(token.trim());
      onLogin();
    } catch (failure) {
      setError(describe(failure));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Center h="100vh">
      <Card withBorder shadow="sm" w={420} padding="xl">
        <form onSubmit={submit}>
          <Stack>
            <Title order={3}>LLM Tuning Service</Title>
            <Text size="sm" c="dimmed">
              Sign in with a control-plane API token. It is kept for this tab only (session storage).
            </Text>
            <PasswordInput
              label="API token"
              placeholder="llmt_…"
              value={token}
              onChange={(e) => setToken(e.currentTarget.value)}
              error={error}
              autoFocus
              required
            />
            <Button type="submit" loading={busy} disabled={!token.trim()}>
              Sign in
            </Button>
          </Stack>
        </form>
      </Card>
    </Center>
  );
}
