import { Box, Code, Text } from "@mantine/core";

/** A unified diff as the API gives it, added lines green and removed ones red. */
export function DiffText({ diff, testId = "unified-diff" }: { diff: string; testId?: string }) {
  if (!diff.trim()) return <Text size="sm" c="dimmed">no change</Text>;
  return (
    <Code block data-testid={testId} style={{ maxHeight: 420, overflow: "auto" }}>
      {diff.split("\n").map((line, i) => {
        const color = line.startsWith("+++") || line.startsWith("---") ? "dimmed" : line.startsWith("+") ? "green" : line.startsWith("-") ? "red" : line.startsWith("@@") ? "blue" : undefined;
        return (
          <Box key={i} c={color} component="div">
            {line || " "}
          </Box>
        );
      })}
    </Code>
  );
}
