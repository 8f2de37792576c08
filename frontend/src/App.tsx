import { MantineProvider } from "@mantine/core";
import { Notifications } from "@mantine/notifications";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { RouterProvider, type RouterHistory } from "@tanstack/react-router";
import { useState } from "react";
import { createAppRouter } from "./router";
import { theme } from "./theme";

export function createAppQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: { retry: 1, refetchOnWindowFocus: true },
    },
  });
}

interface AppProps {
  /** Tests pass a memory history and their own query client. */
  history?: RouterHistory;
  queryClient?: QueryClient;
}

export function App({ history, queryClient: givenClient }: AppProps) {
  const [queryClient] = useState(() => givenClient ?? createAppQueryClient());
  const [router] = useState(() => createAppRouter(queryClient, history));
  return (
    <MantineProvider theme={theme} defaultColorScheme="light">
      <Notifications position="top-right" />
      <QueryClientProvider client={queryClient}>
        <RouterProvider router={router} />
      </QueryClientProvider>
    </MantineProvider>
  );
}
