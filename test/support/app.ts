import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Session } from '../../src/core/session.js'

/** Session data of the test app. */
export type AppData = Record<string, unknown> & { n?: number }

/** Hooks a test can set to pause a request between loading and changing its session. */
export interface AppHooks {
  gate?: Promise<void>
  loaded?: () => void
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

/**
 * The test application: a few routes that exercise the session API, answering JSON.
 * GET /state, POST /set?key&value, /inc, /login?user, /logout, /regenerate, /destroy, /slow-set, /stream.
 */
export function testApp(hooks: AppHooks = {}) {
  return async (req: IncomingMessage, res: ServerResponse, session: Session<AppData>): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://test')
    const q = url.searchParams
    const state = () => ({
      isNew: session.isNew,
      userId: session.userId,
      n: session.get('n') ?? null,
      value: q.get('key') ? (session.get(q.get('key') as string) ?? null) : null,
    })
    // ?delay=ms holds the request between loading and changing its session, so parallel requests overlap.
    const delay = Number(q.get('delay') ?? 0)
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay))
    switch (url.pathname) {
      case '/state':
        return send(res, 200, state())
      case '/set':
        session.set(q.get('key') ?? 'k', q.get('value') ?? 'v')
        return send(res, 200, state())
      case '/inc':
        session.update('n', (n = 0) => n + 1)
        return send(res, 200, state())
      case '/login':
        session.login(q.get('user') ?? 'alice')
        return send(res, 200, state())
      case '/logout':
        session.logout()
        return send(res, 200, state())
      case '/regenerate':
        session.regenerate()
        return send(res, 200, state())
      case '/slow-set':
        hooks.loaded?.()
        await hooks.gate
        session.set(q.get('key') ?? 'k', q.get('value') ?? 'v')
        return send(res, 200, state())
      case '/slow-login':
        hooks.loaded?.()
        await hooks.gate
        session.login(q.get('user') ?? 'alice')
        return send(res, 200, state())
      case '/stream':
        // The handler writes the response itself, in pieces, without writeHead headers.
        session.set('streamed', true)
        res.statusCode = 200
        res.write('part one,')
        await new Promise((resolve) => setTimeout(resolve, 5))
        res.end('part two')
        return
      case '/throw':
        session.set('lost', true)
        throw new Error('handler failed')
      default:
        return send(res, 404, { error: 'not found' })
    }
  }
}

/** Hooks that hold a request after it loaded its session: `await isLoaded`, act, then `release()`. */
export function gatedHooks(): { hooks: AppHooks; isLoaded: Promise<void>; release(): void } {
  let release = (): void => {}
  let loaded = (): void => {}
  const isLoaded = new Promise<void>((resolve) => {
    loaded = resolve
  })
  const gate = new Promise<void>((resolve) => {
    release = resolve
  })
  return { hooks: { gate, loaded: () => loaded() }, isLoaded, release: () => release() }
}
