import { Table, Text } from "@mantine/core";
import type { Readiness } from "../../api/types";
import { StatusBadge } from "./StatusBadge";

const LABELS: Record<string, string> = {
  database: "Database",
  broker: "Task broker",
  worker: "Worker",
  monitor: "Monitoring consumer",
};

function label(name: string): string {
  return LABELS[name] ?? name.charAt(0).toUpperCase() + name.slice(1).replaceAll("_", " ");
}

export function ReadinessChecks({ checks }: { checks: Readiness["checks"] }) {
  const rows = Object.entries(checks);
  if (rows.length === 0) {
    return <Text c="dimmed">The server reported no checks.</Text>;
  }
  return (
    <Table verticalSpacing="sm" highlightOnHover>
      <Table.Thead>
        <Table.Tr>
          <Table.Th w="30%">Check</Table.Th>
          <Table.Th w={130}>State</Table.Th>
          <Table.Th>Detail</Table.Th>
        </Table.Tr>
      </Table.Thead>
      <Table.Tbody>
        {rows.map(([name, check]) => (
          <Table.Tr key={name} data-testid={`check-${name}`}>
            <Table.Td fw={500}>{label(name)}</Table.Td>
            <Table.Td>
              <StatusBadge state={check?.ok ? "ready" : "not_ready"} data-testid={`check-${name}-state`} />
            </Table.Td>
            <Table.Td>
              <Text size="sm" c="dimmed" style={{ wordBreak: "break-word" }}>
                {check?.detail || "—"}
              </Text>
            </Table.Td>
          </Table.Tr>
        ))}
      </Table.Tbody>
    </Table>
  );
}
