import { Center, Paper, Stack, Text, Title } from "@mantine/core";
import { useQueryClient } from "@tanstack/react-query";
import { useNavigate, useRouter, useSearch } from "@tanstack/react-router";
import { $api } from "../../api/client";
import { meQuery } from "../../api/session";
import { errorMessage } from "../../api/types";
import { LoginForm } from "../../components/auth/LoginForm";

export function LoginPage() {
  const { redirect } = useSearch({ from: "/login" });
  const navigate = useNavigate();
  const router = useRouter();
  const queryClient = useQueryClient();

  const login = $api.useMutation("post", "/api/v1/auth/login", {
    onSuccess: async () => {
      // The server has set the session cookie; load the user before entering the app.
      await queryClient.fetchQuery({ ...meQuery, staleTime: 0 });
      // `redirect` is a same-site path checked by validateSearch; it may carry its own query string.
      if (redirect) router.history.push(redirect);
      else await navigate({ to: "/" });
    },
  });

  return (
    <Center mih="100vh" bg="gray.0" p="md">
      <Paper withBorder shadow="sm" p="xl" w="100%" maw={400}>
        <Stack gap="lg">
          <Stack gap={4}>
            <Title order={2}>Sign in to Konan</Title>
            <Text size="sm" c="dimmed">
              Model registry, deployments and monitoring
            </Text>
          </Stack>
          <LoginForm
            onSubmit={(body) => login.mutate({ body })}
            submitting={login.isPending}
            error={login.isError ? errorMessage(login.error, "Could not sign in") : null}
          />
        </Stack>
      </Paper>
    </Center>
  );
}
