/**
 * Sessions on WebSocket (and any other HTTP) upgrades, which no middleware sees: node emits
 * 'upgrade' on the server, never 'request', so `withSessions` and the Express middleware never run.
 *
 * `createUpgradeGuard(manager, options).check(req)` does for an upgrade request what the adapters do
 * for a request: it checks where the request comes from, then loads the session. Browsers send cookies
 * on a cross-site WebSocket handshake and no CORS applies to it, so the `Origin` (which a browser always
 * sends on one) must be this app's or a trusted one, or a page of any site could open a socket as the
 * signed-in user (cross-site WebSocket hijacking). The origin is decided by the CSRF check's own rule
 * (`ownOrigin`), with the same options. Nothing is committed: the session is read-only for the socket.
 * `refuseUpgrade(socket, refusal)` answers a refused upgrade on the raw socket.
 *
 * Everything this module exports is public: `latchkey/node` and `latchkey/express` re-export all of it.
 */

import type { IncomingMessage } from 'node:http'
import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import { ConfigError, isUnavailableError } from '../core/errors.js'
import { refuseUnknownOptions } from '../core/known-options.js'
import type { SessionManager } from '../core/manager.js'
import type { Session, SessionData } from '../core/session.js'
import type { OriginFacts, OwnOriginOptions } from '../csrf/origin.js'
import { normalizeOrigin, ownOrigin } from '../csrf/origin.js'
import { encrypted, FrontDoor } from './kernel.js'

/** Options of {@link createUpgradeGuard}: the CSRF check's origin options, and what to do without `Origin`. */
export interface UpgradeGuardOptions {
  /**
   * The app's own origin, exactly as browsers send it in `Origin`: `https://app.example`. Default:
   * the `Host` header with the scheme of the connection (see `trustProxy`). Pass the same value as
   * the adapter's `csrf.origin`.
   */
  origin?: string
  /**
   * Other origins whose pages may open sockets with the user's session, each `scheme://host[:port]`,
   * compared exactly. Pass the same list as the adapter's `csrf.trustedOrigins`. Default none.
   */
  trustedOrigins?: readonly string[]
  /**
   * One reverse proxy in front of the app sets `X-Forwarded-Proto` and `X-Forwarded-Host`: the own
   * origin is taken from their last values. Never set it when clients can reach the app without
   * passing the proxy. Ignored when `origin` is set. Default `false`.
   */
  trustProxy?: boolean
  /**
   * Refuse an upgrade without an `Origin` header (403, `missing-origin`). Browsers always send one on
   * a WebSocket handshake, so only non-browser clients go without; they carry no browser's ambient
   * cookies, but the guard cannot tell a forged client from a real one. `false` lets them through
   * (with the session their `Cookie` names). Default `true`.
   */
  requireOrigin?: boolean
}

/** {@link UpgradeGuardOptions} after defaults and validation. */
export interface ResolvedUpgradeGuardOptions extends OwnOriginOptions {
  readonly trustedOrigins: ReadonlySet<string>
  readonly requireOrigin: boolean
}

/**
 * Why an upgrade was refused:
 * - `missing-origin` (403): no `Origin` header, and `requireOrigin` is on;
 * - `origin-mismatch` (403): an `Origin` that is neither the app's own nor trusted, or `null`;
 * - `store-unavailable` (503): the store failed or a write conflict lasted; try again shortly;
 * - `internal-error` (500): loading the session failed for another reason (see `error`);
 * - `session-changed` (403, from {@link UpgradeGuard.recheck} only): the session the socket was opened
 *   with is no longer the same user's, signed in (logged out, revoked, expired, or its ID renewed away).
 */
export type UpgradeRefusalReason =
  | 'missing-origin'
  | 'origin-mismatch'
  | 'store-unavailable'
  | 'internal-error'
  | 'session-changed'

