/**
 * One benchmark server, run in its own process by `bench/run.ts` (so the load generator never shares
 * its event loop). The framework comes from `BENCH_FRAMEWORK` (node, express, fastify, hono, koa),
 * the server from `BENCH_SERVER` (bare, latchkey-memory, latchkey-sqlite, peer); it listens on a free
 * loopback port and reports it over IPC, then stops cleanly on a `stop` message (so `--cpu-prof` can
 * write its profile). A process loads only its own framework and session layer.
 *
 * Every server of a framework answers the same routes with the same response work, in that
 * framework's way; only the session layer differs:
 *   GET /seed   store value='hello' and n=0 (creates the session the R and W scenarios reuse)
 *   GET /r      read 'value'                      (R)
 *   GET /w      n += 1, answer n                  (W)
 *   GET /n      store v='x' in a new session      (N: sent without a cookie)
 *   GET /count  read n without writing            (the lost-write check)
 *
 * latchkey's adapters run with their defaults, CSRF check included: every route is a GET, which the
 * check lets through without reading anything.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Session, SessionManager, SessionStore } from '../src/index.js'
import type { Framework, ParentMessage, ServerKind, ServerMessage } from './protocol.js'
import { FRAMEWORKS, SERVER_KINDS } from './protocol.js'

/** A fixed test key (32 bytes): benchmarks must be reproducible, and nothing here is secret. */
const BENCH_KEY = Buffer.alloc(32, 'latchkey-bench').toString('base64url')
/** The peers' signing secrets (at least 32 characters, as @fastify/session and hono-sessions require). */
const PEER_SECRET = 'latchkey-bench-peer-session-secret-0123456789'

// latchkey is loaded from the build (`npm run bench` builds first): the benchmark measures the code users
// run, not the TypeScript loader's wrappers. Types still come from the sources.
const DIST = new URL('../dist/', import.meta.url)
function fromDist<M>(path: string): Promise<M> {
  return import(new URL(path, DIST).href) as Promise<M>
}
const { createSessionManager, isMigratableStore, MemoryStore } =
  await fromDist<typeof import('../src/index.js')>('index.js')

// ---------------------------------------------------------------------------------------------------
// What a route does with a session

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

/** The bare servers: one counter for the process, nothing per user. */
type BareState = { counter: number }
const BARE: Ops<BareState> = {
  read: () => 'hello',
  increment: (c) => ++c.counter,
  count: (c) => c.counter,
  seed: () => {},
  create: () => {},
}

type BenchData = { value: string; n: number; v: string }
type LatchkeySession = Session<BenchData>

const LATCHKEY: Ops<LatchkeySession> = {
  read: (session) => session.get('value'),
  increment: (session) => session.update('n', (n = 0) => n + 1),
  count: (session) => session.get('n') ?? 0,
  seed: (session) => {
    session.set('value', 'hello')
    session.set('n', 0)
  },
  create: (session) => session.set('v', 'x'),
}

const asCount = (value: unknown): number => (typeof value === 'number' ? value : 0)

