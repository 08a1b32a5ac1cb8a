/**
 * One server of `bench/dropin.ts`, in its own process: Express 5 with express-session, or with
 * latchkey/express-session (the drop-in, from the build), on the same store package. `BENCH_STORE`
 * names the store (memory: express-session's own MemoryStore; redis: connect-redis 9 on node-redis),
 * `BENCH_SIDE` the middleware (express-session, dropin), `BENCH_CELL` the key prefix of this cell (the
 * runner drops its keys once the process has stopped). Both are configured alike, as express-session's
 * README recommends (`resave: false`, `saveUninitialized: false`), with the same secret and cookie; the
 * routes are those of every benchmark server (see bench/serve.ts).
 */
import type { Store } from 'express-session'
import type { DropInSide, DropInStore } from './dropin-kinds.js'
import { DROPIN_SIDES, DROPIN_STORES } from './dropin-kinds.js'
import { storeUrls } from './peer-store-kinds.js'
import type { Built, ExpressRequest, RecordSession } from './serve.js'
import { buildExpressApp, fromDist, layer, PEER_COOKIE, PEER_SECRET, RECORD, serve } from './serve.js'

/** The store package, built as its README shows, and what closes it. */
async function storeOf(kind: DropInStore, cell: string): Promise<{ store: Store; close(): Promise<void> }> {
  if (kind === 'memory') {
    const { MemoryStore } = await import('express-session')
    return { store: new MemoryStore(), close: async () => {} }
  }
  // connect-redis 9 on node-redis, as its README's "Full setup".
  const { RedisStore } = await import('connect-redis')
  const { createClient } = await import('redis')
  const client = createClient({ url: storeUrls().redis })
  await client.connect()
  return {
    store: new RedisStore({ client, prefix: `${cell}:` }),
    close: async () => void (await client.quit()),
  }
}

/** The middleware factory of each side: express-session itself, or the drop-in as the build ships it. */
async function factoryOf(side: DropInSide): Promise<(options: object) => unknown> {
  if (side === 'express-session') return (await import('express-session')).default as never
  const dropIn = await fromDist<typeof import('../src/express-session/index.js')>('express-session/index.js')
  return dropIn.default as never
}

function build(kind: DropInStore, side: DropInSide, cell: string): Promise<Built> {
  return buildExpressApp(async (app, routes) => {
    const { store, close } = await storeOf(kind, cell)
    const session = await factoryOf(side)
    app.use(
      session({
        secret: PEER_SECRET,
        resave: false,
        saveUninitialized: false,
        cookie: PEER_COOKIE,
        store,
      }) as never,
    )
    routes(layer(RECORD, (req: ExpressRequest) => req.session as unknown as RecordSession))
    return close
  })
}

serve(() => {
  const kind = process.env.BENCH_STORE as DropInStore
  const side = process.env.BENCH_SIDE as DropInSide
  const cell = process.env.BENCH_CELL ?? ''
  if (!DROPIN_STORES.includes(kind)) throw new Error(`BENCH_STORE must be one of ${DROPIN_STORES.join(', ')}`)
  if (!DROPIN_SIDES.includes(side)) throw new Error(`BENCH_SIDE must be one of ${DROPIN_SIDES.join(', ')}`)
  if (cell === '') throw new Error('BENCH_CELL must name the key prefix of this cell')
  return build(kind, side, cell)
})
