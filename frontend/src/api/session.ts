import { queryOptions, type QueryClient } from "@tanstack/react-query";
import { client } from "./client";
import { ApiRequestError } from "./errors";
import type { Me } from "./types";

export const meQueryKey = ["get", "/api/v1/auth/me"] as const;

/** The signed-in user, or null when there is no valid session (a 401 is an answer here, not an error). */
export const meQuery = queryOptions({
  queryKey: meQueryKey,
  queryFn: async ({ signal }): Promise<Me | null> => {
    const { data, error, response } = await client.GET("/api/v1/auth/me", { signal });
    if (response.status === 401) return null;
    if (error !== undefined || data === undefined) throw ApiRequestError.from(response, error);
    return data;
  },
  staleTime: 60_000,
  retry: false,
});

export function forgetSession(queryClient: QueryClient): void {
  queryClient.setQueryData(meQueryKey, null);
  // Everything cached belongs to the old session.
  queryClient.removeQueries({ predicate: (q) => q.queryKey[1] !== meQueryKey[1] });
}