/** Peers whose session is a plain object: express-session, koa-session. */
type RecordSession = Record<string, unknown>
const RECORD: Ops<RecordSession> = {
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

/** Peers whose session has get and set: @fastify/session, hono-sessions. */
interface GetSetSession {
  get(key: string): unknown
  set(key: string, value: unknown): void
}
const GET_SET: Ops<GetSetSession> = {
  read: (session) => session.get('value'),
  increment: (session) => {
    const n = asCount(session.get('n')) + 1
    session.set('n', n)
    return n
  },
  count: (session) => asCount(session.get('n')),
  seed: (session) => {
    session.set('value', 'hello')
    session.set('n', 0)
  },
  create: (session) => session.set('v', 'x'),
}

const NO_VALUE = 'no session value\n'
const NOT_FOUND = 'not found\n'

/**
 * The body of one route's answer, computed by every framework's handler through this function so
 * that all do the same work: a short text, with the status {@link statusOf} gives it.
 */
function answer<C>(path: string, ops: Ops<C>, c: C): string {
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

function statusOf(body: string): number {
  return body === NO_VALUE || body === NOT_FOUND ? 404 : 200
}

const ROUTES = ['/r', '/w', '/n', '/count', '/seed'] as const

/** One kind of session layer, seen from a framework: its route operations and how a request reaches its session. */
interface Layer<R, C> {
  readonly ops: Ops<C>
  readonly sessionOf: (request: R) => C
}

function layer<R, C>(ops: Ops<C>, sessionOf: (request: R) => C): Layer<R, C> {
  return { ops, sessionOf }
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void

interface Built {
  readonly handler: Handler
  close(): Promise<void>
}

const logError = (error: unknown): void => console.error('bench server:', error)

// ---------------------------------------------------------------------------------------------------
// latchkey's manager, on either store

async function latchkeyManager(
  kind: 'latchkey-memory' | 'latchkey-sqlite',
): Promise<{ manager: SessionManager<BenchData>; close(): Promise<void> }> {
  let store: SessionStore
  let dir: string | undefined
  if (kind === 'latchkey-memory') store = new MemoryStore()
  else {
    // Loaded here only, so the other servers never load the native driver.
    const { SqliteStore } =
      await fromDist<typeof import('../src/stores/sqlite/index.js')>('stores/sqlite/index.js')
    dir = mkdtempSync(join(tmpdir(), 'latchkey-bench-'))
    store = new SqliteStore({ path: join(dir, 'sessions.db') })
    if (isMigratableStore(store)) await store.migrate()
  }
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
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
    },
  }
}

function isLatchkey(kind: ServerKind): kind is 'latchkey-memory' | 'latchkey-sqlite' {
  return kind === 'latchkey-memory' || kind === 'latchkey-sqlite'
}

/** The peers' session cookie options: plain HTTP on loopback, the rest as each peer defaults. */
const PEER_COOKIE = { secure: false }

// ---------------------------------------------------------------------------------------------------
// node:http

function nodeServer<C>(ops: Ops<C>, c: C): Handler {
  return (req, res) => nodeRoute(req, res, ops, c)
}

function nodeSend(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  })
  res.end(body)
}

function nodeRoute<C>(req: IncomingMessage, res: ServerResponse, ops: Ops<C>, c: C): void {
  const body = answer(req.url ?? '/', ops, c)
  nodeSend(res, statusOf(body), body)
}

async function buildNode(kind: ServerKind): Promise<Built> {
  if (kind === 'bare') return { handler: nodeServer(BARE, { counter: 0 }), close: async () => {} }
  if (isLatchkey(kind)) {
    const { withSessions } = await fromDist<typeof import('../src/adapters/node.js')>('adapters/node.js')
    const { manager, close } = await latchkeyManager(kind)
    const handler = withSessions(manager, (req, res, session) => nodeRoute(req, res, LATCHKEY, session), {
      onError: logError,
    })
    return { handler: (req, res) => void handler(req, res), close }
  }
  // express-session on node:http itself, with its own defaults (its MemoryStore), configured as its
  // README recommends.
  const { default: session } = await import('express-session')
  const middleware = session({
    secret: PEER_SECRET,
    resave: false,
    saveUninitialized: false,
    cookie: PEER_COOKIE,
  })
  type Req = Parameters<typeof middleware>[0]
  type Res = Parameters<typeof middleware>[1]
  const handler: Handler = (req, res) => {
    const request = req as unknown as Req
    middleware(request, res as unknown as Res, (error?: unknown) => {
      if (error) {
        logError(error)
        nodeSend(res, 500, 'error\n')
        return
      }
      nodeRoute(req, res, RECORD, request.session as unknown as RecordSession)
    })
  }
  return { handler, close: async () => {} }
}

// ---------------------------------------------------------------------------------------------------
// Express

type ExpressRequest = import('express').Request

async function buildExpress(kind: ServerKind): Promise<Built> {
  const { default: express } = await import('express')
  const app = express()
  let close = async (): Promise<void> => {}
  const routes = <C>({ ops, sessionOf }: Layer<ExpressRequest, C>): void => {
    for (const path of ROUTES) {
      app.get(path, (req, res) => {
        const body = answer(path, ops, sessionOf(req))
        res.status(statusOf(body)).set('Content-Type', 'text/plain; charset=utf-8').send(body)
      })
    }
  }
  if (kind === 'bare') {
    const state = { counter: 0 }
    routes(layer(BARE, () => state))
  } else if (isLatchkey(kind)) {
    const { sessions } = await fromDist<typeof import('../src/adapters/express.js')>('adapters/express.js')
    const latchkey = await latchkeyManager(kind)
    close = latchkey.close
    const middleware = sessions(latchkey.manager, { onError: logError })
    app.use(middleware)
    routes(layer(LATCHKEY, (req: ExpressRequest) => middleware.session(req)))
  } else {
    // express-session with its own defaults (its MemoryStore), configured as its README recommends.
    const { default: session } = await import('express-session')
    app.use(session({ secret: PEER_SECRET, resave: false, saveUninitialized: false, cookie: PEER_COOKIE }))
    routes(layer(RECORD, (req: ExpressRequest) => req.session as unknown as RecordSession))
  }
  app.use((error: unknown, _req: unknown, res: import('express').Response, _next: unknown) => {
    logError(error)
    res.status(500).send('error\n')
  })
  return { handler: app as unknown as Handler, close: () => close() }
}

