/**
 * latchkey for Hono 4 on @hono/node-server: `app.use(sessions(manager))`, then `c.get('session')`.
 *
 * The middleware works on Web-standard Request and Response objects: the session is committed after
 * `await next()`, and its headers put on the response before it is returned, whatever it is (a
 * redirect, a stream, `HEAD`). The core's crypto is node:crypto, so this runs on Node (and on Bun or
 * Deno where their node:crypto does). Errors are thrown into Hono's error handling (`app.onError`),
 * keeping their class; Hono's default handler answers them with their status (503 for a store down).
 */
import type { Context, MiddlewareHandler } from 'hono'
import type { CommitResult, SessionManager } from '../core/manager.js'
import type { Session, SessionData } from '../core/session.js'
import type { CsrfOptions, CsrfRequest, FormLimits } from '../csrf/index.js'
import { formKind, formScan, parseFormFields } from '../csrf/index.js'
import { readWebBody } from './body.js'
import type { ChainBinding } from './kernel.js'
import {
  applyCommit,
  aroundChain,
  checkAdapterOptions,
  FrontDoor,
  lingerAfterAnswer,
  WEB_HEADERS,
} from './kernel.js'

/** The default of `csrf.maxBodyBytes`: 1 MiB. */
export { DEFAULT_MAX_BODY_BYTES } from '../csrf/index.js'

/** Hono's context variables with the session: `new Hono<SessionEnv<Data>>()`, or chain `.use(sessions(manager))`. */
export type SessionEnv<T extends SessionData = SessionData> = {
  Variables: { session: Session<T> }
}

/** Options of the Hono {@link sessions} middleware. */
export interface HonoSessionsOptions {
  /**
   * The CSRF check, run before the handler on every unsafe request (see `CsrfOptions`); on by
   * default. A failure is thrown as a `CsrfError` (`status` 403, or 413 for a form body past
   * `maxBodyBytes`) to `app.onError`. `false` turns it off for the whole app; a route skips it by a
   * path in `exempt`, or by being registered before this middleware.
   */
  csrf?: CsrfOptions | false
}

/**
 * A Hono request for the CSRF check. A form body is read as it arrives, only as far as the check
 * needs to refuse it; one whose token was found is read to its end and kept in Hono's body cache, so
 * `c.req.parseBody()`, `formData()`, `text()` and `arrayBuffer()` still work; `c.req.raw`'s own body
 * is used up then.
 */
class HonoCsrfRequest implements CsrfRequest {
  /** Whether the check read the body to its end (or found it read already). */
  private readToEnd = false

  constructor(
    private readonly c: Context,
    private readonly maxBodyBytes: number,
  ) {}

  get method(): string {
    return this.c.req.method
  }

  get url(): string {
    const url = this.c.req.url
    const path = url.indexOf('/', url.indexOf('//') + 2)
    return path === -1 ? '/' : url.slice(path)
  }

  /** The scheme @hono/node-server took from the connection (it never reads `X-Forwarded-Proto`). */
  get secure(): boolean {
    return this.c.req.url.startsWith('https:')
  }

  get host(): string | undefined {
    return this.c.req.raw.headers.get('host') ?? undefined
  }

  header(name: string): string | undefined {
    return this.c.req.raw.headers.get(name) ?? undefined
  }

  async form(limits?: FormLimits): Promise<Readonly<Record<string, string>> | null> {
    const req = this.c.req
    const type = req.raw.headers.get('content-type') ?? undefined
    if (formKind(type) === null) return null
    const cache = req.bodyCache as { arrayBuffer?: unknown }
    if (Object.keys(cache).length > 0) {
      // Read by the app before (a middleware parsed it): Hono's cache has it.
      this.readToEnd = true
      return parseFormFields(new Uint8Array(await req.arrayBuffer()), type, limits)
    }
    // Read past Hono's cache: nothing is left to find a token in.
    if (req.raw.bodyUsed) return {}
    const scan = formScan(type, limits)
    const declared = req.raw.headers.get('content-length')
    const first = await readWebBody(req.raw.body, this.maxBodyBytes, declared, (chunk) => scan.write(chunk))
    this.readToEnd = first.ended
    const fields = await scan.finish(first.ended)
    let body = first.bytes
    if (!first.ended) {
      // Without the token the check refuses: the rest stays unread. With it, the app gets it all.
      if (limits?.stopAt === undefined || !(limits.stopAt in fields)) return fields
      const rest = await readWebBody(req.raw.body, this.maxBodyBytes - body.byteLength, null)
      body = Buffer.concat([body, rest.bytes])
    }
    this.readToEnd = true
    cache.arrayBuffer = Promise.resolve(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength))
    return fields
  }

  /** The body was not read to its end by the check, and there is one. */
  bodyPending(): boolean {
    const raw = this.c.req.raw
    return !this.readToEnd && raw.body !== null && raw.headers.get('content-length') !== '0'
  }

  /** On @hono/node-server (node's request in `c.env.incoming`), the close waits for the answer. */
  lingerAfterAnswer(): void {
    const env = this.c.env as { incoming?: Parameters<typeof lingerAfterAnswer>[0] } | undefined
    if (env?.incoming !== undefined) lingerAfterAnswer(env.incoming)
  }
}

/** Hono's context, as the front door needs it. */
const HONO: ChainBinding<SessionData, Context> = {
  cookie: (c) => c.req.raw.headers.get('cookie') ?? undefined,
  userAgent: (c) => c.req.raw.headers.get('user-agent') ?? undefined,
  setSession: (c, session) => c.set('session', session),
  csrfRequest: (c, maxBodyBytes) => new HonoCsrfRequest(c, maxBodyBytes),
  failed: (c) => c.error !== undefined,
  apply: (c, result: CommitResult) => {
    try {
      applyCommit(WEB_HEADERS, c.res.headers, result)
    } catch {
      // A response with immutable headers (one from fetch()): copy it, as Hono's c.header() does.
      c.res = new Response(c.res.body, c.res)
      applyCommit(WEB_HEADERS, c.res.headers, result)
    }
  },
}

/**
 * The session middleware for Hono: sets the `session` variable and commits the session after the
 * handler, before the response is returned; an unsafe request is checked for CSRF first. A store that fails throws a 503 `StoreError`; a handler
 * that throws (Hono records it in `c.error`) saves none of the request's session changes.
 */
export function sessions<T extends SessionData>(
  manager: SessionManager<T>,
  options: HonoSessionsOptions = {},
): MiddlewareHandler<SessionEnv<T>> {
  checkAdapterOptions(options, ['csrf'], 'sessions() of latchkey/hono')
  const door = new FrontDoor(manager, options.csrf)
  const binding = HONO as unknown as ChainBinding<T, Context>
  return (c, next) => aroundChain(door, binding, c as unknown as Context, next)
}
export { honoFreshAuth as requireFreshAuth } from './fresh-auth.js'
