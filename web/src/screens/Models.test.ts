import { describe, expect, it } from "vitest";
import { tuneBody } from "./Models";

describe("tuneBody", () => {
  it("sends only what changed, and unsets what was cleared", () => {
    const body = tuneBody("chat", { temperature: 0.7, num_ctx: 4096 }, { temperature: 0.2, num_ctx: "" , seed: 7 }, "5m", "");
    expect(body).toEqual({ model: "chat", options: { temperature: 0.2, seed: 7 }, unset: ["num_ctx"], keep_alive: "5m", message: "tuned in the web UI" });
  });

  it("is empty when nothing changed", () => {
    const body = tuneBody("chat", { temperature: 0.7 }, { temperature: 0.7 }, "1h", "1h");
    expect(body.options).toEqual({});
    expect(body.unset).toEqual([]);
    expect("keep_alive" in body).toBe(false);
  });
});
