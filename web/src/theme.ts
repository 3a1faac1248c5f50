import { Badge, createTheme } from "@mantine/core";

// Keyboard focus is always visible (focusRing "always"), not only for keyboard users Mantine detects.
// Badges keep their whole word in narrow table columns (no "REA…").
export const theme = createTheme({
  primaryColor: "blue",
  focusRing: "always",
  defaultRadius: "sm",
  components: { Badge: Badge.extend({ styles: { root: { overflow: "visible", flexShrink: 0 }, label: { overflow: "visible" } } }) },
});
