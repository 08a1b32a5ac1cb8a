/**
 * What the benchmark servers share (`bench/server.ts`: every framework on memory and SQLite;
 * `bench/peer-store-server.ts`: every bundled store against its peer on Express;
 * `bench/dropin-server.ts`: the drop-in against express-session): the routes and the work each does
 * with a session, latchkey's manager and Express set-ups, connect-redis, and the process around a
 * server (listen on a free loopback port, report it over IPC, answer `cpu`, stop cleanly on `stop`
 * so that `--cpu-prof` can write its profile; a store comparison's server: {@link serveCell}).
 *
 * Routes, the same on every server:
 *   GET /seed   store value='hello' and n=0 (creates the session the R and W scenarios reuse)
 *   GET /r      read 'value'                      (R)
 *   GET /w      n += 1, answer n                  (W)
 *   GET /n      store v='x' in a new session      (N: sent without a cookie)
 *   GET /count  read n without writing            (the lost-write check)
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Session, SessionManager, SessionStore } from '../src/index.js'
import { storeUrls } from './peer-store-kinds.js'
import type { ParentMessage, ServerMessage } from './protocol.js'

/** A fixed test key (32 bytes): benchmarks must be reproducible, and nothing here is secret. */
export const BENCH_KEY = Buffer.alloc(32, 'latchkey-bench').toString('base64url')
/** The peers' signing secrets (at least 32 characters, as @fastify/session and hono-sessions require). */
export const PEER_SECRET = 'latchkey-bench-peer-session-secret-0123456789'

// latchkey is loaded from the build (`npm run bench` builds first): the benchmark measures the code users
// run, not the TypeScript loader's wrappers. Types still come from the sources.
const DIST = new URL('../dist/', import.meta.url)
export function fromDist<M>(path: string): Promise<M> {
  return import(new URL(path, DIST).href) as Promise<M>
}
const { createSessionManager } = await fromDist<typeof import('../src/index.js')>('index.js')

// ---------------------------------------------------------------------------------------------------
// What a route does with a session

/**
 * What a route needs from the session layer of one request, as functions of that request's session
 * (`C`), defined once per server so that no closure is built per request.
 */
export interface Ops<C> {
  read(c: C): unknown
  increment(c: C): number
  count(c: C): number
  seed(c: C): void
  create(c: C): void
}

/** The bare servers: one counter for the process, nothing per user. */
export type BenchData = { value: string; n: number; v: string }
export type LatchkeySession = Session<BenchData>

export const LATCHKEY: Ops<LatchkeySession> = {
  read: (session) => session.get('value'),
  increment: (session) => session.update('n', (n = 0) => n + 1),
  count: (session) => session.get('n') ?? 0,
  seed: (session) => {
    session.set('value', 'hello')
    session.set('n', 0)
  },
  create: (session) => session.set('v', 'x'),
}

export const asCount = (value: unknown): number => (typeof value === 'number' ? value : 0)

/** Peers whose session is a plain object: express-session, koa-session. */
export type RecordSession = Record<string, unknown>
export const RECORD: Ops<RecordSession> = {
  read: (data) => data.value,
  increment: (data) => {
    const n = asCount(data.n) + 1
    data.n = n
    return n
  },
  count: (data) => asCount(data.n),
  seed: (data) => {
    data.value = 'hello'
    data.n = 0
  },
  create: (data) => {
    data.v = 'x'
  },
}

const NO_VALUE = 'no session value\n'
const NOT_FOUND = 'not found\n'

/**
 * The body of one route's answer, computed by every framework's handler through this function so
 * that all do the same work: a short text, with the status {@link statusOf} gives it.
 */
export function answer<C>(path: string, ops: Ops<C>, c: C): string {
  switch (path) {
    case '/r': {
      const value = ops.read(c)
      return typeof value === 'string' ? value : NO_VALUE
    }
    case '/w':
      return String(ops.increment(c))
    case '/n':
      ops.create(c)
      return 'ok'
    case '/count':
      return String(ops.count(c))
    case '/seed':
      ops.seed(c)
      return 'ok'
    default:
      return NOT_FOUND
  }
}

export function statusOf(body: string): number {
  return body === NO_VALUE || body === NOT_FOUND ? 404 : 200
}

export const ROUTES = ['/r', '/w', '/n', '/count', '/seed'] as const

/** One kind of session layer, seen from a framework: its route operations and how a request reaches its session. */
export interface Layer<R, C> {
  readonly ops: Ops<C>
  readonly sessionOf: (request: R) => C
}

