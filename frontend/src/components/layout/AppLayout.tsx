import { AppShell, Burger, Button, Group, Text, Title } from "@mantine/core";
import { useDisclosure } from "@mantine/hooks";
import { notifications } from "@mantine/notifications";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { Outlet, useNavigate } from "@tanstack/react-router";
import { $api } from "../../api/client";
import { forgetSession, meQuery } from "../../api/session";
import { errorMessage } from "../../api/types";
import { RouterNavLink } from "./NavLink";

export function AppLayout() {
  const [navOpen, { toggle, close }] = useDisclosure(false);
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const { data: me } = useQuery(meQuery);

  const logout = $api.useMutation("post", "/api/v1/auth/logout", {
    onSuccess: async () => {
      forgetSession(queryClient);
      await navigate({ to: "/login" });
    },
    onError: (error) => {
      notifications.show({ color: "red", title: "Could not log out", message: errorMessage(error) });
    },
  });

  return (
    <AppShell
      header={{ height: 56 }}
      navbar={{ width: 220, breakpoint: "sm", collapsed: { mobile: !navOpen } }}
      padding="lg"
    >
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between" wrap="nowrap">
          <Group gap="sm" wrap="nowrap">
            <Burger opened={navOpen} onClick={toggle} hiddenFrom="sm" size="sm" aria-label="Toggle navigation" />
            <Title order={3} c="indigo.7">
              Konan
            </Title>
          </Group>
          <Group gap="sm" wrap="nowrap">
            {me && (
              <Text size="sm" c="dimmed" visibleFrom="xs" data-testid="header-username">
                {me.username}
              </Text>
            )}
            <Button
              variant="default"
              size="xs"
              onClick={() => logout.mutate({})}
              loading={logout.isPending}
            >
              Log out
            </Button>
          </Group>
        </Group>
      </AppShell.Header>

      <AppShell.Navbar p="sm" aria-label="Main navigation">
        <RouterNavLink to="/" label="System" onClick={close} />
      </AppShell.Navbar>

      <AppShell.Main>
        <Outlet />
      </AppShell.Main>
    </AppShell>
  );
}
