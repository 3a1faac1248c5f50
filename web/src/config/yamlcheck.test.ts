import { describe, expect, it } from "vitest";
import { check, toYaml, validator } from "./yamlcheck";

const schema = validator({
  type: "object",
  additionalProperties: false,
  required: ["kind", "metadata", "spec"],
  properties: {
    kind: { const: "Model" },
    metadata: { type: "object", required: ["name"], properties: { name: { type: "string", pattern: "^[a-z0-9-]+$" }, revision: {} } },
    spec: {
      type: "object",
      additionalProperties: false,
      properties: { context_window: { type: "integer", minimum: 128 }, ollama_tag: { type: "string" } },
    },
  },
});

describe("check", () => {
  it("accepts a valid document and gives its value", () => {
    const result = check("kind: Model\nmetadata:\n  name: chat\nspec:\n  context_window: 8192\n", schema);
    expect(result.problems).toEqual([]);
    expect(result.value).toEqual({ kind: "Model", metadata: { name: "chat" }, spec: { context_window: 8192 } });
  });

  it("places schema errors on the line at fault", () => {
    const text = "kind: Model\nmetadata:\n  name: chat\nspec:\n  context_window: 64\n  colour: red\n";
    const lines = check(text, schema).problems.map((p): [number, string] => [p.line, p.message]);
    expect(lines).toContainEqual([5, expect.stringContaining("spec.context_window")]);
    expect(lines).toContainEqual([6, "spec.colour: not a field here (a typo?)"]);
  });

  it("reports YAML syntax errors with their line", () => {
    const problems = check("kind: Model\nmetadata: [\n", schema).problems;
    expect(problems.length).toBeGreaterThan(0);
    expect(problems[0].line).toBeGreaterThanOrEqual(2);
  });

  it("writes documents without the server's revision", () => {
    expect(toYaml({ kind: "Model", metadata: { name: "chat", revision: 9 }, spec: {} })).toBe("kind: Model\nmetadata:\n  name: chat\nspec: {}\n");
  });
});
