import { queryOptions } from "@tanstack/react-query";
import { client } from "../../api/client";
import { ApiRequestError } from "../../api/errors";
import type { Health, Readiness } from "../../api/types";

export const SYSTEM_POLL_MS = 5_000;

export const healthQuery = queryOptions({
  queryKey: ["get", "/healthz"] as const,
  queryFn: async ({ signal }): Promise<Health> => {
    const { data, error, response } = await client.GET("/healthz", { signal });
    if (data === undefined) throw ApiRequestError.from(response, error);
    return data;
  },
  refetchInterval: SYSTEM_POLL_MS,
  retry: false,
});

/** /readyz answers 503 with the same body when a check fails; that body is the answer, not an error. */
export const readinessQuery = queryOptions({
  queryKey: ["get", "/readyz"] as const,
  queryFn: async ({ signal }): Promise<Readiness> => {
    const { data, error, response } = await client.GET("/readyz", { signal });
    if (data !== undefined) return data;
    if (response.status === 503 && isReadiness(error)) return error;
    throw ApiRequestError.from(response, error);
  },
  refetchInterval: SYSTEM_POLL_MS,
  retry: false,
});

function isReadiness(body: unknown): body is Readiness {
  return (
    !!body &&
    typeof body === "object" &&
    "status" in body &&
    "checks" in body &&
    typeof (body as { checks: unknown }).checks === "object"
  );
}