// ---------------------------------------------------------------------------------------------------
// Fastify

type FastifyRequest = import('fastify').FastifyRequest

/**
 * @fastify/session and @fastify/cookie are imported by a name TypeScript does not follow: the types of
 * @fastify/session declare `request.session` (and a `Session` type) of their own, in conflict with
 * latchkey's plugin, so they must stay out of the program.
 */
const PACKAGES = {
  fastifyCookie: '@fastify/cookie' as string,
  fastifySession: '@fastify/session' as string,
}
type FastifyPlugin = import('fastify').FastifyPluginCallback<Record<string, unknown>>

async function buildFastify(kind: ServerKind): Promise<Built> {
  const { default: Fastify } = await import('fastify')
  const app = Fastify({ logger: false })
  let close = async (): Promise<void> => {}
  const routes = <C>({ ops, sessionOf }: Layer<FastifyRequest, C>): void => {
    for (const path of ROUTES) {
      app.get(path, (request, reply) => {
        const body = answer(path, ops, sessionOf(request))
        void reply.code(statusOf(body)).type('text/plain; charset=utf-8').send(body)
      })
    }
  }
  if (kind === 'bare') {
    const state = { counter: 0 }
    routes(layer(BARE, () => state))
  } else if (isLatchkey(kind)) {
    const { default: latchkey } =
      await fromDist<typeof import('../src/adapters/fastify.js')>('adapters/fastify.js')
    const built = await latchkeyManager(kind)
    close = built.close
    await app.register(latchkey, { manager: built.manager })
    routes(layer(LATCHKEY, (request: FastifyRequest) => request.session as unknown as LatchkeySession))
  } else {
    // @fastify/session with its default store (in memory) on @fastify/cookie, as its README shows;
    // saveUninitialized off, as for express-session.
    const cookie = (await import(PACKAGES.fastifyCookie)) as { default: FastifyPlugin }
    const session = (await import(PACKAGES.fastifySession)) as { default: FastifyPlugin }
    await app.register(cookie.default)
    await app.register(session.default, {
      secret: PEER_SECRET,
      saveUninitialized: false,
      cookie: PEER_COOKIE,
    })
    routes(
      layer(GET_SET, (request: FastifyRequest) => (request as unknown as { session: GetSetSession }).session),
    )
  }
  app.setErrorHandler((error, _request, reply) => {
    logError(error)
    void reply.code(500).send('error\n')
  })
  await app.ready()
  return {
    handler: app.routing as Handler,
    close: async () => {
      await app.close()
      await close()
    },
  }
}

// ---------------------------------------------------------------------------------------------------
// Hono on @hono/node-server

type HonoContext = import('hono').Context<{ Variables: { session: unknown } }>

