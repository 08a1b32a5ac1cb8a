/**
 * One server of `bench/dropin.ts`, in its own process: Express 5 with express-session, or with
 * latchkey/express-session (the drop-in, from the build), on the same store package. `BENCH_STORE`
 * names the store (memory: express-session's own MemoryStore; redis: connect-redis 9 on node-redis),
 * `BENCH_SIDE` the middleware (express-session, dropin), `BENCH_CELL` the key prefix of this cell (the
 * runner drops its keys once the process has stopped). Both are configured alike, as express-session's
 * README recommends (`resave: false`, `saveUninitialized: false`), with the same secret and cookie; the
 * routes are those of every benchmark server (see bench/serve.ts).
 */
import type { DropInSide, DropInStore } from './dropin-kinds.js'
import { DROPIN_SIDES, DROPIN_STORES } from './dropin-kinds.js'
import { dropInFactory, dropInStore } from './dropin-sides.js'
import type { Built } from './serve.js'
import { buildExpressApp, expressSession, serveCell } from './serve.js'

function build(kind: DropInStore, side: DropInSide, cell: string): Promise<Built> {
  return buildExpressApp(async (app, routes) => {
    const { store, close } = await dropInStore(kind, `${cell}:`)
    routes(await expressSession(app, store, await dropInFactory(side)))
    return close
  })
}

serveCell(DROPIN_STORES, DROPIN_SIDES, 'key prefix', build)
