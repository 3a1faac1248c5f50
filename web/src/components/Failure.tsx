import { Alert } from "@mantine/core";
import { describe } from "../api/client";

/** An error the person can act on: the API's problem detail, in place of the data it stopped. */
export function Failure({ error, title = "Could not load" }: { error: unknown; title?: string }) {
  if (!error) return null;
  return (
    <Alert color="red" title={title} data-testid="failure" mb="sm">
      {describe(error)}
    </Alert>
  );
}
