/**
 * The adapter conformance suite (latchkey/testing) against the five front doors: node:http
 * (`withSessions`), Express (5, and 4 as the npm alias `express4`), Fastify, Hono on
 * @hono/node-server, and Koa. Each front door is a tiny
 * app of its framework that mounts the adapter, hands requests to the suite's routes, sends their
 * replies in the framework's way, and catches errors the framework's way.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import formbody from '@fastify/formbody'
import { serve as honoServe } from '@hono/node-server'
import { bodyParser } from '@koa/bodyparser'
import express from 'express'
import Fastify, { type FastifyReply } from 'fastify'
import { type Context, Hono } from 'hono'
import Koa from 'koa'
import { describe, expect, test } from 'vitest'
import { sessions as expressSessions } from '../src/adapters/express.js'
import latchkey from '../src/adapters/fastify.js'
import { sessions as honoSessions } from '../src/adapters/hono.js'
import { sessions as koaSessions } from '../src/adapters/koa.js'
import { readBody, withSessions } from '../src/adapters/node.js'
import type { Session } from '../src/core/session.js'
import { isCsrfError, parseFormFields } from '../src/csrf/index.js'
import { createSessionManager, generateKey, MemoryStore } from '../src/index.js'
import type {
  AdapterConformanceOptions,
  ConformanceData,
  ConformanceReply,
  ServedConformanceApp,
} from '../src/testing/adapter-conformance.js'
import { defineAdapterConformance } from '../src/testing/adapter-conformance.js'
import { type Pausable, pausable } from './support/pausing-store.js'

type Json = Extract<ConformanceReply, { kind: 'json' }>

/** Serves a node server on a loopback port; close() drops open connections. */
async function listen(server: Server): Promise<ServedConformanceApp> {
  if (!server.listening) await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** A multipart body read from a stream the CSRF check may have read before (it must be whole again). */
async function streamedForm(req: Readable, type: string | undefined): Promise<Record<string, string>> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return { ...(await parseFormFields(Buffer.concat(chunks), type)) }
}

function isMultipart(type: string | undefined): boolean {
  return type?.toLowerCase().startsWith('multipart/') ?? false
}

/**
 * Writes a streamed reply into node's response as a pipe does: when `write()` says the buffer is
 * full, waits for 'drain', and stops if the response closes instead.
 */
async function writeStreamed(res: ServerResponse, body: AsyncIterable<string>): Promise<void> {
  for await (const chunk of body) {
    if (!res.write(chunk) && !(await drained(res))) return
  }
  res.end()
}

/** True on the response's next 'drain', false on its 'close' (or at once when it is closed already). */
function drained(res: ServerResponse): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false)
  return new Promise((resolve) => {
    const onDrain = () => {
      res.off('close', onClose)
      resolve(true)
    }
    const onClose = () => {
      res.off('drain', onDrain)
      resolve(false)
    }
    res.once('drain', onDrain)
    res.once('close', onClose)
  })
}

const node: AdapterConformanceOptions = {
  name: 'node:http',
  serve: (app) => {
    const send = (req: IncomingMessage, res: ServerResponse, reply: Json) => {
      for (const [name, value] of Object.entries(reply.headers ?? {})) res.setHeader(name, value)
      if (reply.cookies) res.setHeader('Set-Cookie', [...reply.cookies])
      res.statusCode = reply.status
      res.setHeader('Content-Type', 'application/json')
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify(reply.body))
    }
    const handler = withSessions(
      app.manager,
      async (req, res, session) => {
        const reply = await app.handle({
          method: req.method ?? 'GET',
          url: req.url ?? '/',
          session,
          form: async () => ({
            ...(await parseFormFields(await readBody(req), req.headers['content-type'])),
          }),
          nodeResponse: res,
        })
        if (reply.kind === 'throw') throw reply.error
        if (reply.kind === 'redirect') {
          res.writeHead(303, { Location: reply.location }).end()
        } else if (reply.kind === 'stream') {
          res.writeHead(200, { 'Content-Type': 'text/plain' })
          await writeStreamed(res, reply.body())
        } else {
          send(req, res, reply)
        }
      },
      {
        ...app.adapterOptions,
        ...(app.catchesCsrf && {
          onCsrfError: (error, req, res) => {
            const reply = app.csrfReply(error)
            if (reply?.kind !== 'json') throw error
            send(req, res, reply)
          },
        }),
      },
    )
    return listen(createServer(handler))
  },
}

