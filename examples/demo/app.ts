/**
 * The latchkey demo: a small Express 5 app on SQLite. Sign-in by name, a counter (a form, and a
 * button that uses `fetch` with the `x-csrf-token` header), the list of your active sessions with
 * revoke, sign out everywhere else, sign out. Every POST must carry a CSRF token: latchkey's Express
 * middleware checks it and the error handler below renders a failure as a 403 page. `server.ts` is
 * its command line; tests start it with {@link createDemoServer} on port 0.
 */
import { readFileSync } from 'node:fs'
import type { Server } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { NextFunction, Request, Response } from 'express'
import express from 'express'
import type { Session, SessionManager, UserSessionInfo } from 'latchkey'
import { createSessionManager, isCsrfError, isUnavailableError } from 'latchkey'
import { sessions } from 'latchkey/express'
import { SqliteStore } from 'latchkey/stores/sqlite'

/** What the demo keeps in a session. */
export type DemoData = {
  /** The counter, raised by the "+1" buttons. */
  count: number
  /** A one-time message shown on the next page. */
  flash: string
}

/** Options of {@link createDemoApp} and {@link createDemoServer}. */
export interface DemoAppOptions {
  /** The SQLite database file. Its directory must exist. */
  storePath: string
  /** latchkey master keys, newest first. Default: `LATCHKEY_KEYS`. */
  keys?: readonly string[]
  /**
   * How long a SQLite statement waits for a lock held by another process before the request fails
   * with 503, in ms. Default 5000 (SqliteStore's).
   */
  busyTimeoutMs?: number
}

/** Options of {@link createDemoServer}. */
export interface DemoServerOptions extends DemoAppOptions {
  /** TCP port. Default 3000; `0` picks a free one. */
  port?: number
  /** Interface to listen on. Default `127.0.0.1`. */
  host?: string
}

/** The demo's Express app, not yet listening. */
export interface DemoApp {
  readonly app: express.Express
  readonly manager: SessionManager<DemoData>
}

/** A running demo. */
export interface DemoServer extends DemoApp {
  /** Where it answers, e.g. `http://127.0.0.1:3000`. */
  readonly url: string
  readonly server: Server
  /** Stops accepting connections, lets requests in flight finish, closes the store. */
  close(): Promise<void>
}

/** Largest request body accepted, in bytes: a form with a name or a handle is far smaller. */
export const MAX_BODY_BYTES = 8 * 1024
const MAX_NAME_LENGTH = 64
const CLOSE_GRACE_MS = 5_000

/** The "+1 with fetch" button's script, served as `/counter.js` (the page's CSP allows no inline script). */
const COUNTER_SCRIPT = readFileSync(new URL('./counter.js', import.meta.url), 'utf8')

/** A failure the demo answers with its own status and message. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message)
  }
}

/** Escapes text for HTML element content and quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

function formatTime(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')} UTC`
}

const SECURITY_HEADERS = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'same-origin',
}

function sendHtml(res: Response, status: number, title: string, body: string, head = ''): void {
  res
    .status(status)
    .type('html')
    .send(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · latchkey demo</title>${head}
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222 }
  table { border-collapse: collapse; width: 100% } td, th { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #ddd }
  form.inline { display: inline } .flash { background: #eef6ee; padding: .5rem 1rem; border-radius: 4px }
  .muted { color: #666; font-size: .9em } .notice { background: #fff6e0; padding: .5rem 1rem; border-radius: 4px }
</style>
</head>
<body>
${body}
</body>
</html>
`)
}

/** An error page, or `{ "error": message }` for a client that asked for JSON (the fetch button). */
function sendError(req: Request, res: Response, status: number, message: string): void {
  if (req.accepts(['html', 'json']) === 'json') {
    res.status(status).json({ error: message })
    return
  }
  sendHtml(
    res,
    status,
    `Error ${status}`,
    `<h1>${status}</h1>\n<p>${escapeHtml(message)}</p>\n<p><a href="/">Back to the demo</a></p>`,
  )
}

/** A hidden form field holding a fresh CSRF token (each form gets its own, masked afresh). */
function csrfField(session: Session<DemoData>): string {
  return `<input type="hidden" name="_csrf" value="${escapeHtml(session.csrfToken())}">`
}

function renderSessions(list: readonly UserSessionInfo[], session: Session<DemoData>): string {
  const rows = list.map(
    (info) => `<tr data-session="${info.current ? 'current' : 'other'}">
  <td>${formatTime(info.createdAt)}</td>
  <td>${formatTime(info.lastSeenAt)}</td>
  <td>${escapeHtml(info.userAgent ?? 'unknown')}${info.current ? ' <strong>(this session)</strong>' : ''}</td>
  <td>${
    info.current
      ? `<form class="inline" method="post" action="/logout">${csrfField(session)}<button>Sign out</button></form>`
      : `<form class="inline" method="post" action="/revoke">${csrfField(session)}<input type="hidden" name="handle" value="${escapeHtml(info.handle)}"><button>Revoke</button></form>`
  }</td>
</tr>`,
  )
  return `<table>
<thead><tr><th>Created</th><th>Last seen</th><th>Browser</th><th></th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>`
}

