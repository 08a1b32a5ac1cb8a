/**
 * The upgrade guard (`createUpgradeGuard`, `refuseUpgrade`) with real `ws` clients and servers, on
 * node:http and on the `http.Server` Express's `app.listen` returns: a WebSocket handshake loads the
 * session its cookie names only from the app's own origin or a trusted one, a refusal is an HTTP
 * answer on the raw socket with nothing upgraded, a failing store is a 503 and never an exception out
 * of the 'upgrade' handler, and `recheck` tells a long-lived socket that its session ended.
 */
import type { IncomingMessage, Server } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { connect as connectTcp } from 'node:net'
import type { Duplex } from 'node:stream'
import { serve, upgradeWebSocket } from '@hono/node-server'
import express from 'express'
import { Hono } from 'hono'
import { afterEach, describe, expect, test } from 'vitest'
import type { RawData } from 'ws'
import { WebSocket, WebSocketServer } from 'ws'
import { sessions } from '../src/adapters/express.js'
import { sessions as honoSessions } from '../src/adapters/hono.js'
import type { UpgradeGuard, UpgradeGuardOptions } from '../src/adapters/node.js'
import { createUpgradeGuard, refuseUpgrade, withSessions } from '../src/adapters/node.js'
import { ConfigError } from '../src/core/errors.js'
import type { SessionManager } from '../src/core/manager.js'
import type { Session } from '../src/core/session.js'
import { createSessionManager, generateKey, MemoryStore } from '../src/index.js'
import { pausable } from './support/pausing-store.js'

type Data = Record<string, unknown>

/** What the socket's first message says about the session the handshake loaded. */
interface Hello {
  readonly userId: string | null
  readonly isNew: boolean
}

type Outcome =
  | { readonly kind: 'open'; readonly hello: Hello; readonly ws: WebSocket }
  | { readonly kind: 'refused'; readonly status: number; readonly body: string; readonly retryAfter?: string }

/**
 * A MemoryStore behind the pausing wrapper (which hides the synchronous methods, so every load takes
 * the asynchronous path a pause can hold), and a switch that makes every call of it fail.
 */
function makeStore() {
  const paused = pausable(new MemoryStore())
  const state = { down: false }
  const store = new Proxy(paused.store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target)
      if (typeof value !== 'function') return value
      return (...args: unknown[]) =>
        state.down ? Promise.reject(new Error('connection refused')) : value.apply(target, args)
    },
  })
  return { store, paused, state }
}

function makeManager() {
  const { store, paused, state } = makeStore()
  const manager = createSessionManager<Data>({ store, keys: [generateKey()], cookie: { secure: false } })
  return { manager, paused, state }
}

/** The session cookie (`sid=...`) of a response, for the next request. */
function sessionCookie(response: Response): string {
  const cookie = response.headers
    .getSetCookie()
    .map((raw) => raw.split(';')[0] ?? '')
    .find((pair) => pair.startsWith('sid='))
  if (cookie === undefined) throw new Error('the response set no session cookie')
  return cookie
}

/** What a socket server sees: connections made, sockets handed to the 'upgrade' handler, its outcome. */
interface Upgrades {
  connections: number
  sockets: Duplex[]
  handled: Promise<void>[]
}

/**
 * The documented pattern on `server`: check, refuse or upgrade, hand the session to the socket. The
 * socket greets with the session's user; the message `recheck` answers with `upgrade.recheck`'s verdict.
 */
function acceptUpgrades(server: Server, upgrade: UpgradeGuard<Data>): Upgrades {
  const wss = new WebSocketServer({ noServer: true })
  const seen: Upgrades = { connections: 0, sockets: [], handled: [] }
  wss.on('connection', (ws: WebSocket, req: IncomingMessage, session: Session<Data>) => {
    seen.connections++
    ws.send(JSON.stringify({ userId: session.userId, isNew: session.isNew }))
    ws.on('message', async (data: RawData) => {
      if (String(data) !== 'recheck') return
      const again = await upgrade.recheck(req, session)
      ws.send(JSON.stringify(again.ok ? { ok: true, userId: again.session.userId } : again))
    })
  })
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    seen.sockets.push(socket)
    const handling = (async () => {
      const result = await upgrade.check(req)
      if (!result.ok) return refuseUpgrade(socket, result)
      wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req, result.session))
    })()
    seen.handled.push(handling)
  })
  server.on('close', () => wss.close())
  return seen
}

