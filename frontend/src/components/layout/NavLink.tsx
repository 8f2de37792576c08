import { NavLink as MantineNavLink, type NavLinkProps } from "@mantine/core";
import { createLink, type LinkComponent } from "@tanstack/react-router";
import type { AnchorHTMLAttributes, Ref } from "react";

type AnchorNavLinkProps = NavLinkProps &
  Omit<AnchorHTMLAttributes<HTMLAnchorElement>, keyof NavLinkProps> & {
    ref?: Ref<HTMLAnchorElement>;
  };

function AnchorNavLink(props: AnchorNavLinkProps) {
  // The router marks the current page with data-status="active"; Mantine highlights `active`.
  const active = (props as { "data-status"?: string })["data-status"] === "active";
  return <MantineNavLink component="a" active={active} {...props} />;
}

const CreatedNavLink = createLink(AnchorNavLink);

/** A Mantine NavLink that navigates with the router (typed `to`, active state, preload). */
export const RouterNavLink: LinkComponent<typeof AnchorNavLink> = (props) => (
  <CreatedNavLink preload="intent" {...props} />
);