async function home(manager: SessionManager<DemoData>, session: Session<DemoData>, res: Response) {
  const flash = session.get('flash')
  if (flash !== undefined) session.delete('flash')
  const count = session.get('count') ?? 0
  const parts = [
    '<h1>latchkey demo</h1>',
    flash === undefined ? '' : `<p class="flash" role="status">${escapeHtml(flash)}</p>`,
    `<h2>Counter</h2>
<p>Count: <strong id="count">${count}</strong></p>
<form class="inline" method="post" action="/counter">${csrfField(session)}<button>+1 with a form</button></form>
<button type="button" id="fetch-increment">+1 with fetch</button> <span id="fetch-status" class="muted"></span>
<p class="muted">The form sends its CSRF token in the <code>_csrf</code> field; the second button sends the
page's token (in <code>&lt;meta name="csrf-token"&gt;</code>) in the <code>x-csrf-token</code> header.
A POST without a valid token gets a 403.</p>`,
  ]
  const userId = session.userId
  if (userId === null) {
    parts.push(`<h2>Sign in</h2>
<p class="notice">This is a demo: there is no password, and any name signs you in. Sign in with the same
name in two browsers to see both sessions below.</p>
<form method="post" action="/login">
  ${csrfField(session)}
  <label>Name <input name="name" required maxlength="${MAX_NAME_LENGTH}" autocomplete="username"></label>
  <button>Sign in</button>
</form>`)
  } else {
    const list = await manager.listUserSessions(userId, { current: session })
    parts.push(
      `<p>Signed in as <strong>${escapeHtml(userId)}</strong>.</p>`,
      `<h2>Your active sessions (${list.length})</h2>`,
      renderSessions(list, session),
      `<p>
<form class="inline" method="post" action="/logout-others">${csrfField(session)}<button>Sign out everywhere else</button></form>
<form class="inline" method="post" action="/logout">${csrfField(session)}<button>Sign out</button></form>
</p>`,
    )
  }
  const meta = `\n<meta name="csrf-token" content="${escapeHtml(session.csrfToken())}">\n<script src="/counter.js" defer></script>`
  sendHtml(res, 200, 'Home', parts.filter((part) => part !== '').join('\n'), meta)
}

/** The fields of a urlencoded form body (parsed by `express.urlencoded`). */
function formOf(req: Request): Record<string, unknown> {
  if (!req.is('application/x-www-form-urlencoded')) throw new HttpError(415, 'Expected a form submission.')
  return (req.body ?? {}) as Record<string, unknown>
}

function field(form: Record<string, unknown>, name: string): string {
  const value = Object.hasOwn(form, name) ? form[name] : undefined
  return typeof value === 'string' ? value : ''
}

/** An error's HTTP status and headers, and the message for the page. */
function describeError(error: unknown): { status: number; message: string; headers: Record<string, string> } {
  if (isCsrfError(error)) {
    if (error.status === 413) {
      // The rest of the body is left unread: the connection cannot carry another request.
      return { status: 413, message: 'Request body too large.', headers: { Connection: 'close' } }
    }
    return {
      status: 403,
      message: `This form has expired or was sent from another site (${error.reason}). Go back, reload the page and try again.`,
      headers: {},
    }
  }
  if (isUnavailableError(error)) {
    return {
      status: 503,
      message: 'The session store is not answering. Please try again in a moment.',
      headers: { 'Retry-After': '1', 'Cache-Control': 'no-store' },
    }
  }
  if (error instanceof HttpError)
    return { status: error.status, message: error.message, headers: { ...error.headers } }
  // express.urlencoded's errors (http-errors): a body too large, malformed, in an unknown charset.
  const status = (error as { status?: unknown } | null)?.status
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return status === 413
      ? { status, message: 'Request body too large.', headers: { Connection: 'close' } }
      : { status, message: 'The request could not be read.', headers: {} }
  }
  return { status: 500, message: 'Something went wrong on our side.', headers: {} }
}

/**
 * Builds the demo's Express app on a {@link SqliteStore} at `storePath`, its schema created.
 * {@link createDemoServer} also starts listening.
 */