const opened: WebSocket[] = []
const servers: Server[] = []

afterEach(async () => {
  for (const ws of opened.splice(0)) ws.terminate()
  await Promise.all(
    servers.splice(0).map(
      (server) =>
        new Promise<void>((resolve) => {
          server.closeAllConnections()
          server.close(() => resolve())
        }),
    ),
  )
})

async function listen(server: Server): Promise<string> {
  servers.push(server)
  if (!server.listening) await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** Opens a WebSocket as a browser would (with `origin`) or as another client (without). */
function openSocket(
  host: string,
  options: { origin?: string; cookie?: string; headers?: Record<string, string> },
): Promise<Outcome> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.cookie !== undefined) headers.cookie = options.cookie
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${host}/socket`, { origin: options.origin, headers })
    opened.push(ws)
    ws.once('message', (data: RawData) => resolve({ kind: 'open', hello: JSON.parse(String(data)), ws }))
    ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        body += chunk
      })
      res.on('end', () => {
        const retryAfter = res.headers['retry-after']
        resolve({ kind: 'refused', status: res.statusCode ?? 0, body, ...(retryAfter ? { retryAfter } : {}) })
      })
    })
    ws.once('error', reject)
  })
}

/** The next message of an open socket, parsed. */
function nextMessage(ws: WebSocket): Promise<Record<string, unknown>> {
  return new Promise((resolve) => ws.once('message', (data: RawData) => resolve(JSON.parse(String(data)))))
}

/** A node:http app with sessions: `/login?user=` signs in, `/logout` signs out. */
async function nodeApp(options: UpgradeGuardOptions = {}) {
  const { manager, paused, state } = makeManager()
  const server = createServer(
    withSessions(manager, (req, res, session) => {
      const url = new URL(req.url ?? '/', 'http://app.test')
      if (url.pathname === '/login') session.login(url.searchParams.get('user') ?? 'alice')
      if (url.pathname === '/logout') session.logout()
      res.end('ok')
    }),
  )
  const upgrades = acceptUpgrades(server, createUpgradeGuard(manager, options))
  const host = await listen(server)
  return { manager, paused, state, server, upgrades, host, origin: `http://${host}` }
}

async function signIn(host: string, user: string): Promise<string> {
  return sessionCookie(await fetch(`http://${host}/login?user=${user}`))
}

