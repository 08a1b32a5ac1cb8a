/**
 * The latchkey demo: a small node:http app on SQLite. A visit counter, sign-in by name, the list of
 * your active sessions with revoke, sign out everywhere else, sign out. `server.ts` is its command
 * line; tests start it with {@link createDemoServer} on port 0.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { readBody, withSessions } from '../../src/adapters/node.js'
import type { CsrfError, Session, SessionManager, UserSessionInfo } from '../../src/index.js'
import { createSessionManager, isCsrfError, isMigratableStore, isPrunableStore } from '../../src/index.js'
import { SqliteStore } from '../../src/stores/sqlite/index.js'

/** What the demo keeps in a session. */
export type DemoData = {
  /** Page views of `/` in this session. */
  visits: number
  /** A one-time message shown on the next page. */
  flash: string
}

/** Options of {@link createDemoServer}. */
export interface DemoServerOptions {
  /** The SQLite database file. */
  storePath: string
  /** latchkey master keys, newest first. Default: `LATCHKEY_KEYS`. */
  keys?: readonly string[]
  /** TCP port. Default 3000; `0` picks a free one. */
  port?: number
  /** Interface to listen on. Default `127.0.0.1`. */
  host?: string
}

/** A running demo. */
export interface DemoServer {
  /** Where it answers, e.g. `http://127.0.0.1:3000`. */
  readonly url: string
  readonly server: Server
  readonly manager: SessionManager<DemoData>
  /** Stops accepting connections, lets requests in flight finish, closes the store. */
  close(): Promise<void>
}

/** Largest request body accepted, in bytes: a form with a name or a handle is far smaller. */
export const MAX_BODY_BYTES = 8 * 1024
const MAX_NAME_LENGTH = 64
const PRUNE_INTERVAL_MS = 10 * 60 * 1000
const CLOSE_GRACE_MS = 5_000

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
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
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'same-origin',
}