/** A refused upgrade: the status to answer with {@link refuseUpgrade}, and why. */
export interface UpgradeRefusal {
  readonly ok: false
  readonly status: 403 | 500 | 503
  readonly reason: UpgradeRefusalReason
  /** What loading the session failed with (`store-unavailable`, `internal-error`), for your logs. */
  readonly error?: unknown
}

/** The outcome of {@link UpgradeGuard.check}: the session of the upgrade request, or a refusal. */
export type UpgradeCheck<T extends SessionData = SessionData> =
  | { readonly ok: true; readonly session: Session<T> }
  | UpgradeRefusal

/** The guard of upgrade requests, built once per app by {@link createUpgradeGuard}. */
export interface UpgradeGuard<T extends SessionData = SessionData> {
  /** The options in force. */
  readonly options: ResolvedUpgradeGuardOptions
  /**
   * Checks the upgrade request's `Origin`, then loads its session. Never rejects: a store failure is
   * a refusal with status 503. A refused origin never reaches the store. While it runs, an error on
   * the connection (the client went away) destroys the socket instead of going unhandled: call
   * `handleUpgrade` or {@link refuseUpgrade} as soon as it resolves. The session is read-only: what
   * the application changes on it is never committed.
   */
  check(req: IncomingMessage): Promise<UpgradeCheck<T>>
  /**
   * For a long-lived socket: {@link check} again with the handshake request (its cookie), refused with
   * `session-changed` unless the session still belongs to the same user (`session.userId`, `null` for
   * an anonymous socket). Resolves with the session loaded now, whose data is current.
   */
  recheck(req: IncomingMessage, session: Session<T>): Promise<UpgradeCheck<T>>
}

const refusal = (status: 403 | 500 | 503, reason: UpgradeRefusalReason, error?: unknown): UpgradeRefusal =>
  Object.freeze(error === undefined ? { ok: false, status, reason } : { ok: false, status, reason, error })

const MISSING_ORIGIN = refusal(403, 'missing-origin')
const ORIGIN_MISMATCH = refusal(403, 'origin-mismatch')
const SESSION_CHANGED = refusal(403, 'session-changed')

/** Applies defaults and validates. Throws `ConfigError` naming the first bad option (`upgrade.origin`...). */
function resolveUpgradeGuardOptions(options: UpgradeGuardOptions = {}): ResolvedUpgradeGuardOptions {
  if (!options || typeof options !== 'object') throw new ConfigError('upgrade', 'must be an object')
  refuseUnknownOptions(options, ['origin', 'trustedOrigins', 'trustProxy', 'requireOrigin'], {
    path: 'upgrade',
    owner: 'createUpgradeGuard',
  })
  const origin = options.origin === undefined ? null : normalizeOrigin(options.origin, 'upgrade.origin')
  const list = options.trustedOrigins ?? []
  if (!Array.isArray(list)) throw new ConfigError('upgrade.trustedOrigins', 'must be an array of origins')
  const trustedOrigins = new Set(
    list.map((entry, i) => normalizeOrigin(entry, `upgrade.trustedOrigins[${i}]`)),
  )
  const trustProxy = options.trustProxy ?? false
  if (typeof trustProxy !== 'boolean') throw new ConfigError('upgrade.trustProxy', 'must be a boolean')
  const requireOrigin = options.requireOrigin ?? true
  if (typeof requireOrigin !== 'boolean') {
    throw new ConfigError('upgrade.requireOrigin', 'must be a boolean (default true)')
  }
  return Object.freeze({ origin, trustedOrigins, trustProxy, requireOrigin })
}

/** A node request as {@link ownOrigin} reads it: the connection's TLS, `Host`, and headers. */
function originFacts(req: IncomingMessage): OriginFacts {
  return {
    secure: encrypted(req),
    host: req.headers.host,
    header: (name) => {
      const value = req.headers[name]
      return Array.isArray(value) ? value.join(', ') : value
    },
  }
}

