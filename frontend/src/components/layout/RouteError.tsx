import { Alert, Button, Center, Stack, Text, Title } from "@mantine/core";
import { Link, type ErrorComponentProps } from "@tanstack/react-router";
import { errorMessage } from "../../api/types";

export function RouteError({ error, reset }: ErrorComponentProps) {
  return (
    <Center mih="60vh" p="md">
      <Alert color="red" title="This page could not be loaded" maw={520} w="100%">
        <Stack gap="sm">
          <Text size="sm">{errorMessage(error)}</Text>
          <Button variant="light" color="red" onClick={reset} w="fit-content">
            Try again
          </Button>
        </Stack>
      </Alert>
    </Center>
  );
}

export function RouteNotFound() {
  return (
    <Center mih="60vh" p="md">
      <Stack align="center" gap="xs">
        <Title order={2}>Page not found</Title>
        <Text c="dimmed">There is nothing at this address.</Text>
        <Button component={Link} to="/" variant="light">
          Go to the System overview
        </Button>
      </Stack>
    </Center>
  );
}
