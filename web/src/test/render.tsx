import { MantineProvider } from "@mantine/core";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render } from "@testing-library/react";
import type { ReactNode } from "react";
import { vi } from "vitest";
import { theme } from "../theme";

export function renderWithProviders(ui: ReactNode) {
  const queries = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  return render(
    <MantineProvider theme={theme}>
      <QueryClientProvider client={queries}>{ui}</QueryClientProvider>
    </MantineProvider>,
  );
}

/** Answers fetch with ``answers[path]`` (JSON, 200) and records what was asked. */
export function answer(answers: Record<string, unknown>) {
  const asked: Request[] = [];
  vi.stubGlobal("fetch", async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = input instanceof Request ? input : new Request(String(input), init);
    asked.push(request);
    const path = new URL(request.url).pathname;
    const body = answers[path];
    if (body === undefined) return new Response(JSON.stringify({ title: "Not Found", detail: path }), { status: 404 });
    return new Response(JSON.stringify(body), { status: 200, headers: { "Content-Type": "application/json" } });
  });
  return asked;
}