/** Why the request's `Origin` is refused, or `null` when it may open a socket with the session. */
function originRefusal(options: ResolvedUpgradeGuardOptions, req: IncomingMessage): UpgradeRefusal | null {
  const origin = req.headers.origin
  if (origin === undefined) return options.requireOrigin ? MISSING_ORIGIN : null
  // `null` (a sandboxed frame, a data: URL) is never an origin of ours.
  if (origin === 'null') return ORIGIN_MISMATCH
  if (options.trustedOrigins.has(origin) || origin === ownOrigin(options, originFacts(req))) return null
  return ORIGIN_MISMATCH
}

class Guard<T extends SessionData> implements UpgradeGuard<T> {
  private readonly door: FrontDoor<T>

  constructor(
    manager: SessionManager<T>,
    readonly options: ResolvedUpgradeGuardOptions,
  ) {
    this.door = new FrontDoor(manager, false)
  }

  async check(req: IncomingMessage): Promise<UpgradeCheck<T>> {
    const refused = originRefusal(this.options, req)
    if (refused !== null) return refused
    // node took its own error listener off the socket when it emitted 'upgrade'.
    const socket = req.socket
    const destroy = () => socket.destroy()
    socket.on('error', destroy)
    try {
      const session = await this.door.load(req.headers.cookie, req.headers['user-agent'])
      return { ok: true, session }
    } catch (error) {
      return isUnavailableError(error)
        ? refusal(503, 'store-unavailable', error)
        : refusal(500, 'internal-error', error)
    } finally {
      socket.off('error', destroy)
    }
  }

  async recheck(req: IncomingMessage, session: Session<T>): Promise<UpgradeCheck<T>> {
    const again = await this.check(req)
    if (!again.ok || again.session.userId === session.userId) return again
    return SESSION_CHANGED
  }
}

/**
 * The upgrade guard for `manager`'s sessions: use the manager your adapter uses, and the origin
 * options of its `csrf`. Throws `ConfigError` for bad options.
 *
 *     const upgrade = createUpgradeGuard(manager)
 *     server.on('upgrade', async (req, socket, head) => {
 *       const result = await upgrade.check(req)
 *       if (!result.ok) return refuseUpgrade(socket, result)
 *       wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req, result.session))
 *     })
 */
export function createUpgradeGuard<T extends SessionData = SessionData>(
  manager: SessionManager<T>,
  options: UpgradeGuardOptions = {},
): UpgradeGuard<T> {
  return new Guard(manager, resolveUpgradeGuardOptions(options))
}

/**
 * Answers an upgrade request that will not be upgraded: a minimal HTTP/1.1 response with `status`
 * (400 to 599) and a plain-text line naming `reason`, `Connection: close`, nothing cached
 * (`Retry-After: 1` with a 503); then the socket is destroyed. Takes a refusal from
 * {@link UpgradeGuard.check}, or your own (`{ status: 401, reason: 'sign in first' }`). Throws a
 * `TypeError` (after destroying the socket) for a status outside 400 to 599.
 */
export function refuseUpgrade(
  socket: Duplex,
  refused: { readonly status: number; readonly reason: string },
): void {
  const { status, reason } = refused
  // The client may reset the connection before the answer leaves: that is no error of the server's.
  socket.on('error', () => socket.destroy())
  if (!Number.isInteger(status) || status < 400 || status > 599) {
    socket.destroy()
    throw new TypeError(`refuseUpgrade: status must be an integer from 400 to 599, got ${String(status)}`)
  }
  if (!socket.writable) {
    socket.destroy()
    return
  }
  const text = STATUS_CODES[status] ?? 'Error'
  const body = `${text}: this connection upgrade was refused (${String(reason)}).\n`
  const head = [
    `HTTP/1.1 ${status} ${text}`,
    'Connection: close',
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Cache-Control: no-store',
  ]
  if (status === 503) head.push('Retry-After: 1')
  socket.once('finish', () => socket.destroy())
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`)
}