describe('node:http', () => {
  test('a same-origin upgrade with a signed-in cookie gets the session of its user', async () => {
    const app = await nodeApp()
    const cookie = await signIn(app.host, 'alice')
    const outcome = await openSocket(app.host, { origin: app.origin, cookie })
    expect(outcome).toMatchObject({ kind: 'open', hello: { userId: 'alice', isNew: false } })
  })

  test('a cross-site Origin is refused 403 before the store is read, and nothing is upgraded', async () => {
    const app = await nodeApp()
    const cookie = await signIn(app.host, 'alice')
    const reads = app.paused.calls.length
    for (const origin of [
      'https://evil.example',
      'null',
      `https://${app.host}`,
      `${app.origin}.evil.example`,
    ]) {
      const outcome = await openSocket(app.host, { origin, cookie })
      expect(outcome).toMatchObject({ kind: 'refused', status: 403 })
      expect(outcome.kind === 'refused' && outcome.body).toContain('origin-mismatch')
    }
    await Promise.all(app.upgrades.handled)
    expect(app.upgrades.connections).toBe(0)
    expect(app.paused.calls.length).toBe(reads)
    expect(app.upgrades.sockets.every((socket) => socket.destroyed)).toBe(true)
  })

  test('without Origin: refused 403 missing-origin by default; with requireOrigin: false, the session its cookie names', async () => {
    const strict = await nodeApp()
    const cookie = await signIn(strict.host, 'alice')
    const refused = await openSocket(strict.host, { cookie })
    expect(refused).toMatchObject({ kind: 'refused', status: 403 })
    expect(refused.kind === 'refused' && refused.body).toContain('missing-origin')
    expect(strict.upgrades.connections).toBe(0)

    const lenient = await nodeApp({ requireOrigin: false })
    const lenientCookie = await signIn(lenient.host, 'bob')
    const outcome = await openSocket(lenient.host, { cookie: lenientCookie })
    expect(outcome).toMatchObject({ kind: 'open', hello: { userId: 'bob' } })
    // requireOrigin only lets a missing Origin through, never a foreign one.
    const foreign = await openSocket(lenient.host, { origin: 'https://evil.example', cookie: lenientCookie })
    expect(foreign).toMatchObject({ kind: 'refused', status: 403 })
  })

  test('a trusted origin passes; an origin not on the list does not', async () => {
    const app = await nodeApp({ trustedOrigins: ['https://partner.example'] })
    const cookie = await signIn(app.host, 'alice')
    const trusted = await openSocket(app.host, { origin: 'https://partner.example', cookie })
    expect(trusted).toMatchObject({ kind: 'open', hello: { userId: 'alice' } })
    const other = await openSocket(app.host, { origin: 'https://other.partner.example', cookie })
    expect(other).toMatchObject({ kind: 'refused', status: 403 })
  })

  test('behind a trusted proxy the own origin is the forwarded one; without trustProxy it is not', async () => {
    const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'app.example' }
    const proxied = await nodeApp({ trustProxy: true })
    const cookie = await signIn(proxied.host, 'alice')
    const through = await openSocket(proxied.host, {
      origin: 'https://app.example',
      cookie,
      headers: forwarded,
    })
    expect(through).toMatchObject({ kind: 'open', hello: { userId: 'alice' } })
    // The connection's own origin no longer counts once the proxy names another.
    const direct = await openSocket(proxied.host, { origin: proxied.origin, cookie, headers: forwarded })
    expect(direct).toMatchObject({ kind: 'refused', status: 403 })

    const plain = await nodeApp()
    const plainCookie = await signIn(plain.host, 'alice')
    const spoofed = await openSocket(plain.host, {
      origin: 'https://app.example',
      cookie: plainCookie,
      headers: forwarded,
    })
    expect(spoofed).toMatchObject({ kind: 'refused', status: 403 })
  })

  test('a store that fails gives 503 with Retry-After on the socket, and no exception leaves the handler', async () => {
    const app = await nodeApp()
    const cookie = await signIn(app.host, 'alice')
    app.state.down = true
    const outcome = await openSocket(app.host, { origin: app.origin, cookie })
    expect(outcome).toMatchObject({ kind: 'refused', status: 503, retryAfter: '1' })
    expect(outcome.kind === 'refused' && outcome.body).toContain('store-unavailable')
    await expect(Promise.all(app.upgrades.handled)).resolves.toBeDefined()
    expect(app.upgrades.connections).toBe(0)
  })

  test('the check gives the store error for logs with the refusal', async () => {
    const { manager, state } = makeManager()
    state.down = true
    const result = await createUpgradeGuard(manager, { requireOrigin: false }).check(
      fakeRequest({ cookie: `sid=${'a'.repeat(43)}` }),
    )
    expect(result).toMatchObject({ ok: false, status: 503, reason: 'store-unavailable' })
    expect(!result.ok && (result.error as { code?: string }).code).toBe('ERR_LATCHKEY_STORE')
  })

  test('a logged-out cookie gets an anonymous session', async () => {
    const app = await nodeApp()
    const cookie = await signIn(app.host, 'alice')
    await fetch(`http://${app.host}/logout`, { headers: { cookie } })
    const outcome = await openSocket(app.host, { origin: app.origin, cookie })
    expect(outcome).toMatchObject({ kind: 'open', hello: { userId: null, isNew: true } })
  })

  test('recheck: the same user while the session lives; session-changed once it is logged out', async () => {
    const app = await nodeApp()
    const cookie = await signIn(app.host, 'alice')
    const outcome = await openSocket(app.host, { origin: app.origin, cookie })
    if (outcome.kind !== 'open') throw new Error(`refused: ${outcome.status}`)
    const { ws } = outcome
    ws.send('recheck')
    expect(await nextMessage(ws)).toEqual({ ok: true, userId: 'alice' })
    await fetch(`http://${app.host}/logout`, { headers: { cookie } })
    ws.send('recheck')
    expect(await nextMessage(ws)).toEqual({ ok: false, status: 403, reason: 'session-changed' })
  })

  test('a client that resets the connection while the session loads does not crash the server', async () => {
    const app = await nodeApp()
    const cookie = await signIn(app.host, 'alice')
    const held = app.paused.pause('get')
    const [hostname, port] = app.host.split(':') as [string, string]
    const client: Socket = connectTcp(Number(port), hostname)
    client.on('error', () => {})
    await new Promise<void>((resolve) => client.once('connect', resolve))
    client.write(
      [
        'GET /socket HTTP/1.1',
        `Host: ${app.host}`,
        `Origin: ${app.origin}`,
        `Cookie: ${cookie}`,
        'Connection: Upgrade',
        'Upgrade: websocket',
        'Sec-WebSocket-Version: 13',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
        '',
        '',
      ].join('\r\n'),
    )
    await held.reached
    const [socket] = app.upgrades.sockets as [Duplex]
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
    client.resetAndDestroy()
    await closed
    held.release()
    await Promise.all(app.upgrades.handled)
    expect(app.upgrades.connections).toBe(0)
  })
})