async function buildHono(kind: ServerKind): Promise<Built> {
  const { Hono } = await import('hono')
  const { getRequestListener } = await import('@hono/node-server')
  const app = new Hono<{ Variables: { session: unknown } }>()
  let close = async (): Promise<void> => {}
  const routes = <C>({ ops, sessionOf }: Layer<HonoContext, C>): void => {
    for (const path of ROUTES) {
      app.get(path, (c) => {
        const body = answer(path, ops, sessionOf(c))
        return c.text(body, statusOf(body) as 200)
      })
    }
  }
  const session = (c: HonoContext): unknown => c.get('session')
  if (kind === 'bare') {
    const state = { counter: 0 }
    routes(layer(BARE, () => state))
  } else if (isLatchkey(kind)) {
    const { sessions } = await fromDist<typeof import('../src/adapters/hono.js')>('adapters/hono.js')
    const latchkey = await latchkeyManager(kind)
    close = latchkey.close
    app.use(sessions(latchkey.manager) as unknown as import('hono').MiddlewareHandler)
    routes(layer(LATCHKEY, (c: HonoContext) => session(c) as LatchkeySession))
  } else {
    // hono-sessions with its MemoryStore, configured as its README's example: an encryption key
    // ("recommended" for stores other than cookies), a 15-minute idle expiry, Lax, HttpOnly.
    const { sessionMiddleware, MemoryStore: HonoMemoryStore } = await import('hono-sessions')
    app.use(
      sessionMiddleware({
        store: new HonoMemoryStore(),
        encryptionKey: PEER_SECRET,
        expireAfterSeconds: 900,
        cookieOptions: { sameSite: 'Lax', path: '/', httpOnly: true },
      }) as unknown as import('hono').MiddlewareHandler,
    )
    routes(layer(GET_SET, (c: HonoContext) => session(c) as GetSetSession))
  }
  app.onError((error, c) => {
    logError(error)
    return c.text('error\n', 500)
  })
  return { handler: getRequestListener(app.fetch) as Handler, close: () => close() }
}

// ---------------------------------------------------------------------------------------------------
// Koa

type KoaContext = import('koa').Context

async function buildKoa(kind: ServerKind): Promise<Built> {
  const { default: Koa } = await import('koa')
  const app = new Koa()
  app.silent = true
  app.on('error', logError)
  let close = async (): Promise<void> => {}
  const routes = <C>({ ops, sessionOf }: Layer<KoaContext, C>): void => {
    app.use((ctx) => {
      const body = answer(ctx.path, ops, sessionOf(ctx))
      ctx.status = statusOf(body)
      ctx.type = 'text/plain; charset=utf-8'
      ctx.body = body
    })
  }
  const session = (ctx: KoaContext): unknown => (ctx as unknown as { session: unknown }).session
  if (kind === 'bare') {
    const state = { counter: 0 }
    routes(layer(BARE, () => state))
  } else if (isLatchkey(kind)) {
    const { sessions } = await fromDist<typeof import('../src/adapters/koa.js')>('adapters/koa.js')
    const latchkey = await latchkeyManager(kind)
    close = latchkey.close
    app.use(sessions(latchkey.manager) as unknown as import('koa').Middleware)
    routes(layer(LATCHKEY, (ctx: KoaContext) => session(ctx) as LatchkeySession))
  } else {
    // koa-session keeps the session in a signed cookie by default; here it is given an external
    // store, as its README describes, so that it keeps sessions on the server like every other row.
    // The store is a Map of JSON strings, as express-session's MemoryStore is.
    const { default: koaSession } = await import('koa-session')
    const sessions = new Map<string, string>()
    app.keys = [PEER_SECRET]
    app.use(
      koaSession(
        {
          store: {
            get: async (key: string) => {
              const json = sessions.get(key)
              return json === undefined ? undefined : JSON.parse(json)
            },
            set: async (key: string, value: unknown) => {
              sessions.set(key, JSON.stringify(value))
            },
            destroy: async (key: string) => {
              sessions.delete(key)
            },
          },
        },
        app,
      ),
    )
    routes(layer(RECORD, (ctx: KoaContext) => session(ctx) as RecordSession))
  }
  return { handler: app.callback() as Handler, close: () => close() }
}

// ---------------------------------------------------------------------------------------------------
// The process

function build(framework: Framework, kind: ServerKind): Promise<Built> {
  switch (framework) {
    case 'node':
      return buildNode(kind)
    case 'express':
      return buildExpress(kind)
    case 'fastify':
      return buildFastify(kind)
    case 'hono':
      return buildHono(kind)
    case 'koa':
      return buildKoa(kind)
  }
}

async function main(): Promise<void> {
  const framework = process.env.BENCH_FRAMEWORK as Framework
  const kind = process.env.BENCH_SERVER as ServerKind
  if (!FRAMEWORKS.includes(framework))
    throw new Error(`BENCH_FRAMEWORK must be one of ${FRAMEWORKS.join(', ')}`)
  if (!SERVER_KINDS.includes(kind)) throw new Error(`BENCH_SERVER must be one of ${SERVER_KINDS.join(', ')}`)
  const built = await build(framework, kind)
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
