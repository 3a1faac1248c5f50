import { createTheme } from "@mantine/core";

// Keyboard focus is always visible (focusRing "always"), not only for keyboard users Mantine detects.
export const theme = createTheme({ primaryColor: "blue", focusRing: "always", defaultRadius: "sm" });