/** The Express front door, on Express 5 or 4 (the same app: only APIs common to both). */
function expressDoor(name: string, createApp: typeof express): AdapterConformanceOptions {
  return {
    name,
    serve: (app) => {
      const send = (res: express.Response, reply: Json) => {
        res.set(reply.headers ?? {})
        for (const cookie of reply.cookies ?? []) res.append('Set-Cookie', cookie)
        res.status(reply.status).json(reply.body)
      }
      const handle = async (req: express.Request, res: express.Response) => {
        const reply = await app.handle({
          method: req.method,
          url: req.originalUrl,
          session: (req as unknown as { session: Session<ConformanceData> }).session,
          form: () =>
            isMultipart(req.headers['content-type'])
              ? streamedForm(req, req.headers['content-type'])
              : ((req.body as Record<string, string> | undefined) ?? {}),
          nodeResponse: res,
        })
        if (reply.kind === 'throw') throw reply.error
        if (reply.kind === 'redirect') return res.redirect(303, reply.location)
        if (reply.kind === 'stream') {
          res.type('text/plain')
          return writeStreamed(res, reply.body())
        }
        send(res, reply)
      }
      const server = createApp()
      server.set('env', 'test')
      server.use(expressSessions(app.manager, app.adapterOptions))
      server.use(createApp.urlencoded({ extended: false }))
      // Express 4 does not catch a rejected promise: hand it to next() (Express 5 would do the same).
      server.use((req, res, next) => {
        handle(req, res).catch(next)
      })
      server.use(
        (error: unknown, _req: express.Request, res: express.Response, next: express.NextFunction) => {
          app.onError(error)
          const reply = app.csrfReply(error)
          if (reply?.kind === 'json') send(res, reply)
          else next(error)
        },
      )
      return listen(createServer(server))
    },
  }
}

const fastifyDoor: AdapterConformanceOptions = {
  name: 'Fastify',
  serve: async (app) => {
    const send = (reply: FastifyReply, result: Json) => {
      reply.headers(result.headers ?? {})
      for (const cookie of result.cookies ?? []) reply.header('set-cookie', cookie)
      return reply.code(result.status).send(result.body)
    }
    const server = Fastify()
    await server.register(formbody)
    // As @fastify/multipart does: the body is left in the stream, for the handler to read.
    server.addContentTypeParser('multipart/form-data', (_request, _payload, done) => done(null))
    await server.register(latchkey, { manager: app.manager, csrf: app.adapterOptions.csrf })
    server.addHook('onError', (_request, _reply, error, done) => {
      app.onError(error)
      done()
    })
    server.setErrorHandler((error, _request, reply) => {
      const result = app.csrfReply(error)
      if (result?.kind === 'json') return send(reply, result)
      reply.send(error)
    })
    server.all('/*', async (request, reply) => {
      const type = request.headers['content-type']
      const result = await app.handle({
        method: request.method,
        url: request.url,
        session: request.session as Session<ConformanceData>,
        form: () =>
          isMultipart(type)
            ? streamedForm(request.raw, type)
            : ((request.body as Record<string, string> | undefined) ?? {}),
        nodeResponse: reply.raw,
      })
      if (result.kind === 'throw') throw result.error
      if (result.kind === 'redirect') return reply.redirect(result.location, 303)
      if (result.kind === 'stream') return reply.type('text/plain').send(Readable.from(result.body()))
      return send(reply, result)
    })
    await server.listen({ port: 0, host: '127.0.0.1' })
    const { port } = server.server.address() as AddressInfo
    return { url: `http://127.0.0.1:${port}`, close: () => server.close() }
  },
}

