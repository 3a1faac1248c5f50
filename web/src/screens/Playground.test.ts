import { afterEach, describe, expect, it, vi } from "vitest";
import { chat } from "./Playground";

afterEach(() => vi.unstubAllGlobals());

function ndjson(lines: object[], status = 200, headers: Record<string, string> = {}) {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const text = lines.map((l) => JSON.stringify(l)).join("\n") + "\n";
      const bytes = new TextEncoder().encode(text);
      controller.enqueue(bytes.slice(0, 17)); // a line cut in two chunks is joined again
      controller.enqueue(bytes.slice(17));
      controller.close();
    },
  });
  return new Response(body, { status, headers: { "Content-Type": "application/x-ndjson", ...headers } });
}

describe("chat", () => {
  it("streams the answer and reads the router's decision", async () => {
    let sent: Request | null = null;
    vi.stubGlobal("fetch", async (input: RequestInfo, init?: RequestInit) => {
      sent = new Request(new URL(String(input), "http://localhost"), init);
      return ndjson(
        [{ message: { content: "Hel" }, done: false }, { message: { content: "lo" }, done: false },
         { message: { content: "" }, done: true, eval_count: 2, eval_duration: 1e9, total_duration: 2e9 }],
        200,
        { "x-route-name": "default-chat", "x-route-model": "llama3.1-8b", "x-route-node": "gpu-1", "x-route-decision-us": "41.5", "x-route-attempts": "1", "x-request-id": "r1" },
      );
    });
    const seen: Record<string, unknown> = {};
    await chat("llmk_k", "chat", "hi", { temperature: 0.1 }, (part) => Object.assign(seen, part), new AbortController().signal);
    expect(seen.text).toBe("Hello");
    expect(seen.decision).toMatchObject({ route: "default-chat", model: "llama3.1-8b", node: "gpu-1", decisionUs: "41.5", attempts: "1" });
    expect(seen.stats).toEqual({ tokens: 2, totalMs: 2000, tokensPerS: 2 });
    expect(seen.done).toBe(true);
    expect(sent!.headers.get("X-Router-Key")).toBe("llmk_k");
    expect(await sent!.json()).toEqual({ model: "chat", messages: [{ role: "user", content: "hi" }], options: { temperature: 0.1 } });
  });

  it("shows the router's refusal and keeps the person signed in", async () => {
    sessionStorage.setItem("llmtune.token", "t");
    vi.stubGlobal("fetch", async () =>
      new Response(JSON.stringify({ title: "Refused by the router", status: 401, detail: "this API key was revoked" }), { status: 401 }),
    );
    const seen: Record<string, unknown> = {};
    await chat("llmk_old", "chat", "hi", {}, (part) => Object.assign(seen, part), new AbortController().signal);
    expect(String(seen.error)).toContain("401 Refused by the router: this API key was revoked");
    expect(sessionStorage.getItem("llmtune.token")).toBe("t");
  });
});
