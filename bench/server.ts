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
import { withSessions } from '../src/adapters/node.js'
import type { SessionStore } from '../src/index.js'
import { createSessionManager, isMigratableStore, MemoryStore } from '../src/index.js'
import type { ParentMessage, ServerKind, ServerMessage } from './protocol.js'
import { SERVER_KINDS } from './protocol.js'

/** A fixed test key (32 bytes): benchmarks must be reproducible, and nothing here is secret. */
const BENCH_KEY = Buffer.alloc(32, 'latchkey-bench').toString('base64url')
const EXPRESS_SECRET = 'latchkey-bench-express-session-secret'

/** What a route needs from the session layer of one request. */
interface Bag {
  read(): unknown
  increment(): number
  count(): number
  seed(): void
  create(): void
}

function send(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  })
  res.end(body)
}

function route(req: IncomingMessage, res: ServerResponse, bag: Bag): void {
  switch (req.url) {
    case '/r': {
      const value = bag.read()
      if (typeof value === 'string') send(res, 200, value)
      else send(res, 404, 'no session value\n')
      return
    }
    case '/w':
      send(res, 200, String(bag.increment()))
      return
    case '/n':
      bag.create()
      send(res, 200, 'ok')
      return
    case '/count':
      send(res, 200, String(bag.count()))
      return
    case '/seed':
      bag.seed()
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

function bare(): Built {
  let counter = 0
  const bag: Bag = {
    read: () => 'hello',
    increment: () => ++counter,
    count: () => counter,
    seed: () => {},
    create: () => {},
  }
  return { handler: (req, res) => route(req, res, bag), close: async () => {} }
}

function latchkey(store: SessionStore): Built {
  const manager = createSessionManager<{ value: string; n: number; v: string }>({
    store,
    keys: [BENCH_KEY],
    // The benchmark talks plain HTTP on loopback.
    cookie: { secure: false },
  })
  const handler = withSessions(
    manager,
    (req, res, session) =>
      route(req, res, {
        read: () => session.get('value'),
        increment: () => session.update('n', (n = 0) => n + 1),
        count: () => session.get('n') ?? 0,
        seed: () => {
          session.set('value', 'hello')
          session.set('n', 0)
        },
        create: () => session.set('v', 'x'),
      }),
    { onError: (error) => console.error('bench server:', error) },
  )
  return { handler, close: () => manager.close() }
}

async function latchkeySqlite(): Promise<Built> {
  // Loaded here only, so the other servers never load the native driver.
  const { SqliteStore } = await import('../src/stores/sqlite/index.js')
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
      const data = request.session as unknown as Record<string, unknown>
      route(req, res, {
        read: () => data.value,
        increment: () => {
          const n = (typeof data.n === 'number' ? data.n : 0) + 1
          data.n = n
          return n
        },
        count: () => (typeof data.n === 'number' ? data.n : 0),
        seed: () => {
          data.value = 'hello'
          data.n = 0
        },
        create: () => {
          data.v = 'x'
        },
      })
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
