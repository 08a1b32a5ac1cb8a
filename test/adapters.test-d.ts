/**
 * Type tests, checked by `npm run typecheck` (never run): session data typed through `Session<T>` and
 * each framework's own typing, with no declaration merging. Every `@ts-expect-error` line must fail.
 */
import express from 'express'
import Fastify from 'fastify'
import { Hono } from 'hono'
import type { DefaultState } from 'koa'
import Koa from 'koa'
import type { SessionRequest } from '../src/adapters/express.js'
import { sessions as expressSessions } from '../src/adapters/express.js'
import latchkey from '../src/adapters/fastify.js'
import type { SessionEnv } from '../src/adapters/hono.js'
import { sessions as honoSessions } from '../src/adapters/hono.js'
import type { SessionContext } from '../src/adapters/koa.js'
import { sessions as koaSessions } from '../src/adapters/koa.js'
import type { Session } from '../src/index.js'
import { createSessionManager, MemoryStore } from '../src/index.js'

type Shop = { cart: string[]; visits: number }

const manager = createSessionManager<Shop>({ store: new MemoryStore() })
declare const session: Session<Shop>

// Session<T> itself.
export const cart: string[] | undefined = session.get('cart')
// @ts-expect-error a key the data does not have
session.get('nope')
// @ts-expect-error a value of the wrong type
session.set('cart', 'apples')
session.update('visits', (n = 0) => n + 1)
// @ts-expect-error an update that returns the wrong type
session.update('visits', () => 'many')

// Express: the middleware's own accessor, or the request type, typed by the manager.
const auth = expressSessions(manager, {
  csrf: { trustedOrigins: ['https://app.example'], exempt: ['/hooks/*'] },
})
express()
  .use(auth)
  .get('/cart', (req, res) => {
    const items: string[] | undefined = auth.session(req).get('cart')
    const same: number | undefined = (req as SessionRequest<Shop>).session.get('visits')
    // @ts-expect-error a key the data does not have
    auth.session(req).get('nope')
    res.json({ items, same })
  })
// @ts-expect-error not an option of the CSRF check
expressSessions(manager, { csrf: { trustedOrigin: ['https://app.example'] } })
expressSessions(manager, { csrf: false, onError: (error: unknown) => console.error(error) })

// Fastify: request.session is declared by the plugin; routes may opt out of the CSRF check.
const fastify = Fastify()
fastify.register(latchkey, { manager, csrf: { trustedOrigins: ['https://app.example'] } })
fastify.post('/hooks/stripe', { config: { csrf: false } }, async (request) => {
  const shop = request.session as Session<Shop>
  const items: string[] | undefined = shop.get('cart')
  return { items, any: request.session.get('anything') }
})
// @ts-expect-error the manager is required
fastify.register(latchkey, { csrf: false })

// Hono: context variables, from the chained .use() or from the app's Env.
new Hono().use(honoSessions(manager)).get('/cart', (c) => {
  const items: string[] | undefined = c.get('session').get('cart')
  // @ts-expect-error a key the data does not have
  c.get('session').get('nope')
  return c.json({ items })
})
new Hono<SessionEnv<Shop>>().use(honoSessions(manager, { csrf: false })).get('/', (c) => {
  const visits: number | undefined = c.get('session').get('visits')
  return c.json({ visits })
})

// Koa: the context type, from the chained .use() or from the app's generics.
new Koa().use(koaSessions(manager)).use((ctx) => {
  const items: string[] | undefined = ctx.session.get('cart')
  // @ts-expect-error a key the data does not have
  ctx.session.get('nope')
  ctx.body = items
})
new Koa<DefaultState, SessionContext<Shop>>().use(koaSessions(manager)).use((ctx) => {
  ctx.body = ctx.session.get('visits')
})
