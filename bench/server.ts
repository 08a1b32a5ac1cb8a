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
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SessionManager, SessionStore } from '../src/index.js'
import type { Framework, ServerKind } from './protocol.js'
import { FRAMEWORKS, SERVER_KINDS } from './protocol.js'
import type { BenchData, Built, Handler, LatchkeySession, Layer, Ops, RecordSession } from './serve.js'
import {
  answer,
  asCount,
  buildExpressApp,
  expressSession,
  fromDist,
  LATCHKEY,
  latchkeyExpress,
  latchkeyManager,
  layer,
  logError,
  PEER_COOKIE,
  PEER_SECRET,
  RECORD,
  ROUTES,
  serve,
  statusOf,
} from './serve.js'

const { isMigratableStore, MemoryStore } = await fromDist<typeof import('../src/index.js')>('index.js')

// ---------------------------------------------------------------------------------------------------
// What a route does with a session

/** The bare servers: one counter for the process, nothing per user. */
type BareState = { counter: number }
const BARE: Ops<BareState> = {
  read: () => 'hello',
  increment: (c) => ++c.counter,
  count: (c) => c.counter,
  seed: () => {},
  create: () => {},
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

// ---------------------------------------------------------------------------------------------------
// latchkey's manager, on either store

async function managerFor(kind: 'latchkey-memory' | 'latchkey-sqlite') {
  if (kind === 'latchkey-memory') return latchkeyManager(new MemoryStore())
  // Loaded here only, so the other servers never load the native driver.
  const { SqliteStore } =
    await fromDist<typeof import('../src/stores/sqlite/index.js')>('stores/sqlite/index.js')
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-bench-'))
  const store: SessionStore = new SqliteStore({ path: join(dir, 'sessions.db') })
  if (isMigratableStore(store)) await store.migrate()
  return latchkeyManager(store, async () => rmSync(dir, { recursive: true, force: true }))
}

function isLatchkey(kind: ServerKind): kind is 'latchkey-memory' | 'latchkey-sqlite' {
  return kind === 'latchkey-memory' || kind === 'latchkey-sqlite'
}

/**
 * Adds the session layer of `kind` to a framework's app and hands its routes the layer: none (bare,
 * one counter for the process), latchkey's (`latchkey` adds its adapter on the manager), or the
 * peer's (`peer` adds it and calls `routes`). Returns what closes it.
 */
async function sessionLayer<R>(
  kind: ServerKind,
  routes: <C>(layer: Layer<R, C>) => void,
  add: {
    latchkey(manager: SessionManager<BenchData>): Promise<Layer<R, LatchkeySession>>
    peer(): Promise<void>
  },
): Promise<() => Promise<void>> {
  if (kind === 'bare') {
    const state = { counter: 0 }
    routes(layer(BARE, () => state))
    return async () => {}
  }
  if (isLatchkey(kind)) {
    const latchkey = await managerFor(kind)
    routes(await add.latchkey(latchkey.manager))
    return latchkey.close
  }
  await add.peer()
  return async () => {}
}

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
    const { manager, close } = await managerFor(kind)
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

function buildExpress(kind: ServerKind): Promise<Built> {
  return buildExpressApp((app, routes) =>
    sessionLayer(kind, routes, {
      latchkey: (manager) => latchkeyExpress(app, manager),
      // express-session with its own defaults (its MemoryStore).
      peer: async () => routes(await expressSession(app)),
    }),
  )
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
  const routes = <C>({ ops, sessionOf }: Layer<FastifyRequest, C>): void => {
    for (const path of ROUTES) {
      app.get(path, (request, reply) => {
        const body = answer(path, ops, sessionOf(request))
        void reply.code(statusOf(body)).type('text/plain; charset=utf-8').send(body)
      })
    }
  }
  const close = await sessionLayer(kind, routes, {
    latchkey: async (manager) => {
      const { default: latchkey } =
        await fromDist<typeof import('../src/adapters/fastify.js')>('adapters/fastify.js')
      await app.register(latchkey, { manager })
      return layer(LATCHKEY, (request: FastifyRequest) => request.session as unknown as LatchkeySession)
    },
    peer: async () => {
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
        layer(
          GET_SET,
          (request: FastifyRequest) => (request as unknown as { session: GetSetSession }).session,
        ),
      )
    },
  })
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
  const routes = <C>({ ops, sessionOf }: Layer<HonoContext, C>): void => {
    for (const path of ROUTES) {
      app.get(path, (c) => {
        const body = answer(path, ops, sessionOf(c))
        return c.text(body, statusOf(body) as 200)
      })
    }
  }
  const session = (c: HonoContext): unknown => c.get('session')
  const close = await sessionLayer(kind, routes, {
    latchkey: async (manager) => {
      const { sessions } = await fromDist<typeof import('../src/adapters/hono.js')>('adapters/hono.js')
      app.use(sessions(manager) as unknown as import('hono').MiddlewareHandler)
      return layer(LATCHKEY, (c: HonoContext) => session(c) as LatchkeySession)
    },
    peer: async () => {
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
    },
  })
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
  const routes = <C>({ ops, sessionOf }: Layer<KoaContext, C>): void => {
    app.use((ctx) => {
      const body = answer(ctx.path, ops, sessionOf(ctx))
      ctx.status = statusOf(body)
      ctx.type = 'text/plain; charset=utf-8'
      ctx.body = body
    })
  }
  const session = (ctx: KoaContext): unknown => (ctx as unknown as { session: unknown }).session
  const close = await sessionLayer(kind, routes, {
    latchkey: async (manager) => {
      const { sessions } = await fromDist<typeof import('../src/adapters/koa.js')>('adapters/koa.js')
      app.use(sessions(manager) as unknown as import('koa').Middleware)
      return layer(LATCHKEY, (ctx: KoaContext) => session(ctx) as LatchkeySession)
    },
    peer: async () => {
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
    },
  })
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

serve(() => {
  const framework = process.env.BENCH_FRAMEWORK as Framework
  const kind = process.env.BENCH_SERVER as ServerKind
  if (!FRAMEWORKS.includes(framework))
    throw new Error(`BENCH_FRAMEWORK must be one of ${FRAMEWORKS.join(', ')}`)
  if (!SERVER_KINDS.includes(kind)) throw new Error(`BENCH_SERVER must be one of ${SERVER_KINDS.join(', ')}`)
  return build(framework, kind)
})