/** An upgrade request as the guard reads it, for checks without a server. */
function fakeRequest(headers: Record<string, string>): IncomingMessage {
  const socket = { encrypted: false, on() {}, off() {}, destroy() {} }
  return { headers: { host: 'app.test', ...headers }, socket } as unknown as IncomingMessage
}

describe('options', () => {
  const { manager } = makeManager()

  test.each([
    [{ origin: 'https://app.example/path' }, 'upgrade.origin'],
    [{ trustedOrigins: ['https://ok.example', '*.example'] }, 'upgrade.trustedOrigins[1]'],
    [{ trustedOrigins: 'https://ok.example' }, 'upgrade.trustedOrigins'],
    [{ trustProxy: 'yes' }, 'upgrade.trustProxy'],
    [{ requireOrigin: 0 }, 'upgrade.requireOrigin'],
    [{ trustedOrigin: ['https://ok.example'] }, 'upgrade.trustedOrigin'],
  ])('%j is a ConfigError naming %s', (options, option) => {
    const build = () => createUpgradeGuard(manager, options as unknown as UpgradeGuardOptions)
    expect(build).toThrow(ConfigError)
    expect(build).toThrow(expect.objectContaining({ option }))
  })

  test('a configured origin is the own origin, whatever Host says', async () => {
    const upgrade = createUpgradeGuard(manager, { origin: 'https://app.example' })
    expect(upgrade.options.origin).toBe('https://app.example')
    expect(await upgrade.check(fakeRequest({ origin: 'https://app.example' }))).toMatchObject({ ok: true })
    expect(await upgrade.check(fakeRequest({ origin: 'http://app.test' }))).toMatchObject({
      ok: false,
      reason: 'origin-mismatch',
    })
  })
})

describe('Express', () => {
  /** An Express app with the latchkey middleware, on the server `app.listen` returns. */
  async function expressApp(manager: SessionManager<Data>) {
    const app = express()
    const auth = sessions(manager)
    app.use(auth)
    app.get('/login', (req, res) => {
      auth.session(req).login(String(req.query.user ?? 'bob'))
      res.send('ok')
    })
    const server = app.listen(0, '127.0.0.1')
    await new Promise<void>((resolve) => server.once('listening', resolve))
    const upgrades = acceptUpgrades(server, createUpgradeGuard(manager))
    const host = await listen(server)
    return { upgrades, host, origin: `http://${host}` }
  }

  test('the session an Express route signed in is the socket session of a same-origin upgrade', async () => {
    const { manager } = makeManager()
    const app = await expressApp(manager)
    const cookie = await signIn(app.host, 'bob')
    const outcome = await openSocket(app.host, { origin: app.origin, cookie })
    expect(outcome).toMatchObject({ kind: 'open', hello: { userId: 'bob', isNew: false } })
  })

  test('a cross-site upgrade is refused 403 and never reaches the socket server', async () => {
    const { manager } = makeManager()
    const app = await expressApp(manager)
    const cookie = await signIn(app.host, 'bob')
    const outcome = await openSocket(app.host, { origin: 'https://evil.example', cookie })
    expect(outcome).toMatchObject({ kind: 'refused', status: 403 })
    await Promise.all(app.upgrades.handled)
    expect(app.upgrades.connections).toBe(0)
  })

  test('a store that fails gives 503 on the socket', async () => {
    const { manager, state } = makeManager()
    const app = await expressApp(manager)
    const cookie = await signIn(app.host, 'bob')
    state.down = true
    const outcome = await openSocket(app.host, { origin: app.origin, cookie })
    expect(outcome).toMatchObject({ kind: 'refused', status: 503 })
    await Promise.all(app.upgrades.handled)
  })
})

