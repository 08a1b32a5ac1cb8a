/**
 * One server of `bench/peer-stores.ts`, in its own process: Express 5 with latchkey on one of its
 * bundled stores, or with express-session on the store package users of that database run today.
 * `BENCH_STORE` names the store (redis, postgres, mysql, file, sqlite), `BENCH_SIDE` the side
 * (latchkey, peer), `BENCH_CELL` the table name, key prefix or folder of this cell (the runner drops
 * it once the process has stopped). The routes are those of every benchmark server (see
 * bench/serve.ts).
 *
 * Each store is created the way its users do: latchkey's through `openStore(url)` with its defaults
 * but for the table name / prefix; the peers as their READMEs show, with their documented defaults
 * but for the table name / prefix / folder.
 */
import type { Store } from 'express-session'
import type { SessionStore } from '../src/index.js'
import type { PeerStore, Side } from './peer-store-kinds.js'
import { PEER_STORES, SIDES, storeUrls } from './peer-store-kinds.js'
import type { Built } from './serve.js'
import {
  buildExpressApp,
  connectRedis,
  expressSession,
  fromDist,
  latchkeyExpress,
  latchkeyManager,
  serveCell,
} from './serve.js'

const URLS = storeUrls()

/** latchkey's store: `openStore(url)`, as a configuration file or the CLI would open it. */
async function latchkeyStore(kind: PeerStore, cell: string): Promise<SessionStore> {
  const { openStore } = await fromDist<typeof import('../src/stores/index.js')>('stores/index.js')
  switch (kind) {
    case 'redis':
      return openStore(URLS.redis, { storeOptions: { prefix: `${cell}:` } })
    case 'postgres':
      return openStore(URLS.postgres, { storeOptions: { tableName: cell } })
    case 'mysql':
      return openStore(URLS.mysql, { storeOptions: { tableName: cell } })
    case 'file':
      return openStore(`file://${cell}`)
    case 'sqlite':
      return openStore(`sqlite://${cell}/sessions.db`)
  }
}

/** The peer's store, as its README sets it up, and what closes it. */
async function peerStore(kind: PeerStore, cell: string): Promise<{ store: Store; close(): Promise<void> }> {
  const { default: session } = await import('express-session')
  switch (kind) {
    case 'redis':
      return connectRedis(`${cell}:`)
    case 'postgres': {
      // connect-pg-simple with a connection string; it creates its table when missing.
      const { default: pgSession } = await import('connect-pg-simple')
      const store = new (pgSession(session))({
        conString: URLS.postgres,
        tableName: cell,
        createTableIfMissing: true,
      })
      return { store, close: async () => store.close() }
    }
    case 'mysql': {
      // express-mysql-session with its own pool (mysql2); it creates its table (createDatabaseTable).
      const { default: MySQLStoreFactory } = await import('express-mysql-session')
      const url = new URL(URLS.mysql)
      const MySQLStore = MySQLStoreFactory(session as never)
      const store = new MySQLStore({
        host: url.hostname,
        port: Number(url.port || 3306),
        user: decodeURIComponent(url.username),
        password: decodeURIComponent(url.password),
        database: url.pathname.slice(1),
        schema: { tableName: cell },
      })
      await store.onReady()
      return { store: store as unknown as Store, close: () => store.close() }
    }
    case 'file': {
      // session-file-store with its defaults but for the folder.
      const { default: fileStore } = await import('session-file-store')
      const FileStore = fileStore(session)
      return { store: new FileStore({ path: cell }), close: async () => {} }
    }
    case 'sqlite': {
      // better-sqlite3-session-store on a better-sqlite3 database, as its README shows (without the
      // README's `verbose: console.log`).
      const { default: Database } = await import('better-sqlite3')
      const { default: sqliteStore } = await import('better-sqlite3-session-store')
      const db = new Database(`${cell}/sessions.db`)
      const SqliteStore = sqliteStore(session)
      return {
        store: new SqliteStore({ client: db, expired: { clear: true, intervalMs: 900_000 } }),
        close: async () => void db.close(),
      }
    }
  }
}

function build(kind: PeerStore, side: Side, cell: string): Promise<Built> {
  return buildExpressApp(async (app, routes) => {
    if (side === 'latchkey') {
      const latchkey = latchkeyManager(await latchkeyStore(kind, cell))
      routes(await latchkeyExpress(app, latchkey.manager))
      return latchkey.close
    }
    const peer = await peerStore(kind, cell)
    routes(await expressSession(app, peer.store))
    return peer.close
  })
}

serveCell(PEER_STORES, SIDES, 'table, prefix or folder', build)