function sendHtml(res: ServerResponse, status: number, title: string, body: string): void {
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · latchkey demo</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222 }
  table { border-collapse: collapse; width: 100% } td, th { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #ddd }
  form.inline { display: inline } .flash { background: #eef6ee; padding: .5rem 1rem; border-radius: 4px }
  .muted { color: #666; font-size: .9em }
</style>
</head>
<body>
${body}
</body>
</html>
`
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', ...SECURITY_HEADERS })
  res.end(html)
}

function redirect(res: ServerResponse, location: string): void {
  res.writeHead(303, { Location: location, 'Content-Length': '0' })
  res.end()
}

function sendError(res: ServerResponse, error: HttpError): void {
  // The rest of an oversized body is not worth reading: close the connection after answering.
  if (error.status === 413) res.setHeader('Connection', 'close')
  sendHtml(
    res,
    error.status,
    'Error',
    `<h1>${error.status}</h1><p>${escapeHtml(error.message)}</p><p><a href="/">Back to the demo</a></p>`,
  )
}

/**
 * Reads an `application/x-www-form-urlencoded` body of at most {@link MAX_BODY_BYTES}. The CSRF check
 * has usually read it already (to find the `_csrf` field): `readBody` hands over those bytes.
 */
async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase()
  if (type !== 'application/x-www-form-urlencoded') throw new HttpError(415, 'Expected a form submission.')
  try {
    return new URLSearchParams((await readBody(req, { maxBytes: MAX_BODY_BYTES })).toString('utf8'))
  } catch (error) {
    if (isCsrfError(error) && error.reason === 'body-too-large') {
      throw new HttpError(413, 'Request body too large.')
    }
    throw error
  }
}

/** A hidden form field holding a fresh CSRF token (each form gets its own, masked afresh). */
function csrfField(session: Session<DemoData>): string {
  return `<input type="hidden" name="_csrf" value="${escapeHtml(session.csrfToken())}">`
}

/** A request that failed latchkey's CSRF check: an HTML error page instead of the plain default. */
function sendCsrfError(error: CsrfError, res: ServerResponse): void {
  const message =
    error.status === 413
      ? 'Request body too large.'
      : 'This form has expired or was sent from another site. Go back, reload the page and try again.'
  sendError(res, new HttpError(error.status, message))
}

function renderSessions(sessions: readonly UserSessionInfo[], session: Session<DemoData>): string {
  const rows = sessions.map(
    (info) => `<tr data-session="${info.current ? 'current' : 'other'}">
  <td>${formatTime(info.createdAt)}</td>
  <td>${formatTime(info.lastSeenAt)}</td>
  <td>${escapeHtml(info.userAgent ?? 'unknown')}${info.current ? ' <strong>(this session)</strong>' : ''}</td>
  <td><form class="inline" method="post" action="/revoke">${csrfField(session)}<input type="hidden" name="handle" value="${escapeHtml(info.handle)}"><button>Revoke</button></form></td>
</tr>`,
  )
  return `<table>
<thead><tr><th>Created</th><th>Last seen</th><th>Browser</th><th></th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>`
}

async function home(manager: SessionManager<DemoData>, res: ServerResponse, session: Session<DemoData>) {
  const visits = session.update('visits', (n = 0) => n + 1)
  const flash = session.get('flash')
  if (flash !== undefined) session.delete('flash')
  const parts = [
    '<h1>latchkey demo</h1>',
    flash === undefined ? '' : `<p class="flash">${escapeHtml(flash)}</p>`,
    `<p>You have visited this page <strong>${visits}</strong> time${visits === 1 ? '' : 's'} in this session.</p>`,
  ]
  const userId = session.userId
  if (userId === null) {
    parts.push(`<h2>Sign in</h2>
<form method="post" action="/login">
  ${csrfField(session)}
  <label>Name <input name="name" required maxlength="${MAX_NAME_LENGTH}" autocomplete="username"></label>
  <button>Sign in</button>
</form>
<p class="muted">No password: this is a demo. Sign in with the same name in two browsers to see both sessions.</p>`)
  } else {
    const sessions = await manager.listUserSessions(userId, { current: session })
    parts.push(
      `<p>Signed in as <strong>${escapeHtml(userId)}</strong>.</p>`,
      `<h2>Your active sessions (${sessions.length})</h2>`,
      renderSessions(sessions, session),
      `<p>
<form class="inline" method="post" action="/logout-others">${csrfField(session)}<button>Sign out everywhere else</button></form>
<form class="inline" method="post" action="/logout">${csrfField(session)}<button>Sign out</button></form>
</p>`,
    )
  }
  sendHtml(res, 200, 'Home', parts.filter((part) => part !== '').join('\n'))
}

async function route(
  manager: SessionManager<DemoData>,
  req: IncomingMessage,
  res: ServerResponse,
  session: Session<DemoData>,
): Promise<void> {
  const path = new URL(req.url ?? '/', 'http://demo.invalid').pathname
  const method = req.method ?? 'GET'
  if (path === '/' && (method === 'GET' || method === 'HEAD')) return home(manager, res, session)
  const actions = ['/login', '/logout', '/logout-others', '/revoke']
  if (!actions.includes(path)) throw new HttpError(404, 'There is no such page.')
  if (method !== 'POST') {
    res.setHeader('Allow', 'POST')
    throw new HttpError(405, 'Use the forms on the home page.')
  }
  const form = await readForm(req)
  const userId = session.userId
  switch (path) {
    case '/login': {
      const name = (form.get('name') ?? '').trim()
      if (name.length < 1 || name.length > MAX_NAME_LENGTH) {
        throw new HttpError(400, `The name must be 1 to ${MAX_NAME_LENGTH} characters long.`)
      }
      session.login(name)
      session.set('flash', `Welcome, ${name}. Your session ID changed as you signed in.`)
      break
    }
    case '/logout':
      session.logout()
      break
    case '/logout-others': {
      const handle = manager.handleOf(session)
      // No handle means no signed-in, stored session: there is nothing of this user to keep.
      if (userId === null || handle === null) break
      const count = await manager.revokeUserSessions(userId, { except: handle })
      session.set('flash', `Signed out ${count} other session${count === 1 ? '' : 's'}.`)
      break
    }
    case '/revoke': {
      if (userId === null) break
      const revoked = await manager.revoke(form.get('handle') ?? '', { userId })
      session.set('flash', revoked ? 'Session revoked.' : 'That session had already ended.')
      break
    }
  }
  redirect(res, '/')
}

/** Builds the demo app on a {@link SqliteStore} at `storePath` and starts listening. */
export async function createDemoServer(options: DemoServerOptions): Promise<DemoServer> {
  const store = new SqliteStore({ path: options.storePath })
  if (isMigratableStore(store)) await store.migrate()
  const manager = createSessionManager<DemoData>({
    store,
    keys: options.keys,
    // The demo serves plain HTTP on localhost, where a Secure cookie would never be sent back.
    // Anything reachable from elsewhere must run behind HTTPS and keep the default (secure: true).
    cookie: { secure: false },
  })
  // Every POST passes latchkey's CSRF check before `route` sees it: where it came from (Sec-Fetch-Site,
  // Origin) and the token of the form's `_csrf` field.
  const handler = withSessions(
    manager,
    async (req, res, session) => {
      try {
        await route(manager, req, res, session)
      } catch (error) {
        if (!(error instanceof HttpError)) throw error
        sendError(res, error)
      }
    },
    {
      csrf: { maxBodyBytes: MAX_BODY_BYTES },
      onCsrfError: (error, _req, res) => sendCsrfError(error, res),
    },
  )
  const server = createServer((req, res) => {
    void handler(req, res)
  })
  const pruner = isPrunableStore(store)
    ? setInterval(() => {
        store.prune().catch((error: unknown) => console.error('demo: prune failed:', error))
      }, PRUNE_INTERVAL_MS).unref()
    : undefined
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
    clearInterval(pruner)
    await manager.close()
    throw error
  }
  const { port } = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  return {
    url: `http://${host}:${port}`,
    server,
    manager,
    close() {
      closing ??= (async () => {
        clearInterval(pruner)
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
