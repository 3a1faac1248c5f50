import { Alert, Button, Code, CopyButton, Group, Modal, Stack, Text } from "@mantine/core";

/** A secret the API gives once (a new key, token or rotation): shown here and nowhere else again. */
export function SecretOnce({ title, secret, onClose }: { title: string; secret: string | null; onClose: () => void }) {
  return (
    <Modal opened={secret !== null} onClose={onClose} title={title} size="lg" closeOnClickOutside={false}>
      <Stack>
        <Alert color="yellow">It is shown only now: copy it to where it is used. The server keeps only a keyed hash of it.</Alert>
        <Code block data-testid="secret">{secret}</Code>
        <Group justify="space-between">
          <CopyButton value={secret ?? ""}>
            {({ copied, copy }) => <Button variant="light" onClick={copy}>{copied ? "Copied" : "Copy"}</Button>}
          </CopyButton>
          <Button onClick={onClose}>I have stored it</Button>
        </Group>
        <Text size="xs" c="dimmed">Lost it? Rotate to get a new one; the old one can keep working for a grace period.</Text>
      </Stack>
    </Modal>
  );
}
