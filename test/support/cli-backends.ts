/**
 * The stores the CLI tests run against, each as the CLI names it (`--store URL` plus store options)
 * and as the test process opens it, under names of its own (a table, a key prefix, a directory) that
 * are removed at the end. PostgreSQL, MariaDB and Redis are service-gated (see services.ts).
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createSessionManager, type SessionManager } from '../../src/core/manager.js'
import type { SessionStore } from '../../src/core/store.js'
import { isClosableStore } from '../../src/core/store.js'
import { openStore } from '../../src/stores/index.js'
import { dropRedisPrefixes, SERVICE_URLS, type ServiceStatus, serverServices } from './services.js'

export interface Backend {
  readonly name: string
  readonly status: ServiceStatus
  /** The store URL given to the CLI. */
  readonly url: string
  /** Whether the store has a schema (migrate, schema). */
  readonly migratable: boolean
  /** `--store URL` and the `--store-option`s naming this backend's own table or prefix. */
  args(): string[]
  /** The same store, opened in the test process. */
  open(): Promise<SessionStore>
  /** Removes everything the tests stored. */
  cleanup(): Promise<void>
}

const AVAILABLE: ServiceStatus = { name: 'local', available: true }

export async function backends(label: string): Promise<Backend[]> {
  const run = `${label}_${randomBytes(4).toString('hex')}`
  const dir = mkdtempSync(join(tmpdir(), `latchkey-${label}-`))
  const table = `latchkey_cli_${run}`
  const prefix = `latchkey-cli-${run}:`
  const { postgres, mariadb, redis } = await serverServices()
  const local = (name: string, url: string, migratable: boolean): Backend => ({
    name,
    status: AVAILABLE,
    url,
    migratable,
    args: () => ['--store', url],
    open: () => openStore(url),
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  })
  const sql = (name: string, status: ServiceStatus, url: string, drop: () => Promise<void>): Backend => ({
    name,
    status,
    url,
    migratable: true,
    args: () => ['--store', url, '--store-option', `tableName=${table}`],
    open: () => openStore(url, { storeOptions: { tableName: table, pruneIntervalMs: 0 } }),
    cleanup: drop,
  })
  return [
    local('SQLite', `sqlite:${join(dir, 'sessions.db')}`, true),
    local('files', `file:${join(dir, 'sessions')}`, false),
    sql('PostgreSQL', postgres, SERVICE_URLS.postgres, async () => {
      if (!postgres.available) return
      const client = new pg.Client({ connectionString: SERVICE_URLS.postgres })
      await client.connect()
      try {
        await client.query(`DROP TABLE IF EXISTS "${table}"`)
        await client.query('DELETE FROM latchkey_schema WHERE table_name = $1', [table]).catch(() => {})
      } finally {
        await client.end()
      }
    }),
    sql('MariaDB', mariadb, SERVICE_URLS.mysql, async () => {
      if (!mariadb.available) return
      const connection = await mysql.createConnection({ uri: SERVICE_URLS.mysql })
      try {
        await connection.query(`DROP TABLE IF EXISTS \`${table}\``)
        await connection.query('DELETE FROM latchkey_schema WHERE table_name = ?', [table]).catch(() => {})
      } finally {
        await connection.end()
      }
    }),
    {
      name: 'Redis',
      status: redis,
      url: SERVICE_URLS.redis,
      migratable: false,
      args: () => ['--store', SERVICE_URLS.redis, '--store-option', `prefix=${prefix}`],
      open: () => openStore(SERVICE_URLS.redis, { storeOptions: { prefix } }),
      cleanup: async () => {
        if (redis.available) await dropRedisPrefixes(prefix)
      },
    },
  ]
}

/** A manager as the application would run it (plain-HTTP cookies, so the cookie is `sid`). */
export function appManager(store: SessionStore, keys: string[]): SessionManager {
  return createSessionManager({ store, keys, cookie: { secure: false } })
}

/** Stores a session (signed in as `user` when given, with `data`) and resolves its ID. */
export async function seedSession(
  manager: SessionManager,
  options: { user?: string; userAgent?: string; data?: Record<string, unknown> } = {},
): Promise<string> {
  const session = await manager.load({ userAgent: options.userAgent })
  for (const [key, value] of Object.entries(options.data ?? { seeded: true })) session.set(key, value)
  if (options.user !== undefined) session.login(options.user)
  const { setCookie } = await manager.commit(session)
  const id = /^sid=([^;]+)/.exec(setCookie ?? '')?.[1]
  if (id === undefined) throw new Error(`no session cookie in ${setCookie}`)
  return id
}

/** Whether the session `id` still loads as a stored session (not a fresh one). */
export async function isLive(manager: SessionManager, id: string): Promise<boolean> {
  const session = await manager.load({ cookie: `sid=${id}` })
  return !session.isNew
}

export async function closeStore(store: SessionStore): Promise<void> {
  if (isClosableStore(store)) await store.close()
}