const honoDoor: AdapterConformanceOptions = {
  name: 'Hono',
  serve: async (app) => {
    const send = (c: Context, reply: Json) => {
      for (const [name, value] of Object.entries(reply.headers ?? {})) c.header(name, value)
      for (const cookie of reply.cookies ?? []) c.header('Set-Cookie', cookie, { append: true })
      return c.json(reply.body, reply.status as 200)
    }
    const server = new Hono().use(honoSessions(app.manager, { csrf: app.adapterOptions.csrf }))
    server.onError((error, c) => {
      app.onError(error)
      const reply = app.csrfReply(error)
      if (reply?.kind === 'json') return send(c, reply)
      if ('getResponse' in error) return (error as { getResponse(): Response }).getResponse()
      return c.text('Internal Server Error', 500)
    })
    server.all('*', async (c) => {
      const url = new URL(c.req.url)
      const reply = await app.handle({
        method: c.req.method,
        url: url.pathname + url.search,
        session: c.get('session'),
        form: async () => (await c.req.parseBody()) as Record<string, string>,
        nodeResponse: (c.env as { outgoing: ServerResponse }).outgoing,
      })
      if (reply.kind === 'throw') throw reply.error
      if (reply.kind === 'redirect') return c.redirect(reply.location, 303)
      if (reply.kind === 'stream') {
        const chunks = reply.body()[Symbol.asyncIterator]()
        const encoder = new TextEncoder()
        const body = new ReadableStream<Uint8Array>({
          async pull(controller) {
            const next = await chunks.next()
            if (next.done) controller.close()
            else controller.enqueue(encoder.encode(next.value))
          },
        })
        return c.body(body, 200, { 'Content-Type': 'text/plain' })
      }
      return send(c, reply)
    })
    const httpServer = await new Promise<Server>((resolve) => {
      const started = honoServe({ fetch: server.fetch, port: 0, hostname: '127.0.0.1' }, () =>
        resolve(started as Server),
      )
    })
    return listen(httpServer)
  },
}

const koaDoor: AdapterConformanceOptions = {
  name: 'Koa',
  serve: (app) => {
    const send = (ctx: Koa.Context, reply: Json) => {
      ctx.set(reply.headers ?? {})
      for (const cookie of reply.cookies ?? []) ctx.append('Set-Cookie', cookie)
      ctx.status = reply.status
      ctx.body = reply.body
    }
    const server = new Koa()
    server.on('error', (error: unknown) => app.onError(error))
    server
      .use(async (ctx, next) => {
        // The app's error middleware: CsrfErrors rendered, anything else left to Koa.
        try {
          await next()
        } catch (error) {
          const reply = app.csrfReply(error)
          if (reply?.kind !== 'json') throw error
          app.onError(error)
          send(ctx, reply)
        }
      })
      .use(koaSessions(app.manager, { csrf: app.adapterOptions.csrf }))
      .use(bodyParser())
      .use(async (ctx) => {
        const type = ctx.get('content-type')
        const reply = await app.handle({
          method: ctx.method,
          url: ctx.url,
          session: ctx.session as Session<ConformanceData>,
          form: () =>
            isMultipart(type)
              ? streamedForm(ctx.req, type)
              : ((ctx.request.body as Record<string, string> | undefined) ?? {}),
          nodeResponse: ctx.res,
        })
        if (reply.kind === 'throw') throw reply.error
        if (reply.kind === 'redirect') {
          ctx.status = 303
          ctx.redirect(reply.location)
        } else if (reply.kind === 'stream') {
          ctx.type = 'text/plain'
          ctx.body = Readable.from(reply.body())
        } else {
          send(ctx, reply)
        }
      })
    return listen(createServer(server.callback()))
  },
}

const runner = { describe, test }
const express4 = createRequire(import.meta.url)('express4') as typeof express
const doors = [
  node,
  expressDoor('Express', express),
  expressDoor('Express 4', express4),
  fastifyDoor,
  honoDoor,
  koaDoor,
]
for (const door of doors) defineAdapterConformance(runner, door)

