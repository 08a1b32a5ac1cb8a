/**
 * latchkey for node:http (and anything built on its request and response objects).
 *
 * `withSessions(manager, handler)` loads the session, runs the handler, and commits the session before
 * any byte of the response leaves, even when the handler writes the response itself: the first
 * `writeHead`/`write`/`end`/`flushHeaders` is held until the commit is done.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { ConflictError, StoreError } from '../core/errors.js'
import type { CommitResult, SessionManager } from '../core/manager.js'
import type { Session, SessionData } from '../core/session.js'

/** A node:http handler that also receives the session. */
export type SessionHandler<T extends SessionData, Req extends IncomingMessage = IncomingMessage> = (
  req: Req,
  res: ServerResponse,
  session: Session<T>,
) => unknown

/** Options of {@link withSessions}. */
export interface NodeAdapterOptions {
  /** Called with errors the adapter answered itself (store down: 503, handler threw: 500). Default `console.error`. */
  onError?: (error: unknown) => void
}

type Held = readonly ['writeHead' | 'write' | 'end' | 'flushHeaders', unknown[]]
const HELD_METHODS = ['writeHead', 'write', 'end', 'flushHeaders'] as const

/** Puts a commit's headers on a node response (or an Express one, which is the same object). */
export function applyCommitHeaders(res: ServerResponse, result: CommitResult): void {
  if (result.setCookie !== null) {
    const existing = res.getHeader('set-cookie')
    const cookies = existing === undefined ? [] : Array.isArray(existing) ? existing : [String(existing)]
    res.setHeader('Set-Cookie', [...cookies, result.setCookie])
  }
  if (result.private) {
    res.setHeader('Cache-Control', 'no-store')
    const vary = res.getHeader('vary')
    const values = vary === undefined ? '' : String(vary)
    if (!/(^|,)\s*(cookie|\*)\s*(,|$)/i.test(values))
      res.setHeader('Vary', values ? `${values}, Cookie` : 'Cookie')
  }
}

/** Answers a request that the adapter itself must fail (store down, conflict, handler crash). */
export function sendFailure(res: ServerResponse, error: unknown): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const unavailable = error instanceof StoreError || error instanceof ConflictError
  const status = unavailable ? 503 : 500
  const message = unavailable
    ? 'Service unavailable: the session store is not answering. Please try again shortly.\n'
    : 'Internal server error.\n'
  for (const name of res.getHeaderNames()) res.removeHeader(name)
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Cache-Control': 'no-store',
    ...(unavailable ? { 'Retry-After': '1' } : {}),
  })
  res.end(message)
}

/** Control over a response whose output is held until the session is committed. */
export interface HeldResponse {
  /** True once the handler has tried to send something (and the commit has started). */
  readonly started: boolean
  /** Gives the response back untouched, without committing (the handler failed before output). */
  release(): void
}

/**
 * Holds back every output call on `res` until `commit` has run, then applies its headers and
 * replays the calls in order. If the commit fails, the held output is dropped and `onFailure` answers.
 */
export function holdUntilCommitted(
  res: ServerResponse,
  commit: () => Promise<CommitResult>,
  onFailure: (error: unknown) => void,
): HeldResponse {
  const target = res as unknown as Record<string, unknown>
  const originals = HELD_METHODS.map((name) => [name, Object.getOwnPropertyDescriptor(res, name)] as const)
  const held: Held[] = []
  let started = false
  const restore = (): void => {
    for (const [name, descriptor] of originals) {
      if (descriptor) Object.defineProperty(res, name, descriptor)
      else delete target[name]
    }
  }
  const start = (): void => {
    started = true
    commit().then(
      (result) => {
        restore()
        const head = held.find(([name]) => name === 'writeHead')
        if (head) replayWriteHead(res, head[1], result)
        else applyCommitHeaders(res, result)
        for (const [name, args] of held) {
          if (name !== 'writeHead') (res[name] as (...a: unknown[]) => unknown).apply(res, args)
        }
      },
      (error: unknown) => {
        restore()
        onFailure(error)
      },
    )
  }
  for (const name of HELD_METHODS) {
    target[name] = (...args: unknown[]) => {
      held.push([name, args])
      if (!started) start()
      return name === 'write' ? true : res
    }
  }
  return {
    get started() {
      return started
    },
    release: restore,
  }
}

function replayWriteHead(res: ServerResponse, args: unknown[], result: CommitResult): void {
  const [status, second, third] = args
  const headers = typeof second === 'string' ? third : second
  if (headers && typeof headers === 'object' && !Array.isArray(headers)) {
    for (const [name, value] of Object.entries(headers as OutgoingHttpHeaders)) {
      if (value !== undefined) res.setHeader(name, value)
    }
    applyCommitHeaders(res, result)
    if (typeof second === 'string') res.writeHead(status as number, second)
    else res.writeHead(status as number)
    return
  }
  // No headers, or a raw header array: set ours first and let node combine them.
  applyCommitHeaders(res, result)
  ;(res.writeHead as (...a: unknown[]) => unknown).apply(res, args)
}

/**
 * Wraps a node:http handler with sessions: `http.createServer(withSessions(manager, handler))`.
 * A failing store answers 503 (the handler never runs with a missing session); a handler that throws
 * before responding answers 500 and its session changes are not saved.
 */
export function withSessions<T extends SessionData, Req extends IncomingMessage = IncomingMessage>(
  manager: SessionManager<T>,
  handler: SessionHandler<T, Req>,
  options: NodeAdapterOptions = {},
): (req: Req, res: ServerResponse) => Promise<void> {
  const onError = options.onError ?? ((error: unknown) => console.error('latchkey:', error))
  return async (req, res) => {
    let session: Session<T>
    try {
      session = await manager.load({ cookie: req.headers.cookie, userAgent: req.headers['user-agent'] })
    } catch (error) {
      onError(error)
      sendFailure(res, error)
      return
    }
    const fail = (error: unknown): void => {
      onError(error)
      sendFailure(res, error)
    }
    const held = holdUntilCommitted(res, () => manager.commit(session), fail)
    try {
      await handler(req, res, session)
    } catch (error) {
      if (held.started) {
        onError(error)
        return
      }
      // Nothing has left yet: drop the request's session changes and answer 500.
      held.release()
      fail(error)
    }
  }
}
