/**
 * Fresh authentication for sensitive actions (ASVS V7.5): the session keeps when the user last proved
 * who they are (`login`, `reauthenticate()`, sealed in the payload), and every front door's
 * `requireFreshAuth(maxAgeMs)` refuses a route with 403 and a reason unless that was recent enough.
 * Time is a ManualClock: nothing here waits.
 */
import type { Server } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { serve as honoServe } from '@hono/node-server'
import express from 'express'
import Fastify from 'fastify'
import { Hono } from 'hono'
import Koa from 'koa'
import { afterEach, describe, expect, test } from 'vitest'
import { requireFreshAuth as expressFresh, sessions as expressSessions } from '../src/adapters/express.js'
import latchkey, { requireFreshAuth as fastifyFresh } from '../src/adapters/fastify.js'
import {
  requireFreshAuth as honoFresh,
  sessions as honoSessions,
  type SessionEnv,
} from '../src/adapters/hono.js'
import {
  requireFreshAuth as koaFresh,
  sessions as koaSessions,
  type SessionContext,
} from '../src/adapters/koa.js'
import { requireFreshAuth as nodeFresh, withSessions } from '../src/adapters/node.js'
import { ManualClock } from '../src/core/clock.js'
import { FreshAuthError, SessionError } from '../src/core/errors.js'
import type { SessionManager } from '../src/core/manager.js'
import type { Session } from '../src/core/session.js'
import { createSessionManager, generateKey, MemoryStore } from '../src/index.js'
import { Client } from './support/http.js'
import { type Data, load, MINUTE, RENEWAL_DUE, setup } from './support/managers.js'

const FIVE_MINUTES = 5 * MINUTE

/** The session ID a commit hands out. */
function idOf(setCookie: string | null): string {
  const id = setCookie?.match(/^sid=([^;]+)/)?.[1]
  if (id === undefined) throw new Error('no session cookie was sent')
  return id
}

describe('authenticatedAt and reauthenticate() in the manager', () => {
  test('login sets authenticatedAt to the time of the sign-in; it is sealed and read back', async () => {
    const { clock, manager } = setup()
    const session = await load(manager, undefined)
    expect(session.authenticatedAt).toBeNull()
    session.login('alice')
    const signedInAt = clock.now()
    expect(session.authenticatedAt).toBe(signedInAt)
    const id = idOf((await manager.commit(session)).setCookie)
    clock.advance(MINUTE)
    const later = await load(manager, id)
    expect(later.authenticatedAt).toBe(signedInAt)
    expect(later.authenticatedWithin(MINUTE)).toBe(true)
    expect(later.authenticatedWithin(MINUTE - 1)).toBe(false)
  })

  test('reauthenticate() renews the ID (the old one dies) and moves authenticatedAt to now', async () => {
    const { clock, manager } = setup()
    const first = await load(manager, undefined)
    first.set('cart', ['book'])
    first.login('alice')
    const oldId = idOf((await manager.commit(first)).setCookie)
    clock.advance(20 * MINUTE)
    const stale = await load(manager, oldId)
    expect(stale.authenticatedWithin(FIVE_MINUTES)).toBe(false)
    stale.reauthenticate()
    expect(stale.authenticatedAt).toBe(clock.now())
    const newId = idOf((await manager.commit(stale)).setCookie)
    expect(newId).not.toBe(oldId)
    expect((await load(manager, oldId)).isNew).toBe(true)
    const fresh = await load(manager, newId)
    expect([fresh.userId, fresh.get('cart'), fresh.authenticatedAt]).toEqual(['alice', ['book'], clock.now()])
  })

  test('the time survives renewals of the ID, and a write that met a concurrent write', async () => {
    const { clock, manager, another } = setup()
    const start = await load(manager, undefined)
    start.login('alice')
    const signedInAt = clock.now()
    let id = idOf((await manager.commit(start)).setCookie)
    clock.advance(RENEWAL_DUE)
    const renewed = await load(manager, id)
    id = idOf((await manager.commit(renewed)).setCookie)
    expect((await load(manager, id)).authenticatedAt).toBe(signedInAt)

    // A reauthentication whose rotation finds the session written meanwhile by another process.
    const other = another()
    const proving = await load(manager, id)
    const writing = await load(other, id)
    writing.set('n', 1)
    await other.commit(writing)
    clock.advance(MINUTE)
    proving.reauthenticate()
    const after = idOf((await manager.commit(proving)).setCookie)
    const loaded = await load(manager, after)
    expect([loaded.get('n'), loaded.authenticatedAt]).toEqual([1, clock.now()])
  })

  test('a sign-in and a reauthentication in the same request: one new ID, the time of the later', async () => {
    const { clock, manager } = setup()
    const session = await load(manager, undefined)
    session.login('alice')
    clock.advance(1)
    session.reauthenticate()
    const id = idOf((await manager.commit(session)).setCookie)
    expect((await load(manager, id)).authenticatedAt).toBe(clock.now())
  })

  test('reauthenticate() without a signed-in user is a SessionError; a callback a TypeError', async () => {
    const { manager } = setup()
    const anonymous = await load(manager, undefined)
    expect(() => anonymous.reauthenticate()).toThrow(
      expect.objectContaining({ code: 'ERR_LATCHKEY_NOT_SIGNED_IN' }),
    )
    expect(() => anonymous.reauthenticate()).toThrow(SessionError)
    anonymous.login('alice')
    expect(() => (anonymous.reauthenticate as unknown as (cb: () => void) => void)(() => {})).toThrow(
      TypeError,
    )
  })

  test('logout forgets the time; maxAgeMs must be a positive integer', async () => {
    const { manager } = setup()
    const session = await load(manager, undefined)
    session.login('alice')
    session.logout()
    expect(session.authenticatedAt).toBeNull()
    expect(session.authenticatedWithin(MINUTE)).toBe(false)
    for (const bad of [0, -1, 1.5, Number.NaN, '60000', undefined]) {
      expect(() => session.authenticatedWithin(bad as number)).toThrow(/maxAgeMs must be a positive integer/)
      expect(() => expressFresh(bad as number)).toThrow(
        expect.objectContaining({ code: 'ERR_LATCHKEY_CONFIG', option: 'requireFreshAuth(maxAgeMs)' }),
      )
    }
  })
})

