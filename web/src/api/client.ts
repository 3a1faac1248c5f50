// The one client of the control plane's API: typed by the OpenAPI document (schema.gen.ts is
// generated from ../openapi.json by `npm run gen`), the session's token on every call, and every
// non-2xx answer turned into an ApiError carrying the problem+json body.
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema.gen";

export type Schemas = components["schemas"];

export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  errors?: { field: string; message: string }[];
  [member: string]: unknown;
}

export class ApiError extends Error {
  readonly status: number;
  readonly problem: Problem;

  constructor(status: number, problem: Problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

const KEY = "llmtune.token";
export const LOGOUT_EVENT = "llmtune:logout";

/** The API token lives in session storage: it goes with the tab, never into local storage or a cookie. */
export const session = {
  token: (): string | null => sessionStorage.getItem(KEY),
  login(token: string): void {
    sessionStorage.setItem(KEY, token);
  },
  logout(): void {
    sessionStorage.removeItem(KEY);
    window.dispatchEvent(new Event(LOGOUT_EVENT));
  },
};

export function authHeaders(token: string | null = session.token()): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

const bearer: Middleware = {
  onRequest({ request }) {
    const token = session.token();
    if (token && !request.headers.has("Authorization")) request.headers.set("Authorization", `Bearer ${token}`);
    return request;
  },
  onResponse({ request, response }) {
    // A token that stopped working (expired, revoked, rotated): back to the login screen.
    if (response.status === 401 && session.token() && request.headers.get("Authorization") === `Bearer ${session.token()}`) {
      session.logout();
    }
    return response;
  },
};

// fetch is looked up at each call (not captured once), so tests can answer it.
export const api = createClient<paths>({ baseUrl: window.location.origin, fetch: (request) => globalThis.fetch(request) });
api.use(bearer);

interface Answer<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The answer's body, or an ApiError with the problem the API sent. */
export async function unwrap<T>(call: Promise<Answer<T>>): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) throw new ApiError(response.status, (error ?? {}) as Problem);
  return data as T;
}

/** A fetch of a route the typed client does not model (streams, text bodies), with the token and errors as above. */
export async function raw(path: string, init: RequestInit = {}): Promise<Response> {
  const response = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers as Record<string, string>) } });
  if (!response.ok) {
    const problem = (await response.json().catch(() => ({ detail: response.statusText }))) as Problem;
    // Only the control plane's own refusal signs out (the playground relays the router's 401s too).
    if (response.status === 401 && problem.title === "Unauthorized" && session.token()) session.logout();
    throw new ApiError(response.status, problem);
  }
  return response;
}

export function describe(error: unknown): string {
  if (error instanceof ApiError) {
    const fields = (error.problem.errors ?? []).map((e) => `${e.field}: ${e.message}`).join("; ");
    return `${error.status} ${error.problem.title ?? ""}: ${error.message}${fields ? ` (${fields})` : ""}`;
  }
  return error instanceof Error ? error.message : String(error);
}