export function layer<R, C>(ops: Ops<C>, sessionOf: (request: R) => C): Layer<R, C> {
  return { ops, sessionOf }
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => void

export interface Built {
  readonly handler: Handler
  close(): Promise<void>
}

export const logError = (error: unknown): void => console.error('bench server:', error)

/** The peers' session cookie options: plain HTTP on loopback, the rest as each peer defaults. */
export const PEER_COOKIE = { secure: false }

/** latchkey's manager on `store`, with its defaults but for the key and a cookie sent over plain HTTP. */
export function latchkeyManager(
  store: SessionStore,
  cleanUp: () => Promise<void> = async () => {},
): { manager: SessionManager<BenchData>; close(): Promise<void> } {
  const manager = createSessionManager<BenchData>({
    store,
    keys: [BENCH_KEY],
    // The benchmark talks plain HTTP on loopback.
    cookie: { secure: false },
  })
  return {
    manager,
    close: async () => {
      await manager.close()
      await cleanUp()
    },
  }
}

// ---------------------------------------------------------------------------------------------------
// Express

export type ExpressRequest = import('express').Request
type ExpressApp = import('express').Express
type Routes = <C>(layer: Layer<ExpressRequest, C>) => void

/**
 * An Express app answering every route, in Express's way (`res.send`, its default ETag): `setup` adds
 * the session layer's middleware to the app, hands `routes` the layer, and returns what closes it.
 */
export async function buildExpressApp(
  setup: (app: ExpressApp, routes: Routes) => Promise<() => Promise<void>>,
): Promise<Built> {
  const { default: express } = await import('express')
  const app = express()
  const routes: Routes = ({ ops, sessionOf }) => {
    for (const path of ROUTES) {
      app.get(path, (req, res) => {
        const body = answer(path, ops, sessionOf(req))
        res.status(statusOf(body)).set('Content-Type', 'text/plain; charset=utf-8').send(body)
      })
    }
  }
  const close = await setup(app, routes)
  app.use((error: unknown, _req: unknown, res: import('express').Response, _next: unknown) => {
    logError(error)
    res.status(500).send('error\n')
  })
  return { handler: app as unknown as Handler, close }
}

/** latchkey's Express adapter, with its defaults (the CSRF check included), on `manager`. */
export async function latchkeyExpress(
  app: ExpressApp,
  manager: SessionManager<BenchData>,
): Promise<Layer<ExpressRequest, LatchkeySession>> {
  const { sessions } = await fromDist<typeof import('../src/adapters/express.js')>('adapters/express.js')
  const middleware = sessions(manager, { onError: logError })
  app.use(middleware)
  return layer(LATCHKEY, (req: ExpressRequest) => middleware.session(req))
}

/**
 * express-session configured as its README recommends (`resave: false`, `saveUninitialized: false`),
 * on `store` (none: its MemoryStore); `factory`: a middleware with express-session's options in its
 * place (latchkey/express-session, the drop-in).
 */
export async function expressSession(
  app: ExpressApp,
  store?: import('express-session').Store,
  factory?: (options: import('express-session').SessionOptions) => unknown,
): Promise<Layer<ExpressRequest, RecordSession>> {
  const session = factory ?? (await import('express-session')).default
  app.use(
    session({
      secret: PEER_SECRET,
      resave: false,
      saveUninitialized: false,
      cookie: PEER_COOKIE,
      ...(store === undefined ? {} : { store }),
    }) as import('express').RequestHandler,
  )
  return layer(RECORD, (req: ExpressRequest) => req.session as unknown as RecordSession)
}

/** connect-redis 9 on node-redis, as its README's "Full setup", with its keys under `prefix`; and what closes it. */
export async function connectRedis(
  prefix: string,
): Promise<{ store: import('express-session').Store; close(): Promise<void> }> {
  const { RedisStore } = await import('connect-redis')
  const { createClient } = await import('redis')
  const client = createClient({ url: storeUrls().redis })
  await client.connect()
  return {
    store: new RedisStore({ client, prefix }),
    close: async () => void (await client.quit()),
  }
}

// ---------------------------------------------------------------------------------------------------
// The process

/**
 * A server of a store comparison (bench/compare.ts): `BENCH_STORE` one of `stores`, `BENCH_SIDE` one
 * of `sides`, `BENCH_CELL` the cell (`cell` says what it names), built by `build` and served.
 */
export function serveCell<K extends string, S extends string>(
  stores: readonly K[],
  sides: readonly S[],
  cell: string,
  build: (kind: K, side: S, cell: string) => Promise<Built>,
): void {
  serve(() => {
    const kind = process.env.BENCH_STORE as K
    const side = process.env.BENCH_SIDE as S
    const name = process.env.BENCH_CELL ?? ''
    if (!stores.includes(kind)) throw new Error(`BENCH_STORE must be one of ${stores.join(', ')}`)
    if (!sides.includes(side)) throw new Error(`BENCH_SIDE must be one of ${sides.join(', ')}`)
    if (name === '') throw new Error(`BENCH_CELL must name the ${cell} of this cell`)
    return build(kind, side, name)
  })
}

/** Builds the server, listens on a free loopback port, tells the parent, and answers it until `stop`. */
export function serve(build: () => Promise<Built>): void {
  main(build).catch((error: unknown) => {
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
}

async function main(build: () => Promise<Built>): Promise<void> {
  const built = await build()
  const server = createServer(built.handler)
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
