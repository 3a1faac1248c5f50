import { screen, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { answer, renderWithProviders } from "../test/render";
import { FleetScreen } from "./Fleet";

afterEach(() => vi.unstubAllGlobals());

const node = (name: string, health: string) => ({
  node: name, health, labels: { pool: "a" }, ollama_url: `http://${name}:11434/`, applied_revision: 9, lag: 1,
  ollama_version: "0.12.6", loaded_models: ["llama3.1:8b"], memory_used_bytes: 5 * 1024 ** 3, vram_used_bytes: 4 * 1024 ** 3,
  heartbeat_age_s: 2, restart_required: [], last_errors: [],
});

describe("Fleet", () => {
  it("lists every node with its health, version, memory, models and lag", async () => {
    sessionStorage.setItem("llmtune.token", "t");
    const asked = answer({ "/api/v1/nodes": { revision: 10, generated_at: "2026-12-05T20:00:00Z", nodes: [node("gpu-1", "ready"), node("gpu-2", "ollama-unreachable")] } });
    renderWithProviders(<FleetScreen />);
    expect(await screen.findByText("2 nodes, 1 ready")).toBeTruthy();
    const row = screen.getByText("gpu-2").closest("tr")!;
    expect(within(row).getByText("ollama-unreachable")).toBeTruthy();
    expect(within(row).getByText("5.0 GB / 4.0 GB")).toBeTruthy();
    expect(within(row).getByText("llama3.1:8b")).toBeTruthy();
    expect(screen.getByTestId("revision").textContent).toBe("revision 10");
    expect(asked[0].headers.get("Authorization")).toBe("Bearer t");
  });
});