export async function createDemoApp(options: DemoAppOptions): Promise<DemoApp> {
  const store = new SqliteStore({ path: options.storePath, busyTimeoutMs: options.busyTimeoutMs })
  await store.migrate()
  const manager = createSessionManager<DemoData>({
    store,
    keys: options.keys,
    // The demo serves plain HTTP on localhost, where a Secure cookie would never be sent back (and
    // the __Host- prefix needs Secure). Anything reachable from elsewhere must run behind HTTPS and
    // keep the default (secure: true).
    cookie: { secure: false },
  })
  // Loads req's session, commits it before the response leaves, and runs the CSRF check on every
  // POST before its route: where it came from (Sec-Fetch-Site, Origin), and the token from the
  // x-csrf-token header or the form's _csrf field. Failures go to the error handler at the end.
  const auth = sessions(manager, { csrf: { maxBodyBytes: MAX_BODY_BYTES } })

  const app = express()
  app.disable('x-powered-by')
  app.use((_req, res, next) => {
    res.set(SECURITY_HEADERS)
    next()
  })
  // Before the session middleware: the browser asks for these without a thought, and they need no session.
  app.get('/favicon.ico', (_req, res) => {
    res.status(204).end()
  })
  app.get('/counter.js', (_req, res) => {
    res.type('text/javascript').send(COUNTER_SCRIPT)
  })

  app.use(auth)
  // After the check, which read the form to find _csrf and left the body for this parser.
  app.use(express.urlencoded({ extended: false, limit: MAX_BODY_BYTES }))

  app.get('/', async (req, res) => {
    await home(manager, auth.session(req), res)
  })

  app.post('/counter', (req, res) => {
    const count = auth.session(req).update('count', (n = 0) => n + 1)
    if (req.accepts(['html', 'json']) === 'json') res.json({ count })
    else res.redirect(303, '/')
  })

  app.post('/login', (req, res) => {
    const session = auth.session(req)
    const name = field(formOf(req), 'name').trim()
    if (name.length < 1 || name.length > MAX_NAME_LENGTH) {
      throw new HttpError(400, `The name must be 1 to ${MAX_NAME_LENGTH} characters long.`)
    }
    session.login(name)
    session.set('flash', `Welcome, ${name}. Your session ID changed as you signed in.`)
    res.redirect(303, '/')
  })

  app.post('/logout', (req, res) => {
    const session = auth.session(req)
    const wasSignedIn = session.userId !== null
    session.logout()
    // logout() leaves a fresh, empty session for the rest of the request: the message goes there.
    if (wasSignedIn) session.set('flash', 'You have signed out: your session is gone from the store.')
    res.redirect(303, '/')
  })

  app.post('/logout-others', async (req, res) => {
    const session = auth.session(req)
    const userId = session.userId
    const handle = manager.handleOf(session)
    // No handle means no signed-in, stored session: there is nothing of this user to keep.
    if (userId !== null && handle !== null) {
      const count = await manager.revokeUserSessions(userId, { except: handle })
      session.set('flash', `Signed out ${count} other session${count === 1 ? '' : 's'}.`)
    }
    res.redirect(303, '/')
  })

  app.post('/revoke', async (req, res) => {
    const session = auth.session(req)
    const handle = field(formOf(req), 'handle')
    const userId = session.userId
    if (userId !== null) {
      // Handles are sealed afresh each time (two handles of one session differ), so this session's
      // own row offers "Sign out" instead. A handle of this session posted here ends it all the same.
      const revoked = await manager.revoke(handle, { userId })
      session.set('flash', revoked ? 'Session revoked.' : 'That session had already ended.')
    }
    res.redirect(303, '/')
  })

  app.all(['/counter', '/login', '/logout', '/logout-others', '/revoke'], () => {
    throw new HttpError(405, 'Use the buttons on the home page.', { Allow: 'POST' })
  })

  app.use(() => {
    throw new HttpError(404, 'There is no such page.')
  })

  // Every failure ends here: a CsrfError is a friendly 403 page, a store that is down a 503, ours
  // their own status. A 5xx saves none of the request's session changes (latchkey's rule).
  app.use((error: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(error)
      return
    }
    const { status, message, headers } = describeError(error)
    if (status === 500) console.error('demo:', error)
    res.set(headers)
    sendError(req, res, status, message)
  })

  return { app, manager }
}

/** Builds the demo app (see {@link createDemoApp}) and starts listening. */
export async function createDemoServer(options: DemoServerOptions): Promise<DemoServer> {
  const { app, manager } = await createDemoApp(options)
  const server = createServer(app)
  const host = options.host ?? '127.0.0.1'
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(options.port ?? 3000, host, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (error) {
    await manager.close()
    throw error
  }
  const { port } = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  return {
    url: `http://${host}:${port}`,
    app,
    server,
    manager,
    close() {
      closing ??= (async () => {
        // Idle keep-alive connections close at once; busy ones get a moment to finish.
        const force = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS).unref()
        await new Promise<void>((resolve) => server.close(() => resolve()))
        clearTimeout(force)
        await manager.close()
      })()
      return closing
    },
  }
}