/**
 * Hono on @hono/node-server with its own WebSocket support (`upgradeWebSocket`): the handshake goes
 * through `app.fetch` as a GET, so through `sessions()`, which must check where it comes from.
 */
describe('Hono: a handshake routed through the middleware (upgradeWebSocket)', () => {
  async function honoApp(manager: SessionManager<Data>) {
    const app = new Hono<{ Variables: { session: Session<Data> } }>()
    let connections = 0
    app.use(honoSessions(manager))
    app.get('/login', (c) => {
      c.get('session').login(c.req.query('user') ?? 'alice')
      return c.text('ok')
    })
    app.get(
      '/socket',
      upgradeWebSocket((c) => {
        const session = c.get('session')
        return {
          onOpen(_event, ws) {
            connections++
            ws.send(JSON.stringify({ userId: session.userId, isNew: session.isNew }))
          },
        }
      }),
    )
    const wss = new WebSocketServer({ noServer: true })
    const server = serve({
      fetch: app.fetch,
      port: 0,
      hostname: '127.0.0.1',
      websocket: { server: wss },
    }) as Server
    server.on('close', () => wss.close())
    await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', resolve)))
    const host = await listen(server)
    return { host, origin: `http://${host}`, connections: () => connections }
  }

  test('a same-origin handshake opens with the session of the signed-in user', async () => {
    const { manager } = makeManager()
    const app = await honoApp(manager)
    const cookie = await signIn(app.host, 'carol')
    const outcome = await openSocket(app.host, { origin: app.origin, cookie })
    expect(outcome).toMatchObject({ kind: 'open', hello: { userId: 'carol', isNew: false } })
  })

  test('a cross-site handshake is refused 403 and no socket opens (by Origin, and by Sec-Fetch-Site)', async () => {
    const { manager } = makeManager()
    const app = await honoApp(manager)
    const cookie = await signIn(app.host, 'carol')
    const attempts: Parameters<typeof openSocket>[1][] = [
      { origin: 'https://evil.example', cookie },
      { origin: 'null', cookie },
      { origin: app.origin, cookie, headers: { 'sec-fetch-site': 'cross-site' } },
      { origin: 'https://evil.example', cookie, headers: { upgrade: 'WebSocket' } },
    ]
    for (const options of attempts) {
      const outcome = await openSocket(app.host, options)
      expect(outcome, JSON.stringify(options)).toMatchObject({ kind: 'refused', status: 403 })
    }
    expect(app.connections()).toBe(0)
  })
})

describe('refuseUpgrade', () => {
  test('answers a status of your own, and refuses a status that is not an error', async () => {
    const server = createServer()
    server.on('upgrade', (_req: IncomingMessage, socket: Duplex) => {
      refuseUpgrade(socket, { status: 401, reason: 'sign in first' })
    })
    const host = await listen(server)
    const outcome = await openSocket(host, { origin: `http://${host}` })
    expect(outcome).toMatchObject({ kind: 'refused', status: 401 })
    expect(outcome.kind === 'refused' && outcome.body).toBe(
      'Unauthorized: this connection upgrade was refused (sign in first).\n',
    )
    const socket = { on() {}, destroy() {}, writable: true } as unknown as Duplex
    expect(() => refuseUpgrade(socket, { status: 200, reason: 'fine' })).toThrow(TypeError)
  })
})
