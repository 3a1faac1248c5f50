// The configuration kinds as the API names them (plural, in URLs) and as documents name them.
export const KINDS = [
  { plural: "models", kind: "Model", label: "Models" },
  { plural: "routes", kind: "Route", label: "Routes" },
  { plural: "rag", kind: "RagCollection", label: "RAG collections" },
  { plural: "experiments", kind: "Experiment", label: "Experiments" },
  { plural: "nodepools", kind: "NodePool", label: "Node pools" },
  { plural: "classifiers", kind: "Classifier", label: "Classifiers" },
] as const;

export type Plural = (typeof KINDS)[number]["plural"];

export function kindOf(plural: string) {
  return KINDS.find((k) => k.plural === plural);
}

/** A new object's starting text: what every kind needs, for the schema check to guide the rest. */
export function template(plural: string): string {
  const kind = kindOf(plural)?.kind ?? "Model";
  const specs: Record<string, string> = {
    Model: "  ollama_tag: llama3.2:3b\n  capabilities: [chat]\n  context_window: 8192\n",
    Route: "  match: {}\n  targets:\n    - model: llama3.1-8b\n",
    RagCollection: "  collection: docs\n  embedding_model: nomic-embed-text\n",
    Experiment: "  route: default-chat\n  variants:\n    - {name: a, model: llama3.1-8b}\n    - {name: b, model: qwen2.5-coder-7b}\n",
    NodePool: "  node_selector: {pool: gpu}\n",
    Classifier: "  bits: 13\n  classes: [chat, code]\n  weights: ''\n  bias: [0, 0]\n",
  };
  return `kind: ${kind}\nmetadata:\n  name: new-${plural === "rag" ? "collection" : plural.replace(/s$/, "")}\n  labels: {}\nspec:\n${specs[kind]}`;
}