describe('Express and Fastify commit the error page of a failed CSRF check', () => {
  /** A fresh visitor posts without a token, gets one on the 403 page, and posts again with it. */
  async function retryWithTheErrorPageToken(url: string): Promise<number[]> {
    const first = await fetch(`${url}/login`, { method: 'POST' })
    const { token } = (await first.json()) as { token: string }
    const cookie = first.headers
      .getSetCookie()
      .map((raw) => raw.split(';')[0])
      .join('; ')
    const second = await fetch(`${url}/login`, { method: 'POST', headers: { cookie, 'x-csrf-token': token } })
    return [first.status, second.status]
  }

  const manager = () =>
    createSessionManager({ store: new MemoryStore(), keys: [generateKey()], cookie: { secure: false } })

  test('Express: the error handler renders a new token, and it works', async () => {
    const auth = expressSessions(manager())
    const app = express()
    app.use(auth)
    app.post('/login', (req, res) => {
      auth.session(req).login('alice')
      res.json({ ok: true })
    })
    app.use((error: unknown, req: express.Request, res: express.Response, next: express.NextFunction) => {
      if (isCsrfError(error)) res.status(error.status).json({ token: auth.session(req).csrfToken() })
      else next(error)
    })
    const served = await listen(createServer(app))
    try {
      expect(await retryWithTheErrorPageToken(served.url)).toEqual([403, 200])
    } finally {
      await served.close()
    }
  })

  test('Fastify: the error handler renders a new token, and it works', async () => {
    const app = Fastify()
    await app.register(latchkey, { manager: manager() })
    app.setErrorHandler((error, request, reply) => {
      if (isCsrfError(error)) return reply.code(error.status).send({ token: request.session.csrfToken() })
      return reply.send(error)
    })
    app.post('/login', async (request) => {
      request.session.login('alice')
      return { ok: true }
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    try {
      const { port } = app.server.address() as AddressInfo
      expect(await retryWithTheErrorPageToken(`http://127.0.0.1:${port}`)).toEqual([403, 200])
    } finally {
      await app.close()
    }
  })
})

describe.each([
  ['Express', express],
  ['Express 4', express4],
])('%s: the hold sits on the response prototype every app shares', (_name, createApp) => {
  const manager = (store: MemoryStore | Pausable<MemoryStore>['store'] = new MemoryStore()) =>
    createSessionManager({ store, keys: [generateKey()], cookie: { secure: false } })

  /** Signs in through `path` and returns whether the answer carried the session and the next visit knows it. */
  async function signIn(url: string, path: string): Promise<{ cookie: boolean; user: unknown }> {
    const response = await fetch(`${url}${path}`, { redirect: 'manual' })
    const cookie = response.headers.getSetCookie().map((raw) => raw.split(';')[0])
    const me = await fetch(`${url}/me`, { headers: { cookie: cookie.join('; ') } })
    return { cookie: cookie.length === 1, user: await me.json() }
  }

  /** An app signing in at /login and /sub/login (a mounted sub-app, which swaps the prototype again). */
  function appWithSubApp(before?: express.RequestHandler) {
    const auth = expressSessions(manager())
    const app = createApp()
    if (before) app.use(before)
    app.use(auth)
    const sub = createApp()
    sub.get('/login', (req, res) => {
      auth.session(req).login('alice')
      res.redirect('/me')
    })
    app.use('/sub', sub)
    app.get('/login', (req, res) => {
      auth.session(req).login('bob')
      res.redirect('/me')
    })
    app.get('/me', (req, res) => {
      res.json(auth.session(req).userId)
    })
    return app
  }

  test('a response served by a mounted sub-app is held', async () => {
    const served = await listen(createServer(appWithSubApp()))
    try {
      expect(await signIn(served.url, '/sub/login')).toEqual({ cookie: true, user: 'alice' })
      expect(await signIn(served.url, '/login')).toEqual({ cookie: true, user: 'bob' })
    } finally {
      await served.close()
    }
  })

  test('with the middleware inside a sub-app, a response the parent app sends after it is held', async () => {
    const auth = expressSessions(manager())
    const app = createApp()
    const sub = createApp()
    sub.use(auth)
    sub.use((req, _res, next) => {
      auth.session(req).set('visited', true)
      next()
    })
    app.use('/sub', sub)
    // Express put the parent's prototype back on the response before this runs.
    app.get('/sub/page', (req, res) => {
      res.json(auth.session(req).get('visited'))
    })
    const served = await listen(createServer(app))
    try {
      const response = await fetch(`${served.url}/sub/page`)
      expect(await response.json()).toBe(true)
      expect(response.headers.getSetCookie()).toHaveLength(1)
    } finally {
      await served.close()
    }
  })

  test("two managers' middleware on one response: both sessions are committed", async () => {
    const stores = [new MemoryStore(), new MemoryStore()] as const
    const [first, second] = stores.map((store, i) =>
      expressSessions(
        createSessionManager({ store, keys: [generateKey()], cookie: { secure: false, name: `sid${i}` } }),
      ),
    ) as [ReturnType<typeof expressSessions>, ReturnType<typeof expressSessions>]
    const app = createApp()
    app.use(first)
    app.use((req, _res, next) => {
      first.session(req).set('seen', 'first')
      next()
    })
    app.use(second)
    app.get('/', (req, res) => {
      second.session(req).set('seen', 'second')
      res.send('ok')
    })
    const served = await listen(createServer(app))
    try {
      const response = await fetch(`${served.url}/`)
      expect(await response.text()).toBe('ok')
      const names = response.headers.getSetCookie().map((raw) => raw.split('=')[0])
      expect(names.sort()).toEqual(['sid0', 'sid1'])
      expect([await stores[0].count(), await stores[1].count()]).toEqual([1, 1])
    } finally {
      await served.close()
    }
  })

  test('a wrapper put on the response before the middleware (compression, on-headers) is held too', async () => {
    const wrapper: express.RequestHandler = (_req, res, next) => {
      const end = res.end
      res.end = function (this: express.Response, ...args: unknown[]) {
        this.setHeader('x-wrapped', '1')
        return (end as (...a: unknown[]) => unknown).apply(this, args)
      } as typeof res.end
      next()
    }
    const served = await listen(createServer(appWithSubApp(wrapper)))
    try {
      expect(await signIn(served.url, '/sub/login')).toEqual({ cookie: true, user: 'alice' })
      expect(await signIn(served.url, '/login')).toEqual({ cookie: true, user: 'bob' })
      expect((await fetch(`${served.url}/me`)).headers.get('x-wrapped')).toBe('1')
    } finally {
      await served.close()
    }
  })

  test('headersSent is true while the commit holds the output, and an app without latchkey is left alone', async () => {
    const paused = pausable(new MemoryStore())
    const auth = expressSessions(manager(paused.store))
    const seen: Record<string, boolean[]> = { held: [], plain: [] }
    const app = createApp()
    app.use(auth)
    app.get('/login', (req, res) => {
      auth.session(req).login('alice')
      seen.held?.push(res.headersSent)
      res.send('ok')
      seen.held?.push(res.headersSent)
    })
    const plain = createApp()
    plain.get('/', (_req, res) => {
      seen.plain?.push(res.headersSent)
      res.send('plain')
      seen.plain?.push(res.headersSent)
    })
    const served = await listen(createServer(app))
    const other = await listen(createServer(plain))
    try {
      const held = paused.pause('create')
      const login = fetch(`${served.url}/login`)
      await held.reached
      // The handler has sent; its output waits for the store. To Express, it has gone.
      expect(seen.held).toEqual([false, true])
      expect(await (await fetch(other.url)).text()).toBe('plain')
      expect(seen.plain).toEqual([false, true])
      held.release()
      const response = await login
      expect(await response.text()).toBe('ok')
      expect(response.headers.getSetCookie()).toHaveLength(1)
    } finally {
      paused.releaseAll()
      await served.close()
      await other.close()
    }
  })
})

test('Fastify: the plugin serves the scope it is registered in and its children, not its siblings', async () => {
  const app = Fastify()
  const store = new MemoryStore()
  await app.register(async (scope) => {
    await scope.register(latchkey, {
      manager: createSessionManager({ store, keys: [generateKey()], cookie: { secure: false } }),
    })
    scope.get('/inside', async (request) => {
      request.session.set('seen', true)
      return { session: request.session !== null }
    })
    await scope.register(async (child) => {
      child.get('/child', async (request) => ({ session: request.session !== null }))
    })
  })
  app.get('/outside', async (request) => ({
    session: request.session !== undefined && request.session !== null,
  }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  try {
    const { port } = app.server.address() as AddressInfo
    const get = async (path: string) => {
      const response = await fetch(`http://127.0.0.1:${port}${path}`)
      return { body: await response.json(), cookies: response.headers.getSetCookie().length }
    }
    expect(await get('/inside')).toEqual({ body: { session: true }, cookies: 1 })
    expect(await get('/child')).toEqual({ body: { session: true }, cookies: 0 })
    expect(await get('/outside')).toEqual({ body: { session: false }, cookies: 0 })
    expect(await store.count()).toBe(1)
  } finally {
    await app.close()
  }
})

describe('adapter options latchkey does not know are refused', () => {
  const manager = createSessionManager({ store: new MemoryStore(), keys: [generateKey()] })

  test('every adapter names the option, and where an express-session habit belongs', async () => {
    const habits = { secret: 'keyboard cat', resave: false } as never
    expect(() => withSessions(manager, () => {}, habits)).toThrow(/secret: .*createSessionManager/)
    expect(() => expressSessions(manager, habits)).toThrow(/secret: .*createSessionManager/)
    expect(() => honoSessions(manager, { csrf: false, onError: () => {} } as never)).toThrow(
      /onError: is not an option of sessions\(\) of latchkey\/hono/,
    )
    expect(() => koaSessions(manager, { csfr: false } as never)).toThrow(/csfr: .*did you mean csrf\?/)
    const fastify = Fastify()
    await expect(fastify.register(latchkey, { manager, rolling: true } as never).ready()).rejects.toThrow(
      /rolling: .*idle expiry always rolls/,
    )
    await fastify.close()
  })
})
