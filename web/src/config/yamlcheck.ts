// A configuration document as YAML text: parsed, checked against its kind's JSON Schema (the one
// GET /api/v1/schemas/{kind} serves, validated without eval so the page's CSP holds), and each
// problem placed on the text so the editor can underline it.
import { Validator, type OutputUnit } from "@cfworker/json-schema";
import { LineCounter, parseDocument, stringify, type Node } from "yaml";

export interface Problem {
  from: number;
  to: number;
  line: number;
  message: string;
}

export interface Checked {
  value: unknown;
  problems: Problem[];
}

/** A document as people read and write it: kind, metadata, spec; without the server-owned revision. */
export function toYaml(doc: unknown): string {
  const copy = structuredClone(doc) as { metadata?: { revision?: unknown } };
  if (copy && typeof copy === "object" && copy.metadata) delete copy.metadata.revision;
  return stringify(copy, { lineWidth: 0 });
}

export function validator(schema: object): Validator {
  return new Validator(schema as never, "2020-12", false);
}

const WRAPPERS = new Set(["properties", "$ref", "allOf", "anyOf", "oneOf", "items", "prefixItems", "additionalProperties", "discriminator"]);

function pathOf(location: string): string[] {
  return location.replace(/^#\/?/, "").split("/").filter(Boolean).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function messageOf(unit: OutputUnit): string {
  const where = pathOf(unit.instanceLocation).join(".") || "the document";
  if (unit.keyword === "false") return `${where}: not a field here (a typo?)`;
  return `${where}: ${unit.error.replace(/^Instance /, "").replace(/^Property /, "")}`;
}

/** The schema errors worth showing: the innermost ones, one per place. */
function leaves(errors: OutputUnit[]): OutputUnit[] {
  const useful = errors.filter((e) => !WRAPPERS.has(e.keyword));
  const chosen = (useful.length ? useful : errors).filter(
    (e) => !(useful.length ? useful : errors).some((o) => o !== e && o.instanceLocation.startsWith(`${e.instanceLocation}/`)),
  );
  const seen = new Set<string>();
  return chosen.filter((e) => {
    const key = `${e.instanceLocation} ${e.keyword}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

export function check(text: string, schema: Validator | null): Checked {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const problems: Problem[] = doc.errors.map((e) => ({
    from: e.pos[0],
    to: Math.max(e.pos[1], e.pos[0] + 1),
    line: lines.linePos(e.pos[0]).line,
    message: e.message.split("\n")[0],
  }));
  if (problems.length) return { value: undefined, problems };
  const value = doc.toJS();
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { value, problems: [{ from: 0, to: Math.max(1, text.length), line: 1, message: "a document is a mapping: kind, metadata, spec" }] };
  }
  if (!schema) return { value, problems };
  const result = schema.validate(value);
  for (const unit of leaves(result.errors)) {
    let path = pathOf(unit.instanceLocation);
    let node = path.length ? (doc.getIn(path, true) as Node | undefined) : (doc.contents as Node | undefined);
    while (!node?.range && path.length) {
      path = path.slice(0, -1); // a missing field: point at the mapping that should hold it
      node = path.length ? (doc.getIn(path, true) as Node | undefined) : (doc.contents as Node | undefined);
    }
    const [start, end] = node?.range ?? [0, Math.max(1, text.length)];
    problems.push({ from: start, to: Math.max(end, start + 1), line: lines.linePos(start).line, message: messageOf(unit) });
  }
  return { value, problems };
}
