import { Badge, type BadgeProps } from "@mantine/core";

export type ReadyState = "ready" | "not_ready" | "unreachable" | "checking";

const LOOK: Record<ReadyState, { color: string; label: string }> = {
  ready: { color: "teal", label: "ready" },
  not_ready: { color: "red", label: "not ready" },
  unreachable: { color: "gray", label: "unreachable" },
  checking: { color: "blue", label: "checking…" },
};

interface StatusBadgeProps extends Omit<BadgeProps, "color" | "children"> {
  state: ReadyState;
  /** Overrides the word shown for the state (e.g. "alive" for liveness). */
  label?: string;
  "data-testid"?: string;
}

/** One look for every ready/not-ready answer on the dashboard. */
export function StatusBadge({ state, label: givenLabel, ...props }: StatusBadgeProps) {
  const { color, label } = LOOK[state];
  return (
    <Badge color={color} variant="light" data-state={state} {...props}>
      {givenLabel ?? label}
    </Badge>
  );
}
