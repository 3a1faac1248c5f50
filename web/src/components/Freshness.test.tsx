import { screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { renderWithProviders } from "../test/render";
import { age, bytes } from "./format";
import { Freshness } from "./Freshness";

describe("Freshness", () => {
  it("shows the revision and how long ago the data came", () => {
    renderWithProviders(<Freshness revision={42} updatedAt={Date.now() - 4000} every={2} />);
    expect(screen.getByTestId("revision").textContent).toBe("revision 42");
    expect(screen.getByTestId("refreshed").textContent).toBe("refreshed 4 s ago");
  });

  it("says stale when the data is old or the last refresh failed", () => {
    renderWithProviders(<Freshness revision={7} updatedAt={Date.now() - 60_000} every={2} error={new Error("store down")} />);
    expect(screen.getByTestId("refreshed").textContent).toBe("refreshed 60 s ago — stale: store down");
  });
});

describe("format", () => {
  it("reads bytes and ages as people write them", () => {
    expect(bytes(13 * 1024 ** 3)).toBe("13 GB");
    expect(bytes(1536)).toBe("1.5 KB");
    expect(age(0.2)).toBe("now");
    expect(age(3600)).toBe("60 min");
  });
});