// Every front door, over HTTP: a sign-in route, a reauthentication route, and a guarded route.

interface Door {
  readonly name: string
  /** Serves `/login`, `/reauth` and `/sensitive` (guarded, 5 minutes); resolves its URL and a close. */
  serve(manager: SessionManager<Data>): Promise<{ url: string; close(): Promise<void> }>
}

/** What every app does on its routes, whatever the framework. */
function route(path: string, session: Session<Data>): { status: number; body: string } {
  if (path.startsWith('/login')) session.login('alice')
  else if (path.startsWith('/reauth')) session.reauthenticate()
  else if (path.startsWith('/logout')) session.logout()
  return { status: 200, body: 'ok' }
}

async function listen(server: Server): Promise<{ url: string; close(): Promise<void> }> {
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

const DOORS: Door[] = [
  {
    name: 'node:http',
    serve: (manager) => {
      const plain = (
        req: { url?: string },
        res: import('node:http').ServerResponse,
        session: Session<Data>,
      ) => {
        const { status, body } = route(req.url ?? '/', session)
        res.writeHead(status).end(body)
      }
      const guarded = nodeFresh(FIVE_MINUTES, plain)
      return listen(
        createServer(
          withSessions(manager, (req, res, session) =>
            req.url?.startsWith('/sensitive') ? guarded(req, res, session) : plain(req, res, session),
          ),
        ),
      )
    },
  },
  {
    name: 'Express',
    serve: (manager) => {
      const auth = expressSessions(manager, { csrf: false })
      const app = express()
      app.use(auth)
      app.get('/sensitive', expressFresh(FIVE_MINUTES), (_req, res) => {
        res.send('ok')
      })
      app.get('/*path', (req, res) => {
        const { status, body } = route(req.path, auth.session(req))
        res.status(status).send(body)
      })
      return listen(createServer(app))
    },
  },
  {
    name: 'Fastify',
    serve: async (manager) => {
      const app = Fastify()
      await app.register(latchkey, { manager, csrf: false })
      app.get('/sensitive', { preHandler: fastifyFresh(FIVE_MINUTES) }, async () => 'ok')
      app.get('/*', async (request, reply) => {
        const { status, body } = route(request.url, request.session as Session<Data>)
        return reply.code(status).send(body)
      })
      await app.listen({ port: 0, host: '127.0.0.1' })
      const { port } = app.server.address() as AddressInfo
      return { url: `http://127.0.0.1:${port}`, close: () => app.close() }
    },
  },
  {
    name: 'Hono',
    serve: async (manager) => {
      const app = new Hono<SessionEnv<Data>>().use(honoSessions(manager, { csrf: false }))
      app.get('/sensitive', honoFresh(FIVE_MINUTES), (c) => c.text('ok'))
      app.get('*', (c) => {
        const { status, body } = route(new URL(c.req.url).pathname, c.get('session'))
        return c.text(body, status as 200)
      })
      const server = await new Promise<Server>((resolve) => {
        const started = honoServe({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () =>
          resolve(started as Server),
        )
      })
      return listen(server)
    },
  },
  {
    name: 'Koa',
    serve: (manager) => {
      const app = new Koa<Koa.DefaultState, SessionContext<Data>>()
      const guard = koaFresh(FIVE_MINUTES)
      app.silent = true
      app.use(koaSessions(manager, { csrf: false }))
      app.use(async (ctx, next) => {
        if (ctx.path.startsWith('/sensitive')) return guard(ctx, next)
        await next()
      })
      app.use(async (ctx) => {
        const { status, body } = route(ctx.path, ctx.session)
        ctx.status = status
        ctx.body = body
      })
      return listen(createServer(app.callback()))
    },
  },
]

const closers: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const close of closers.splice(0)) await close()
})

