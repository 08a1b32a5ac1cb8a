/**
 * The latchkey demo: a small Express 5 app on SQLite (or any store URL). Sign-in by name and password,
 * a counter (a form, and a button that uses `fetch` with the `x-csrf-token` header), the panel "What
 * protects this session" (the cookie as sent, the record as it sits in the store, the deadlines, the ID
 * renewals, the CSRF token), "Your devices" with revoke and sign out everywhere else (and, on the device
 * that was signed out, why) under a cap of sessions per user (`maxSessionsPerUser`: a sign-in past it
 * ends the least recently used), a "change password" page behind the fresh-authentication guard, the
 * counters latchkey reports through OpenTelemetry (`/metrics`, see metrics.ts), and an attack page on
 * another site: the other loopback name, another port (see attack.ts). Every POST must carry a CSRF
 * token: latchkey's Express middleware checks it and the error handler below renders a failure as a
 * 403 page. It runs with a production app's defaults: `__Host-` cookies with `Secure` (browsers treat
 * http://localhost and http://127.0.0.1 as secure). `server.ts` is its command line; tests start it
 * with {@link createDemoServer} on port 0.
 */
import { createHash, randomBytes, scryptSync, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { Server } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { NextFunction, Request, Response } from 'express'
import express from 'express'
import type { Clock, Session, SessionManager, SessionRecord, SessionStore, UserSessionInfo } from 'latchkey'
import { createSessionManager, FreshAuthError, isCsrfError, isUnavailableError } from 'latchkey'
import { requireFreshAuth, sessions } from 'latchkey/express'
import { openStore } from 'latchkey/stores'
import { SqliteStore } from 'latchkey/stores/sqlite'
import type { AttackServer } from './attack.js'
import { otherLoopbackName, startAttackServer } from './attack.js'
import type { MetricPoint } from './metrics.js'
import { DemoMetrics, INSTRUMENTS, isEnd, total } from './metrics.js'

/** What the demo keeps in a session. */
export type DemoData = {
  /** The counter, raised by the "+1" buttons. */
  count: number
  /** A one-time message shown on the next page. */
  flash: string
  /** When the current session ID was issued (epoch ms), for the panel. */
  renewedAt: number
  /** The first characters of the current ID's store key, to tell when the ID changed. */
  idFingerprint: string
}

/** Options of {@link createDemoApp} and {@link createDemoServer}. */
export interface DemoAppOptions {
  /** The SQLite database file. Its directory must exist. Give this or `storeUrl`. */
  storePath?: string
  /** Any store URL `openStore` reads (`sqlite:`, `file:`, `redis://`, `postgres://`, `mysql://`). */
  storeUrl?: string
  /** latchkey master keys, newest first. Default: `LATCHKEY_KEYS`. */
  keys?: readonly string[]
  /**
   * How long a SQLite statement waits for a lock held by another process before the request fails
   * with 503, in ms. Default 5000 (SqliteStore's).
   */
  busyTimeoutMs?: number
  /** How recent a sign-in must be for the "change password" page, in ms. Default 5 minutes. */
  freshAuthMs?: number
  /** The most sessions one user may have signed in at once (`maxSessionsPerUser`). Default 3. */
  maxSessionsPerUser?: number
  /** The manager's clock (tests move it). Default the system clock. */
  clock?: Clock
}

/** Options of {@link createDemoServer}. */
export interface DemoServerOptions extends DemoAppOptions {
  /** TCP port. Default 3000; `0` picks a free one. */
  port?: number
  /** Interface to listen on. Default `127.0.0.1`. */
  host?: string
  /**
   * The port of the attack page, served on the other loopback name (another site). Default `port + 1`
   * (`0` when `port` is 0).
   */
  attackPort?: number
}

/** The demo's Express app, not yet listening. */
export interface DemoApp {
  readonly app: express.Express
  readonly manager: SessionManager<DemoData>
  readonly store: SessionStore
  /** What the manager counts, read back through the OpenTelemetry SDK (shown at `/metrics`). */
  readonly metrics: DemoMetrics
  /** The requests the attack page marked (`?attempt=`), by attempt, most recent last. */
  readonly attempts: Map<string, Attempt>
  /** Where the attack page answers, set once it listens (the "Try to attack" link points there). */
  attackPort: number | null
}

/** What the demo saw of a request the attack page marked (`?attempt=`). */
export interface Attempt {
  readonly path: string
  /** `Sec-Fetch-Site` as the browser sent it. */
  readonly site: string | null
  /** Whether the request carried the session cookie. */
  readonly cookieCame: boolean
  /** The status of the answer; `null` until it is sent. */
  status: number | null
  /** The CSRF refusal's reason (a `CsrfError`'s), or `null`. */
  reason: string | null
}

/** A running demo. */
export interface DemoServer extends DemoApp {
  /** Where it answers, e.g. `http://127.0.0.1:3000`. */
  readonly url: string
  readonly server: Server
  /** The attack page's origin, on the other loopback name: e.g. `http://localhost:3001`. */
  readonly attackUrl: string
  /** Stops accepting connections, lets requests in flight finish, closes the store. */
  close(): Promise<void>
}

/** Largest request body accepted, in bytes: a form with a name or a handle is far smaller. */
export const MAX_BODY_BYTES = 8 * 1024
const MAX_NAME_LENGTH = 64
const CLOSE_GRACE_MS = 5_000

/** The "+1 with fetch" button's script, served as `/counter.js` (the page's CSP allows no inline script). */
const COUNTER_SCRIPT = readFileSync(new URL('./counter.js', import.meta.url), 'utf8')
/** The panel's countdowns, served as `/panel.js`. */
const PANEL_SCRIPT = readFileSync(new URL('./panel.js', import.meta.url), 'utf8')
/** The metrics page's refresh, served as `/metrics.js`. */
const METRICS_SCRIPT = readFileSync(new URL('./metrics-page.js', import.meta.url), 'utf8')

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
  #panel { background: #f4f6fa; padding: .5rem 1rem 1rem; border-radius: 6px; margin-top: 2rem }
  #panel dt { font-weight: 600; margin-top: .6rem } #panel dd { margin-left: 1rem; overflow-wrap: anywhere }
  .attr { display: inline-block; background: #dfe8f5; border-radius: 3px; padding: 0 .35rem; margin: 0 .15rem .15rem 0; font-size: .9em }
  label { margin-right: .5rem } nav { margin-bottom: 1rem }
  #glance { display: grid; grid-template-columns: repeat(4, 1fr); gap: .5rem; margin: 0 0 1rem }
  #glance div { background: #f4f6fa; border-radius: 6px; padding: .4rem .6rem } #glance dt { font-size: .85em; color: #555 }
  #glance dd { margin: 0; font-size: 1.6em; font-weight: 600 }
  .metrics { display: grid; grid-template-columns: 1fr 1fr; gap: 0 1.2rem } .metric h2 { font-size: 1em; margin: 1rem 0 0 }
  .metric p { margin: 0 0 .3rem } .metric td.value, .metric td.mean { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap }
  .metric[data-metric="latchkey.store.duration"] { grid-column: 1 / -1 }
  .changed { background: #fff1a8 }
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
  if (error instanceof FreshAuthError) {
    return { status: 403, message: 'Sign in first: this page is for signed-in users.', headers: {} }
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

const MAX_PASSWORD_LENGTH = 128

/** The demo's users: name to scrypt hash, in memory (a real app has a users table). */
class Passwords {
  private readonly hashes = new Map<string, { salt: Buffer; hash: Buffer }>()

  /** Sets the password of `user`. */
  set(user: string, password: string): void {
    const salt = randomBytes(16)
    this.hashes.set(user, { salt, hash: scryptSync(password, salt, 32) })
  }

  /** Whether `password` is the password of `user`; a name seen for the first time signs up with it. */
  check(user: string, password: string): boolean {
    const entry = this.hashes.get(user)
    if (entry === undefined) {
      this.set(user, password)
      return true
    }
    return timingSafeEqual(scryptSync(password, entry.salt, 32), entry.hash)
  }
}

function passwordField(form: Record<string, unknown>): string {
  const password = field(form, 'password')
  if (password.length < 1 || password.length > MAX_PASSWORD_LENGTH) {
    throw new HttpError(400, `The password must be 1 to ${MAX_PASSWORD_LENGTH} characters long.`)
  }
  return password
}
/** A hidden form field holding a fresh CSRF token (each form gets its own, masked afresh). */
function csrfField(session: Session<DemoData>): string {
  return `<input type="hidden" name="_csrf" value="${escapeHtml(session.csrfToken())}">`
}

/** What the signed-out device is told, by `session.endedBecause`. */
const ENDED_BECAUSE: Record<string, string> = {
  revoked: 'You were signed out: this session was revoked from another of your devices.',
  'signed-out-everywhere':
    'You were signed out: "sign out everywhere else" was used on another of your devices.',
  'idle-timeout': 'You were signed out: the session was unused for longer than the idle timeout.',
  'absolute-timeout': 'You were signed out: the session reached its absolute lifetime.',
  'key-retired': 'You were signed out: the session was sealed with a key this server no longer has.',
  'session-cap':
    'You were signed out: you signed in on another device, past the most sessions one user may have, and this one was used least recently.',
}

const ORDINALS = [
  'first',
  'second',
  'third',
  'fourth',
  'fifth',
  'sixth',
  'seventh',
  'eighth',
  'ninth',
  'tenth',
]

/**
 * The cap on sessions per user, as the manager holds it: how many of the user's sessions are live (the
 * list the cap counts) out of `maxSessionsPerUser`, and what its policy does to one more sign-in.
 */
function renderCap(manager: SessionManager<DemoData>, live: number): string {
  const cap = manager.options.maxSessionsPerUser
  if (cap === null) return '<p class="muted" id="cap" data-max="none">No cap on sessions per user.</p>'
  const policy = manager.options.sessionCapPolicy
  const next = ORDINALS[cap] ?? `${cap + 1}th`
  const does =
    policy === 'refuse'
      ? `signing in on a ${next} is refused`
      : `signing in on a ${next} ends the least recently used`
  return `<p id="cap" data-count="${live}" data-max="${cap}" data-policy="${escapeHtml(policy)}">${live} of at most ${cap} sessions; ${does}.
<span class="muted">(<code>maxSessionsPerUser: ${cap}</code>, <code>sessionCapPolicy: '${escapeHtml(policy)}'</code>: "least recently used" by the last request, as "Last seen" shows it)</span></p>`
}

function renderSessions(list: readonly UserSessionInfo[], session: Session<DemoData>): string {
  const rows = list.map(
    (info) => `<tr class="device" data-session="${info.current ? 'current' : 'other'}">
  <td>${formatTime(info.createdAt)}</td>
  <td>${formatTime(info.lastSeenAt)}</td>
  <td>${escapeHtml(info.userAgent ?? 'unknown')}${info.current ? ' <strong>(this session)</strong>' : ''}</td>
  <td>${
    info.current
      ? `<form class="inline" method="post" action="/logout">${csrfField(session)}<button>Sign out</button></form>`
      : `<form class="inline" method="post" action="/revoke">${csrfField(session)}<input type="hidden" name="handle" value="${escapeHtml(info.handle)}"><button class="revoke">Revoke</button></form>`
  }</td>
</tr>`,
  )
  return `<table>
<thead><tr><th>Signed in</th><th>Last seen</th><th>Browser</th><th></th></tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>`
}

/** The store key of a session ID, as latchkey's stores keep it: SHA-256, base64url. Never rendered with its preimage. */
function storeKeyOf(id: string): string {
  return createHash('sha256').update(id).digest('base64url')
}

/** How many characters of the store key the session data keeps to tell when the ID changed. */
const ID_FINGERPRINT_LENGTH = 8

/** How many characters of the sealed payload the panel shows: the key id and the start of the nonce. */
export const PAYLOAD_PREFIX_LENGTH = 24

/** A countdown: the client script (panel.js) counts it down from what the server computed. */
function countdown(name: string, deadline: number, now: number): string {
  const left = Math.max(0, deadline - now)
  return `<span class="countdown" data-countdown="${name}" data-left-ms="${left}">${formatDuration(left)}</span>`
}

function formatDuration(ms: number): string {
  const s = Math.ceil(ms / 1000)
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  return `${h > 0 ? `${h} h ` : ''}${String(m).padStart(h > 0 ? 2 : 1, '0')} min ${String(s % 60).padStart(2, '0')} s`
}

/**
 * "What protects this session": only what the server knows. The cookie's attributes as latchkey sends
 * them, the record as this request read it from the store (its key, the hash of the ID; the first
 * characters of the sealed payload), the deadlines, the ID renewals, and a CSRF token masked afresh.
 */
function renderPanel(
  manager: SessionManager<DemoData>,
  session: Session<DemoData>,
  record: SessionRecord | null,
): string {
  const now = manager.options.clock.now()
  const cookie = session.cookie
  const settings = manager.options.cookie
  const attrs = [
    settings.name.startsWith('__Host-') ? '__Host- prefix' : null,
    cookie.secure ? 'Secure' : null,
    cookie.httpOnly ? 'HttpOnly' : null,
    `SameSite=${cookie.sameSite[0]?.toUpperCase()}${cookie.sameSite.slice(1)}`,
    `Path=${cookie.path}`,
    cookie.domain === undefined ? 'no Domain (host-only)' : `Domain=${cookie.domain}`,
    cookie.persistent
      ? `Max-Age=${Math.round((cookie.maxAge ?? 0) / 1000)}`
      : 'no Max-Age (dies with the browser)',
  ].filter((a) => a !== null)
  const cookieRow = `<dt>Cookie</dt><dd><code id="cookie-name">${escapeHtml(settings.name)}</code>: ${attrs
    .map((a) => `<span class="attr" data-attr="${escapeHtml(a)}">${escapeHtml(a)}</span>`)
    .join(' ')}
<div class="muted">Secure: sent over HTTPS only (browsers count localhost as secure). HttpOnly: no script can read it.
SameSite=Lax: another site's POST comes without it. __Host-: set by this host only, for the whole site.</div></dd>`
  const token = session.csrfToken()
  const tokenRow = `<dt>CSRF token</dt><dd><code id="csrf-token">${escapeHtml(token)}</code>
<div class="muted">Masked afresh on every render (reload: it changes), every one valid until sign-in or sign-out.</div></dd>`
  if (record === null) {
    return `<section id="panel" data-stored="false">
<h2>What protects this session</h2>
<dl>${cookieRow}
<dt>Record</dt><dd id="record">None in the store: nothing is stored until there is something to keep. The form tokens
rest on a short-lived sealed cookie, <code>${escapeHtml(manager.options.csrfCookie.name)}</code>.</dd>
${tokenRow}</dl>
</section>`
  }
  const renewedAt = session.get('renewedAt') ?? record.lastSeenAt
  const nextRenewal = renewedAt + manager.options.renewalIntervalMs
  return `<section id="panel" data-stored="true">
<h2>What protects this session</h2>
<dl>${cookieRow}
<dt>Record in the store</dt><dd id="record">key <code id="record-key">${escapeHtml(record.key)}</code>
<div class="muted">SHA-256 of the session ID: a stolen copy of the store is no list of cookies.</div>
version <span id="record-version">${record.version}</span>, user <code>${escapeHtml(record.userId ?? '(none)')}</code>,
payload <code id="record-payload">${escapeHtml(record.payload.slice(0, PAYLOAD_PREFIX_LENGTH))}</code>… (${record.payload.length} characters)
<div class="muted">Sealed with AES-256-GCM, bound to its key: the key id, then the nonce and ciphertext. Your counter and name are in there, unreadable.</div></dd>
<dt>Idle deadline</dt><dd>${countdown('idle', record.idleExpiresAt, now)} left: unused for ${formatDuration(manager.options.idleTimeoutMs)}, it ends</dd>
<dt>Absolute deadline</dt><dd>${countdown('absolute', record.absoluteExpiresAt, now)} left, however busy it is</dd>
<dt>Session ID issued</dt><dd><span id="renewed-at">${formatTime(renewedAt)}</span>${
    session.authenticatedAt !== null && Math.abs(session.authenticatedAt - renewedAt) < 1000
      ? ' (at your sign-in or password confirmation)'
      : ''
  }; next renewal: on the first request after <span id="next-renewal">${formatTime(nextRenewal)}</span> (${countdown('renewal', nextRenewal, now)})</dd>
${tokenRow}</dl>
</section>`
}

async function home(demo: DemoApp, session: Session<DemoData>, req: Request, res: Response): Promise<void> {
  const { manager } = demo
  const flash = session.get('flash')
  // The record as it sits in the store, read before this request's own writes (none on a plain view).
  const record = session.isNew ? null : await demo.store.get(storeKeyOf(session.id))
  if (flash !== undefined) session.delete('flash')
  const count = session.get('count') ?? 0
  const ended = session.endedBecause
  // The attack page is on the other loopback name: another site to the browser (see attack.ts).
  const attackUrl =
    demo.attackPort === null ? null : `http://${otherLoopbackName(req.hostname)}:${demo.attackPort}/`
  const parts = [
    '<h1>latchkey demo</h1>',
    `<nav><a href="/">Home</a> · <a href="/password">Change password</a> · <a href="/metrics" id="metrics-link">Metrics</a>${
      attackUrl === null
        ? ''
        : ` · <a id="attack-link" href="${escapeHtml(attackUrl)}">Try to attack this demo</a>`
    }</nav>`,
    ended === null
      ? ''
      : `<p class="notice" id="ended" data-reason="${escapeHtml(ended)}" role="status">${escapeHtml(ENDED_BECAUSE[ended] ?? ended)}</p>`,
    flash === undefined ? '' : `<p class="flash" role="status">${escapeHtml(flash)}</p>`,
    `<h2>Counter</h2>
<p>Count: <strong id="count">${count}</strong></p>
<form class="inline" method="post" action="/counter">${csrfField(session)}<button id="add-form">+1 with a form</button></form>
<button type="button" id="fetch-increment">+1 with fetch</button> <span id="fetch-status" class="muted"></span>
<p class="muted">The form sends its CSRF token in the <code>_csrf</code> field; the second button sends the
page's token (in <code>&lt;meta name="csrf-token"&gt;</code>) in the <code>x-csrf-token</code> header.
A POST without a valid token gets a 403.</p>`,
  ]
  const userId = session.userId
  if (userId === null) {
    parts.push(`<h2>Sign in</h2>
<p class="notice">This is a demo: a new name signs up with the password you type (kept in memory only, until
the demo restarts). Sign in with the same name in two browsers to see both devices below.</p>
<form method="post" action="/login">
  ${csrfField(session)}
  <label>Name <input id="name" name="name" required maxlength="${MAX_NAME_LENGTH}" autocomplete="username"></label>
  <label>Password <input id="password" name="password" type="password" required maxlength="${MAX_PASSWORD_LENGTH}" autocomplete="current-password"></label>
  <button id="sign-in">Sign in</button>
</form>`)
  } else {
    const list = await manager.listUserSessions(userId, { current: session })
    parts.push(
      `<p>Signed in as <strong id="user">${escapeHtml(userId)}</strong>.</p>`,
      `<section id="devices">
<h2>Your devices (${list.length})</h2>
${renderCap(manager, list.length)}
${renderSessions(list, session)}
<p>
<form class="inline" method="post" action="/logout-others">${csrfField(session)}<button id="sign-out-others">Sign out everywhere else</button></form>
<form class="inline" method="post" action="/logout">${csrfField(session)}<button id="sign-out">Sign out</button></form>
</p>
</section>`,
    )
  }
  parts.push(renderPanel(manager, session, record))
  const meta = `\n<meta name="csrf-token" content="${escapeHtml(session.csrfToken())}">\n<script src="/counter.js" defer></script>\n<script src="/panel.js" defer></script>`
  sendHtml(res, 200, 'Home', parts.filter((part) => part !== '').join('\n'), meta)
}

/**
 * The counters of `/metrics`, as the OpenTelemetry SDK collected them (`points`): four sums at a glance,
 * then every data point of each instrument. `/metrics.js` fetches it again every second (`/metrics/live`).
 */
function renderMetrics(points: readonly MetricPoint[]): string {
  const glance: [string, string, number][] = [
    ['loads', 'Sessions loaded', total(points, 'latchkey.session.loads')],
    ['commits', 'Commits', total(points, 'latchkey.session.commits')],
    ['ends', 'Ends', total(points, 'latchkey.session.events', isEnd)],
    ['csrf', 'CSRF refusals', total(points, 'latchkey.csrf.refusals')],
  ]
  const sections = INSTRUMENTS.map(({ name, counts }) => {
    const histogram = name === 'latchkey.store.duration'
    const rows = points
      .filter((point) => point.name === name)
      .map(
        (point) =>
          `<tr data-attrs="${escapeHtml(point.attributes)}"><td>${escapeHtml(point.attributes || '(none)')}</td>` +
          `<td class="value" data-value="${point.value}">${point.value}</td>${
            histogram
              ? `<td class="mean">${point.mean === null ? '' : `${point.mean.toFixed(2)} ms`}</td>`
              : ''
          }</tr>`,
      )
    const empty = `<tr class="empty"><td colspan="${histogram ? 3 : 2}" class="muted">nothing recorded yet</td></tr>`
    return `<section class="metric" data-metric="${escapeHtml(name)}">
<h2><code>${escapeHtml(name)}</code></h2>
<p class="muted">${escapeHtml(counts)}</p>
<table><thead><tr><th>attributes</th><th>${histogram ? 'calls' : 'count'}</th>${histogram ? '<th>mean</th>' : ''}</tr></thead>
<tbody>${rows.length === 0 ? empty : rows.join('\n')}</tbody></table>
</section>`
  })
  return `<dl id="glance">${glance
    .map(
      ([id, label, value]) =>
        `<div><dt>${escapeHtml(label)}</dt><dd id="glance-${id}" data-value="${value}">${value}</dd></div>`,
    )
    .join('')}</dl>
<div class="metrics">
${sections.join('\n')}
</div>`
}

function metricsPage(res: Response, points: readonly MetricPoint[]): void {
  res.set('Cache-Control', 'no-store')
  sendHtml(
    res,
    200,
    'Metrics',
    `<h1>Metrics</h1>
<nav><a href="/">Home</a> · <a href="/password">Change password</a> · <a href="/metrics">Metrics</a></nav>
<p>What latchkey counts through the OpenTelemetry metrics API, as the SDK's reader collects it: the manager
records into a <code>Meter</code> of the demo's <code>MeterProvider</code> (<code>createSessionManager({ metrics: meter })</code>).
This page refreshes every second; it is served before the session middleware, so watching it counts nothing.
Ends: the <code>destroyed</code>, <code>revoked</code> and <code>expired</code> events (one <code>revoked</code> event
may end several sessions: "sign out everywhere else", the cap).</p>
<div id="metrics" aria-live="polite">
${renderMetrics(points)}
</div>`,
    '\n<script src="/metrics.js" defer></script>',
  )
}

/** The "change password" page, or the "confirm your password" page the fresh-authentication guard leads to. */
function passwordPage(
  res: Response,
  session: Session<DemoData>,
  freshAuthMs: number,
  confirm: { status: number; message?: string } | null,
): void {
  const minutes = Math.round(freshAuthMs / 60_000)
  const back = '<p><a href="/">Back to the demo</a></p>'
  if (confirm !== null) {
    sendHtml(
      res,
      confirm.status,
      'Confirm your password',
      `<h1>Confirm your password</h1>
<p class="notice" id="fresh-auth" data-state="required">Changing the password needs a sign-in less than ${minutes} min old
(<code>requireFreshAuth(${freshAuthMs})</code>). Yours is older: prove it is you again.</p>
${confirm.message === undefined ? '' : `<p class="flash" role="alert">${escapeHtml(confirm.message)}</p>`}
<form method="post" action="/confirm">
  ${csrfField(session)}
  <label>Password <input id="confirm-password" name="password" type="password" required maxlength="${MAX_PASSWORD_LENGTH}" autocomplete="current-password"></label>
  <button id="confirm">Confirm</button>
</form>
<p class="muted">A confirmation calls <code>session.reauthenticate()</code>: the sign-in counts as fresh again, and the session ID is renewed.</p>
${back}`,
    )
    return
  }
  const at = session.authenticatedAt ?? 0
  sendHtml(
    res,
    200,
    'Change password',
    `<h1>Change password</h1>
<p class="flash" id="fresh-auth" data-state="fresh">You proved who you are at ${formatTime(at)}: fresh enough for the next ${minutes} min.</p>
<form method="post" action="/password">
  ${csrfField(session)}
  <label>New password <input id="new-password" name="password" type="password" required maxlength="${MAX_PASSWORD_LENGTH}" autocomplete="new-password"></label>
  <button id="change-password">Change password</button>
</form>
${back}`,
  )
}

/**
 * Builds the demo's Express app on a {@link SqliteStore} at `storePath` (its schema created) or the
 * store of `storeUrl`. {@link createDemoServer} also starts listening.
 */
export async function createDemoApp(options: DemoAppOptions): Promise<DemoApp> {
  let store: SessionStore
  if (options.storeUrl !== undefined) {
    store = await openStore(options.storeUrl)
  } else if (options.storePath !== undefined) {
    const sqlite = new SqliteStore({ path: options.storePath, busyTimeoutMs: options.busyTimeoutMs })
    await sqlite.migrate()
    store = sqlite
  } else {
    throw new TypeError('createDemoApp: give storePath or storeUrl')
  }
  const metrics = new DemoMetrics()
  // A production app's defaults: the cookie is `__Host-sid`, Secure, HttpOnly, SameSite=Lax. Browsers
  // send Secure cookies back to http://localhost and http://127.0.0.1 (secure contexts); anywhere else
  // the demo needs HTTPS in front of it. A user has at most three sessions: a fourth sign-in ends the
  // one used least recently. The manager counts into the demo's OpenTelemetry meter (metrics.ts).
  const manager = createSessionManager<DemoData>({
    store,
    keys: options.keys,
    maxSessionsPerUser: options.maxSessionsPerUser ?? 3,
    sessionCapPolicy: 'end-least-recent',
    metrics: metrics.meter,
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  })
  const freshAuthMs = options.freshAuthMs ?? 5 * 60_000
  const passwords = new Passwords()
  // Loads req's session, commits it before the response leaves, and runs the CSRF check on every
  // POST before its route: where it came from (Sec-Fetch-Site, Origin), and the token from the
  // x-csrf-token header or the form's _csrf field. Failures go to the error handler at the end.
  const auth = sessions(manager, { csrf: { maxBodyBytes: MAX_BODY_BYTES } })
  const demo: DemoApp = { app: express(), manager, store, metrics, attempts: new Map(), attackPort: null }
  const { app } = demo

  app.disable('x-powered-by')
  app.use((req, res, next) => {
    res.set(SECURITY_HEADERS)
    noteAttempt(demo, req, res)
    next()
  })
  // Before the session middleware: the browser asks for these without a thought, and they need no session.
  app.get('/favicon.ico', (_req, res) => {
    res.status(204).end()
  })
  app.get('/counter.js', (_req, res) => {
    res.type('text/javascript').send(COUNTER_SCRIPT)
  })
  app.get('/panel.js', (_req, res) => {
    res.type('text/javascript').send(PANEL_SCRIPT)
  })
  // The metrics too: reading them loads no session, so watching them changes nothing they count.
  app.get('/metrics', async (_req, res) => {
    metricsPage(res, await metrics.read())
  })
  app.get('/metrics/live', async (_req, res) => {
    res
      .set('Cache-Control', 'no-store')
      .type('html')
      .send(renderMetrics(await metrics.read()))
  })
  app.get('/metrics.js', (_req, res) => {
    res.type('text/javascript').send(METRICS_SCRIPT)
  })

  app.use(auth)
  // After the check, which read the form to find _csrf and left the body for this parser.
  app.use(express.urlencoded({ extended: false, limit: MAX_BODY_BYTES }))
  // The session ID changes at sign-in, at a password confirmation and every renewalIntervalMs (the
  // core renews it at a commit, unasked). The first request with a new ID notes when it was issued, for
  // the panel: the new record's lastSeenAt, written by the commit that issued it. The data keeps a short
  // fingerprint of the record's key (a hash of the ID's hash: no secret) to see the change.
  app.use(async (req, _res, next) => {
    const session = auth.session(req)
    if (session.isNew) {
      next()
      return
    }
    const key = storeKeyOf(session.id)
    const fingerprint = key.slice(0, ID_FINGERPRINT_LENGTH)
    if (session.get('idFingerprint') !== fingerprint) {
      const record = await store.get(key)
      session.set('idFingerprint', fingerprint)
      session.set('renewedAt', record?.lastSeenAt ?? manager.options.clock.now())
    }
    next()
  })

  app.get('/', async (req, res) => {
    await home(demo, auth.session(req), req, res)
  })

  app.post('/counter', (req, res) => {
    const count = auth.session(req).update('count', (n = 0) => n + 1)
    if (req.accepts(['html', 'json']) === 'json') res.json({ count })
    else res.redirect(303, '/')
  })

  app.post('/login', (req, res) => {
    const session = auth.session(req)
    const form = formOf(req)
    const name = field(form, 'name').trim()
    if (name.length < 1 || name.length > MAX_NAME_LENGTH) {
      throw new HttpError(400, `The name must be 1 to ${MAX_NAME_LENGTH} characters long.`)
    }
    if (!passwords.check(name, passwordField(form))) throw new HttpError(401, 'Wrong password.')
    session.login(name)
    session.set('flash', `Welcome, ${name}. Your session ID changed as you signed in.`)
    res.redirect(303, '/')
  })

  // The fresh-authentication guard: a sign-in older than freshAuthMs is refused with a FreshAuthError,
  // which the error handler turns into the "confirm your password" page.
  app.get('/password', requireFreshAuth(freshAuthMs), (req, res) => {
    passwordPage(res, auth.session(req), freshAuthMs, null)
  })

  app.post('/password', requireFreshAuth(freshAuthMs), (req, res) => {
    const session = auth.session(req)
    passwords.set(session.userId as string, passwordField(formOf(req)))
    session.set('flash', 'Password changed.')
    res.redirect(303, '/')
  })

  app.post('/confirm', (req, res) => {
    const session = auth.session(req)
    const userId = session.userId
    if (userId === null) throw new FreshAuthError('not-signed-in', freshAuthMs)
    if (!passwords.check(userId, passwordField(formOf(req)))) {
      passwordPage(res, session, freshAuthMs, { status: 403, message: 'Wrong password.' })
      return
    }
    session.reauthenticate()
    res.redirect(303, '/password')
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

  app.all(['/counter', '/login', '/logout', '/logout-others', '/revoke', '/confirm'], () => {
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
    if (error instanceof FreshAuthError && error.reason === 'reauthentication-required') {
      passwordPage(res, auth.session(req), freshAuthMs, { status: 403 })
      return
    }
    const { status, message, headers } = describeError(error)
    if (isCsrfError(error)) noteRefusal(req, error.reason, status)
    if (status === 500) console.error('demo:', error)
    res.set(headers)
    sendError(req, res, status, message)
  })

  return demo
}

/** Most requests the attack page can ask about; the oldest go first. */
const MAX_ATTEMPTS = 100
const ATTEMPT_ID = /^[A-Za-z0-9_-]{1,40}$/
/** The attempt each marked request is noted under. */
const ATTEMPTS = new WeakMap<Request, Attempt>()

/**
 * Notes a request the attack page marked with `?attempt=`, for it to show: what the browser sent
 * (`Sec-Fetch-Site`, the session cookie or not), then the status of the answer once it is sent.
 */
function noteAttempt(demo: DemoApp, req: Request, res: Response): void {
  const id = req.query.attempt
  if (typeof id !== 'string' || !ATTEMPT_ID.test(id)) return
  const cookieName = demo.manager.options.cookie.name
  const attempt: Attempt = {
    path: req.path,
    site: req.get('sec-fetch-site') ?? null,
    cookieCame: (req.get('cookie') ?? '').split(/;\s*/).some((pair) => pair.startsWith(`${cookieName}=`)),
    status: null,
    reason: null,
  }
  ATTEMPTS.set(req, attempt)
  demo.attempts.delete(id)
  demo.attempts.set(id, attempt)
  while (demo.attempts.size > MAX_ATTEMPTS) demo.attempts.delete(demo.attempts.keys().next().value as string)
  res.on('finish', () => {
    attempt.status = res.statusCode
  })
}

/** Records the CSRF refusal of a marked request, before its answer leaves. */
function noteRefusal(req: Request, reason: string, status: number): void {
  const attempt = ATTEMPTS.get(req)
  if (attempt === undefined) return
  attempt.reason = reason
  attempt.status = status
}

/** Builds the demo app (see {@link createDemoApp}), starts listening, and starts the attack page. */
export async function createDemoServer(options: DemoServerOptions): Promise<DemoServer> {
  const demo = await createDemoApp(options)
  const { app, manager } = demo
  const server = createServer(app)
  const host = options.host ?? '127.0.0.1'
  let attack: AttackServer
  try {
    await listen(server, options.port ?? 3000, host)
    const { port } = server.address() as AddressInfo
    const chosen = options.attackPort ?? (port === 0 || options.port === 0 ? 0 : port + 1)
    attack = await startAttackServer(demo, { host, port: chosen, demoPort: port }).catch((error: unknown) => {
      // The port next to the demo's is only a default: when it is taken, any free port serves.
      if (options.attackPort !== undefined || (error as NodeJS.ErrnoException).code !== 'EADDRINUSE')
        throw error
      return startAttackServer(demo, { host, port: 0, demoPort: port })
    })
    demo.attackPort = attack.port
  } catch (error) {
    server.close()
    await manager.close()
    await demo.metrics.close()
    throw error
  }
  const { port } = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  return {
    ...demo,
    url: `http://${host}:${port}`,
    attackUrl: `http://${otherLoopbackName(host)}:${attack.port}`,
    server,
    close() {
      closing ??= (async () => {
        // Idle keep-alive connections close at once; busy ones get a moment to finish.
        const force = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS).unref()
        await Promise.all([new Promise<void>((resolve) => server.close(() => resolve())), attack.close()])
        clearTimeout(force)
        await manager.close()
        await demo.metrics.close()
      })()
      return closing
    },
  }
}

/** Listens on `port` of `host`; rejects on an error such as a port in use. */
export function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}
