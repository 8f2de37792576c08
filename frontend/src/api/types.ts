import type { paths } from "./schema";

type JsonOf<R> = R extends { content: { "application/json": infer T } } ? T : never;

/** Types named by path and status, so they survive renames of the server's schema classes. */
export type Me = JsonOf<paths["/api/v1/auth/me"]["get"]["responses"][200]>;
export type Health = JsonOf<paths["/healthz"]["get"]["responses"][200]>;
export type Readiness = JsonOf<paths["/readyz"]["get"]["responses"][200]>;
export type LoginBody = NonNullable<
  paths["/api/v1/auth/login"]["post"]["requestBody"]
>["content"]["application/json"];

/** Every error body the server sends: {"detail": "...", "code": "..."}. */
export interface ApiError {
  detail: string;
  code?: string;
}

/** A person-readable message from whatever a failed call produced (error body, network error, …). */
export function errorMessage(error: unknown, fallback = "Something went wrong"): string {
  if (error && typeof error === "object" && "detail" in error) {
    const detail = (error as { detail: unknown }).detail;
    if (typeof detail === "string" && detail) return detail;
    // FastAPI's own validation errors: [{"loc": [...], "msg": "..."}]
    if (Array.isArray(detail) && detail.length > 0) {
      const first = detail[0] as { msg?: unknown };
      if (typeof first?.msg === "string") return first.msg;
    }
  }
  if (error instanceof Error && error.message) return error.message;
  return fallback;
}