describe.each(DOORS)('requireFreshAuth over HTTP: $name', (door) => {
  async function start() {
    const clock = new ManualClock()
    const manager = createSessionManager<Data>({
      store: new MemoryStore({ clock }),
      keys: [generateKey()],
      clock,
      cookie: { secure: false },
    })
    const served = await door.serve(manager)
    closers.push(() => served.close())
    return { clock, client: new Client(served.url) }
  }

  test('not signed in: 403 not-signed-in; signed in just now: through', async () => {
    const { client } = await start()
    const refused = await client.request('/sensitive')
    expect(refused.status).toBe(403)
    expect(await refused.text()).toMatch(/not-signed-in/)
    expect((await client.request('/login')).status).toBe(200)
    const through = await client.request('/sensitive')
    expect([through.status, await through.text()]).toEqual([200, 'ok'])
  })

  test('a proof older than maxAgeMs: 403 reauthentication-required, until reauthenticate()', async () => {
    const { clock, client } = await start()
    await client.request('/login')
    clock.advance(FIVE_MINUTES)
    expect((await client.request('/sensitive')).status).toBe(200)
    clock.advance(1)
    const refused = await client.request('/sensitive')
    expect(refused.status).toBe(403)
    expect(await refused.text()).toMatch(/reauthentication-required/)
    const before = client.cookie
    expect((await client.request('/reauth')).status).toBe(200)
    expect(client.cookie).not.toBe(before)
    expect((await client.request('/sensitive')).status).toBe(200)
  })
})

describe('the refusal as the app catches it', () => {
  test('Express hands the app a FreshAuthError with status 403 and its reason', async () => {
    const { clock, manager } = setup()
    const auth = expressSessions(manager, { csrf: false })
    const app = express()
    const caught: unknown[] = []
    app.use(auth)
    app.get('/login', (req, res) => {
      auth.session(req).login('alice')
      res.send('in')
    })
    app.get('/sensitive', expressFresh(FIVE_MINUTES), (_req, res) => {
      res.send('ok')
    })
    app.use((error: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      caught.push(error)
      res.status(200).send('confirm your password')
    })
    const served = await listen(createServer(app))
    closers.push(() => served.close())
    const client = new Client(served.url)
    await client.request('/login')
    clock.advance(FIVE_MINUTES + 1)
    const page = await client.request('/sensitive')
    expect(await page.text()).toBe('confirm your password')
    expect(caught).toHaveLength(1)
    expect(caught[0]).toBeInstanceOf(FreshAuthError)
    expect(caught[0]).toMatchObject({
      code: 'ERR_LATCHKEY_FRESH_AUTH',
      reason: 'reauthentication-required',
      status: 403,
      maxAgeMs: FIVE_MINUTES,
    })
  })
})
