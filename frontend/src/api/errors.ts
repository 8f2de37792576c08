/** A non-2xx answer, with the server's {"detail", "code"} when it sent one. */
export class ApiRequestError extends Error {
  readonly status: number;
  readonly code: string | undefined;

  constructor(status: number, detail: string, code?: string) {
    super(detail);
    this.name = "ApiRequestError";
    this.status = status;
    this.code = code;
  }

  get detail(): string {
    return this.message;
  }

  static from(response: Response, body: unknown): ApiRequestError {
    const fallback = `${response.status} ${response.statusText}`.trim();
    if (body && typeof body === "object") {
      const { detail, code } = body as { detail?: unknown; code?: unknown };
      return new ApiRequestError(
        response.status,
        typeof detail === "string" && detail ? detail : fallback,
        typeof code === "string" ? code : undefined,
      );
    }
    return new ApiRequestError(response.status, fallback);
  }
}
