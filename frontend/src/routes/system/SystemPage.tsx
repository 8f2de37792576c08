import { Alert, Card, Group, SimpleGrid, Skeleton, Stack, Text, Title } from "@mantine/core";
import { useQuery } from "@tanstack/react-query";
import { meQuery } from "../../api/session";
import { errorMessage } from "../../api/types";
import { ReadinessChecks } from "../../components/system/ReadinessChecks";
import { SignedInCard } from "../../components/system/SignedInCard";
import { StatusBadge, type ReadyState } from "../../components/system/StatusBadge";
import { healthQuery, readinessQuery } from "./queries";

function formatTime(ms: number): string {
  return ms ? new Date(ms).toLocaleTimeString() : "—";
}

export function SystemPage() {
  const me = useQuery(meQuery);
  const health = useQuery(healthQuery);
  const readiness = useQuery(readinessQuery);

  // A failed poll means the server did not answer: say so rather than show the last good answer as current.
  const overall: ReadyState = readiness.isError
    ? "unreachable"
    : readiness.data
      ? readiness.data.status === "ready"
        ? "ready"
        : "not_ready"
      : "checking";
  const live: ReadyState = health.isError
    ? "unreachable"
    : health.data
      ? health.data.status === "ok"
        ? "ready"
        : "not_ready"
      : "checking";

  return (
    <Stack gap="lg" maw={1100}>
      <Group justify="space-between" align="flex-end">
        <Stack gap={2}>
          <Title order={2}>System</Title>
          <Text c="dimmed" size="sm">
            Health of this Konan installation, refreshed every 5 seconds.
          </Text>
        </Stack>
      </Group>

      <SimpleGrid cols={{ base: 1, md: 2 }} spacing="lg">
        <Card withBorder padding="lg" data-testid="platform-card">
          <Stack gap="md">
            <Title order={4}>Platform</Title>
            <Group justify="space-between">
              <Text>Readiness</Text>
              <StatusBadge state={overall} size="lg" data-testid="readiness-status" />
            </Group>
            <Group justify="space-between">
              <Text>Liveness</Text>
              <StatusBadge
                state={live}
                label={live === "ready" ? "alive" : undefined}
                data-testid="liveness-status"
              />
            </Group>
            <Group justify="space-between">
              <Text>Version</Text>
              <Text ff="monospace" data-testid="server-version">
                {health.data?.version ?? "—"}
              </Text>
            </Group>
            <Group justify="space-between">
              <Text>Last checked</Text>
              <Text size="sm" c="dimmed">
                {formatTime(readiness.dataUpdatedAt)}
              </Text>
            </Group>
          </Stack>
        </Card>

        {me.data ? (
          <SignedInCard me={me.data} />
        ) : (
          <Card withBorder padding="lg">
            <Skeleton h={120} />
          </Card>
        )}
      </SimpleGrid>

      <Card withBorder padding="lg" data-testid="readiness-card">
        <Stack gap="md">
          <Title order={4}>Readiness checks</Title>
          {readiness.isError && (
            <Alert color="gray" title="The server did not answer /readyz">
              {errorMessage(readiness.error)}
              {readiness.data ? " — showing the last answer." : ""}
            </Alert>
          )}
          {readiness.data ? (
            <ReadinessChecks checks={readiness.data.checks} />
          ) : readiness.isPending ? (
            <Skeleton h={160} />
          ) : null}
        </Stack>
      </Card>
    </Stack>
  );
}
