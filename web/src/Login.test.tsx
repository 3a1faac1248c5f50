import { fireEvent, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Login } from "./Login";
import { renderWithProviders } from "./test/render";

afterEach(() => vi.unstubAllGlobals());

function answerStatus(status: number) {
  vi.stubGlobal("fetch", async () =>
    status === 200
      ? new Response(JSON.stringify({ revision: 3 }), { status, headers: { "Content-Type": "application/json" } })
      : new Response(JSON.stringify({ title: "Unauthorized", status, detail: "unknown or expired token" }), {
          status,
          headers: { "Content-Type": "application/problem+json" },
        }),
  );
}

describe("Login", () => {
  it("keeps a token the API accepts, for this tab only", async () => {
    answerStatus(200);
    const signedIn = vi.fn();
    renderWithProviders(<Login onLogin={signedIn} />);
    fireEvent.change(screen.getByLabelText(/API token/), { target: { value: " llmt_ok " } });
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    await waitFor(() => expect(signedIn).toHaveBeenCalled());
    expect(sessionStorage.getItem("llmtune.token")).toBe("llmt_ok");
    expect(localStorage.length).toBe(0);
  });

  it("says why a token is refused and keeps nothing", async () => {
    answerStatus(401);
    const signedIn = vi.fn();
    renderWithProviders(<Login onLogin={signedIn} />);
    fireEvent.change(screen.getByLabelText(/API token/), { target: { value: "llmt_bad" } });
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect(await screen.findByText(/401 Unauthorized: unknown or expired token/)).toBeTruthy();
    expect(signedIn).not.toHaveBeenCalled();
    expect(sessionStorage.getItem("llmtune.token")).toBeNull();
  });
});
