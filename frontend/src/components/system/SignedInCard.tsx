import { Badge, Card, Group, Stack, Table, Text, Title } from "@mantine/core";
import type { Me } from "../../api/types";

const ROLE_COLOR: Record<string, string> = {
  viewer: "gray",
  maintainer: "blue",
  approver: "grape",
  owner: "orange",
};

export function SignedInCard({ me }: { me: Me }) {
  return (
    <Card withBorder padding="lg" data-testid="signed-in-card">
      <Stack gap="md">
        <Title order={4}>Signed in as</Title>
        <Group gap="sm">
          <Text size="xl" fw={600} data-testid="signed-in-username">
            {me.username}
          </Text>
          {me.is_admin ? (
            <Badge color="indigo" variant="filled" data-testid="account-kind">
              admin
            </Badge>
          ) : (
            <Badge color="gray" variant="outline" data-testid="account-kind">
              user
            </Badge>
          )}
        </Group>
        {me.projects.length === 0 ? (
          <Text size="sm" c="dimmed">
            {me.is_admin ? "Admins can manage every project." : "No project roles yet."}
          </Text>
        ) : (
          <Table verticalSpacing={6} data-testid="project-roles">
            <Table.Thead>
              <Table.Tr>
                <Table.Th>Project</Table.Th>
                <Table.Th>Role</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {me.projects.map((p) => (
                <Table.Tr key={p.name}>
                  <Table.Td>{p.name}</Table.Td>
                  <Table.Td>
                    <Badge variant="light" color={ROLE_COLOR[p.role] ?? "gray"}>
                      {p.role}
                    </Badge>
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        )}
      </Stack>
    </Card>
  );
}
