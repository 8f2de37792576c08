export const CSRF_COOKIE = "konan_csrf";
export const CSRF_HEADER = "X-CSRF-Token";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS", "TRACE"]);

export function readCookie(name: string, cookieString: string = document.cookie): string | null {
  for (const part of cookieString.split(";")) {
    const eq = part.indexOf("=");
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) {
      return decodeURIComponent(part.slice(eq + 1).trim());
    }
  }
  return null;
}

/** The server rejects cookie-authenticated writes unless this header echoes the konan_csrf cookie. */
export function needsCsrfHeader(method: string): boolean {
  return !SAFE_METHODS.has(method.toUpperCase());
}
