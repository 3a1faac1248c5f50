import "@mantine/core/styles.css";
import "@mantine/charts/styles.css";
import "@mantine/notifications/styles.css";
import { MantineProvider } from "@mantine/core";
import { Notifications } from "@mantine/notifications";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { RouterProvider } from "@tanstack/react-router";
import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { ApiError, LOGOUT_EVENT, session } from "./api/client";
import { Login } from "./Login";
import { router } from "./router";
import { theme } from "./theme";

const queries = new QueryClient({
  defaultOptions: {
    queries: {
      retry: (count, error) => !(error instanceof ApiError && error.status < 500) && count < 2,
      refetchOnWindowFocus: true,
    },
  },
});

function App() {
  const [signedIn, setSignedIn] = useState(Boolean(session.token()));
  useEffect(() => {
    const out = () => {
      queries.clear();
      setSignedIn(false);
    };
    window.addEventListener(LOGOUT_EVENT, out);
    return () => window.removeEventListener(LOGOUT_EVENT, out);
  }, []);
  if (!signedIn) return <Login onLogin={() => setSignedIn(true)} />;
  return <RouterProvider router={router} />;
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <MantineProvider theme={theme}>
      <Notifications />
      <QueryClientProvider client={queries}>
        <App />
      </QueryClientProvider>
    </MantineProvider>
  </StrictMode>,
);
