/**
 * One benchmark server, run in its own process by `bench/run.ts` (so the load generator never shares
 * its event loop). The kind comes from `BENCH_SERVER`; it listens on a free loopback port and reports
 * it over IPC, then stops cleanly on a `stop` message (so `--cpu-prof` can write its profile).
 *
 * Every kind answers the same routes with the same response work; only the session layer differs:
 *   GET /seed   store value='hello' and n=0 (creates the session the R and W scenarios reuse)
 *   GET /r      read 'value'                      (R)
 *   GET /w      n += 1, answer n                  (W)
 *   GET /n      store v='x' in a new session      (N: sent without a cookie)
 *   GET /count  read n without writing            (the lost-write check)
 */
import { mkdtempSync, rmSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import session from 'express-session'
import type { Session, SessionStore } from '../src/index.js'
import type { ParentMessage, ServerKind, ServerMessage } from './protocol.js'
import { SERVER_KINDS } from './protocol.js'

/** A fixed test key (32 bytes): benchmarks must be reproducible, and nothing here is secret. */
const BENCH_KEY = Buffer.alloc(32, 'latchkey-bench').toString('base64url')
const EXPRESS_SECRET = 'latchkey-bench-express-session-secret'

// latchkey is loaded from the build (`npm run bench` builds first): the benchmark measures the code users
// run, not the TypeScript loader's wrappers. Types still come from the sources.
const DIST = new URL('../dist/', import.meta.url)
const { createSessionManager, isMigratableStore, MemoryStore }: typeof import('../src/index.js') =
  await import(new URL('index.js', DIST).href)
const { withSessions }: typeof import('../src/adapters/node.js') = await import(
  new URL('adapters/node.js', DIST).href
)

/**
 * What a route needs from the session layer of one request, as functions of that request's session
 * (`C`), defined once per server so that no closure is built per request.
 */
interface Ops<C> {
  read(c: C): unknown
  increment(c: C): number
  count(c: C): number
  seed(c: C): void
  create(c: C): void
}

function send(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  })
  res.end(body)
}

function route<C>(req: IncomingMessage, res: ServerResponse, bag: Ops<C>, c: C): void {
  switch (req.url) {
    case '/r': {
      const value = bag.read(c)
      if (typeof value === 'string') send(res, 200, value)
      else send(res, 404, 'no session value\n')
      return
    }
    case '/w':
      send(res, 200, String(bag.increment(c)))
      return
    case '/n':
      bag.create(c)
      send(res, 200, 'ok')
      return
    case '/count':
      send(res, 200, String(bag.count(c)))
      return
    case '/seed':
      bag.seed(c)
      send(res, 200, 'ok')
      return
    default:
      send(res, 404, 'not found\n')
  }
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>

interface Built {
  readonly handler: Handler
  close(): Promise<void>
}

const BARE: Ops<{ counter: number }> = {
  read: () => 'hello',
  increment: (c) => ++c.counter,
  count: (c) => c.counter,
  seed: () => {},
  create: () => {},
}

function bare(): Built {
  const state = { counter: 0 }
  return { handler: (req, res) => route(req, res, BARE, state), close: async () => {} }
}

type BenchData = { value: string; n: number; v: string }

const LATCHKEY: Ops<Session<BenchData>> = {
  read: (session) => session.get('value'),
  increment: (session) => session.update('n', (n = 0) => n + 1),
  count: (session) => session.get('n') ?? 0,
  seed: (session) => {
    session.set('value', 'hello')
    session.set('n', 0)
  },
  create: (session) => session.set('v', 'x'),
}

const EXPRESS: Ops<Record<string, unknown>> = {
  read: (data) => data.value,
  increment: (data) => {
    const n = (typeof data.n === 'number' ? data.n : 0) + 1
    data.n = n
    return n
  },
  count: (data) => (typeof data.n === 'number' ? data.n : 0),
  seed: (data) => {
    data.value = 'hello'
    data.n = 0
  },
  create: (data) => {
    data.v = 'x'
  },
}

function latchkey(store: SessionStore): Built {
  const manager = createSessionManager<BenchData>({
    store,
    keys: [BENCH_KEY],
    // The benchmark talks plain HTTP on loopback.
    cookie: { secure: false },
  })
  const handler = withSessions(manager, (req, res, session) => route(req, res, LATCHKEY, session), {
    onError: (error) => console.error('bench server:', error),
  })
  return { handler, close: () => manager.close() }
}

async function latchkeySqlite(): Promise<Built> {
  // Loaded here only, so the other servers never load the native driver.
  const { SqliteStore }: typeof import('../src/stores/sqlite/index.js') = await import(
    new URL('stores/sqlite/index.js', DIST).href
  )
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-bench-'))
  const store = new SqliteStore({ path: join(dir, 'sessions.db') })
  if (isMigratableStore(store)) await store.migrate()
  const built = latchkey(store)
  return {
    handler: built.handler,
    close: async () => {
      await built.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

function expressSession(): Built {
  // The peer with its own defaults (its MemoryStore), configured as its README recommends.
  const middleware = session({
    secret: EXPRESS_SECRET,
    resave: false,
    saveUninitialized: false,
    cookie: { secure: false },
  })
  type Req = Parameters<typeof middleware>[0]
  type Res = Parameters<typeof middleware>[1]
  const handler: Handler = (req, res) => {
    const request = req as unknown as Req
    middleware(request, res as unknown as Res, (error?: unknown) => {
      if (error) {
        console.error('bench server:', error)
        send(res, 500, 'error\n')
        return
      }
      route(req, res, EXPRESS, request.session as unknown as Record<string, unknown>)
    })
  }
  return { handler, close: async () => {} }
}

async function build(kind: ServerKind): Promise<Built> {
  switch (kind) {
    case 'bare':
      return bare()
    case 'latchkey-memory':
      return latchkey(new MemoryStore())
    case 'latchkey-sqlite':
      return latchkeySqlite()
    case 'express-session':
      return expressSession()
  }
}

async function main(): Promise<void> {
  const kind = process.env.BENCH_SERVER as ServerKind
  if (!SERVER_KINDS.includes(kind)) throw new Error(`BENCH_SERVER must be one of ${SERVER_KINDS.join(', ')}`)
  const built = await build(kind)
  const server = createServer((req, res) => {
    void built.handler(req, res)
  })
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  let stopping = false
  const stop = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await built.close()
    // A normal exit, so that --cpu-prof writes its profile.
    process.exit(0)
  }
  process.on('message', (message: ParentMessage) => {
    if (message.type === 'stop') void stop()
    if (message.type === 'cpu') {
      const answer: ServerMessage = { type: 'cpu', ...process.cpuUsage() }
      process.send?.(answer)
    }
  })
  process.on('disconnect', () => void stop())
  process.on('SIGTERM', () => void stop())
  const ready: ServerMessage = { type: 'ready', port: (server.address() as AddressInfo).port }
  process.send?.(ready)
}

main().catch((error: unknown) => {
  const failed: ServerMessage = {
    type: 'failed',
    message: error instanceof Error ? (error.stack ?? error.message) : String(error),
  }
  if (process.send) process.send(failed, () => process.exit(1))
  else {
    console.error(error)
    process.exit(1)
  }
})
