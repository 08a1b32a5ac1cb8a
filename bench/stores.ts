/**
 * Every bundled store at scale: get, update, touch and create per second with 1 000, 100 000 and
 * 1 000 000 sessions stored, and how long `prune()` takes for 100 000 expired records, with the longest
 * event-loop stall during it.
 *
 *   npm run bench:stores                  5 s per operation (3 rounds, each in turn) after a 1 s warm-up
 *   npm run bench:stores -- --quick       smoke test: 1 000 and 10 000 sessions, 1 s each, prune of 10 000
 *
 * Environment: BENCH_STORES (memory,sqlite,file,postgres,mysql,redis), BENCH_SIZES (sessions, e.g.
 * 1000,100000, every one measured for every store), BENCH_SECONDS and BENCH_WARMUP (per operation),
 * BENCH_CONCURRENCY (operations in flight for the asynchronous stores, default 16), BENCH_PRUNE (expired
 * records to prune, 0 to skip), BENCH_FILL_MINUTES (default 4: a store leaves out the sizes it would
 * take longer to fill, judged by its fill rate on the size before), BENCH_POSTGRES_URL, BENCH_MYSQL_URL,
 * BENCH_REDIS_URL (a server that does not answer is skipped with one line).
 *
 * Each (store, size) gets a new table, key prefix or folder with a random suffix, filled straight
 * through the engine in the format the store writes (SQLite: INSERTs of 500 rows in one transaction per
 * 2 000; PostgreSQL, MariaDB: INSERTs of 1 000 rows, 4 at a time; Redis: pipelined HSET and PEXPIRE;
 * FileStore: 64 file writes at a time; MemoryStore: `createSync`), settled (SQLite: WAL checkpoint;
 * PostgreSQL: VACUUM ANALYZE; MariaDB: ANALYZE TABLE), checked by reading records back through the store,
 * measured, then removed (tables dropped with their latchkey_schema row, keys deleted, folders removed),
 * also on failure and on Ctrl-C. Records are anonymous sessions like the core's: 43-character keys (the
 * shape of a SHA-256 in base64url), 300-character sealed payloads, deadlines spread over a day.
 *
 * In flight: MemoryStore and SqliteStore answer synchronously, so they are called one operation after
 * another through their synchronous methods (the manager's fast path). The others are asynchronous
 * (libuv's thread pool, or a server) and run 16 operations at once, each on keys of its own, through the
 * store's default pool (10 connections for PostgreSQL and MariaDB, one pipelined connection for Redis).
 * Keys are drawn at random from all the stored sessions. "engine get" is the same lookup by key straight
 * through the driver (a file read for FileStore, a plain Map of the same records for MemoryStore), without
 * latchkey, on as many connections: how the engine's own index scales with size, which the store's get
 * cannot beat.
 *
 * Prune: a new store whose records all expire within two hours by its ManualClock, which then moves
 * three hours on; `prune()` is timed while a 1 ms interval timer records the longest gap between its
 * ticks (the longest the event loop was held, at least about 1 ms). Aim: at most 50 ms.
 *
 * Results: progress on stderr, markdown tables on stdout, and bench/results/stores.json.
 *
 * The script runs it as `node --import tsx` (one process), not with the `tsx` command, whose parent
 * process passes Ctrl-C on and kills the bench outright unless it answers within some 60 ms, which a
 * busy process on a loaded machine does not: the tables, keys and folders would then stay behind.
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep, setImmediate as yieldToEventLoop } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import type { Clock, PrunableStore, SessionRecord, SessionStore, SyncSessionStore } from '../src/index.js'

// Loaded from the build (`npm run bench:stores` builds first), as users run it.
const DIST = new URL('../dist/', import.meta.url)
const { ManualClock, MemoryStore }: typeof import('../src/index.js') = await import(
  new URL('index.js', DIST).href
)
const distModule = <T>(path: string): Promise<T> => import(new URL(path, DIST).href)

const HERE = dirname(fileURLToPath(import.meta.url))
const RESULTS_FILE = join(HERE, 'results', 'stores.json')

const STORES = ['memory', 'sqlite', 'file', 'postgres', 'mysql', 'redis'] as const
type StoreKind = (typeof STORES)[number]
const LABELS: Record<StoreKind, string> = {
  memory: 'MemoryStore',
  sqlite: 'SqliteStore',
  file: 'FileStore',
  postgres: 'PostgresStore',
  mysql: 'MySqlStore (MariaDB)',
  redis: 'RedisStore',
}
const URLS = {
  postgres: process.env.BENCH_POSTGRES_URL ?? 'postgres://root@127.0.0.1:5432/test',
  mysql: process.env.BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test',
  redis: process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379',
}

// ---------------------------------------------------------------------------------------------------
// Settings

const quick = process.argv.includes('--quick')

function numberFrom(name: string, fallback: number, min: number): number {
  const text = process.env[name]
  if (text === undefined || text === '') return fallback
  const value = Number(text)
  if (!Number.isFinite(value) || value < min)
    throw new Error(`${name} must be a number >= ${min}, got ${text}`)
  return value
}

function listFrom(name: string): string[] | undefined {
  const text = process.env[name]
  return text ? text.split(',').map((item) => item.trim()) : undefined
}

const chosenStores = listFrom('BENCH_STORES')
for (const name of chosenStores ?? []) {
  if (!STORES.includes(name as StoreKind))
    throw new Error(`BENCH_STORES: unknown ${JSON.stringify(name)}; choose from ${STORES.join(', ')}`)
}
const explicitSizes = listFrom('BENCH_SIZES')?.map((text) => {
  const size = Number(text.replaceAll('_', ''))
  if (!Number.isSafeInteger(size) || size < 100) throw new Error(`BENCH_SIZES: ${text} is not a size >= 100`)
  return size
})
const settings = {
  quick,
  stores: STORES.filter((kind) => !chosenStores || chosenStores.includes(kind)),
  sizes: (explicitSizes ?? (quick ? [1_000, 10_000] : [1_000, 100_000, 1_000_000])).sort((a, b) => a - b),
  seconds: numberFrom('BENCH_SECONDS', quick ? 1 : 5, 0.1),
  warmupSeconds: numberFrom('BENCH_WARMUP', quick ? 0.3 : 1, 0),
  concurrency: numberFrom('BENCH_CONCURRENCY', 16, 1),
  pruneRecords: numberFrom('BENCH_PRUNE', quick ? 10_000 : 100_000, 0),
  fillMinutes: numberFrom('BENCH_FILL_MINUTES', 4, 0),
}

/**
 * Why `sessions` is left out for a store that filled at `perSecond` on a smaller size, or `undefined`:
 * a fill that would take over BENCH_FILL_MINUTES, unless BENCH_SIZES asked for the size.
 */
function tooLong(sessions: number, perSecond: number | undefined): string | undefined {
  if (explicitSizes || perSecond === undefined) return undefined
  const minutes = sessions / perSecond / 60
  if (minutes <= settings.fillMinutes) return undefined
  return `${count(sessions)} sessions left out: filling them would take about ${minutes.toFixed(0)} min at ${count(perSecond)}/s (over BENCH_FILL_MINUTES=${settings.fillMinutes}; BENCH_SIZES forces a size)`
}

// ---------------------------------------------------------------------------------------------------
// Records like the core's

/** Idle timeout of the measured sessions: a week, so nothing expires during a run. */
const IDLE_MS = 7 * 86_400_000
const ABSOLUTE_MS = 30 * 86_400_000
const DAY_MS = 86_400_000
/** Sealed payloads as the core writes them: a 12-character key ID, '.', base64url of 215 bytes (300 in all). */
const PAYLOADS = Array.from({ length: 1024 }, () => `benchkey0000.${randomBytes(215).toString('base64url')}`)
const payloadOf = (n: number) => PAYLOADS[n % PAYLOADS.length] as string

/** `n` fresh store keys: 32 random bytes in base64url, 43 characters, like the SHA-256 the core stores. */
function newKeys(n: number): string[] {
  const bytes = randomBytes(32 * n)
  return Array.from({ length: n }, (_, i) => bytes.toString('base64url', 32 * i, 32 * i + 32))
}

/** A supply of new keys for creates, drawn a few thousand at a time. */
function keySupply(): () => string {
  let keys: string[] = []
  return () => {
    if (keys.length === 0) keys = newKeys(4096)
    return keys.pop() as string
  }
}

/**
 * Stored session `i` of a fill made at `now` with idle timeout `idleMs`: last seen at some point in the
 * past half of the timeout (at most a day), so deadlines spread as they do in a live store.
 */
function storedRecord(key: string, i: number, now: number, idleMs: number, version = 1): SessionRecord {
  const lastSeenAt = now - ((i * 7919) % Math.min(idleMs / 2, DAY_MS))
  const createdAt = lastSeenAt - ((i * 104_729) % 3_600_000)
  return {
    key,
    version,
    userId: null,
    createdAt,
    lastSeenAt,
    idleExpiresAt: lastSeenAt + idleMs,
    absoluteExpiresAt: createdAt + ABSOLUTE_MS,
    payload: payloadOf(i + version),
  }
}

const SQL_COLUMNS = [
  'key',
  'version',
  'user_id',
  'created_at',
  'last_seen_at',
  'idle_expires_at',
  'absolute_expires_at',
  'expires_at',
  'payload',
  'tombstone',
]

/** A record as the SQL stores write a row (see src/stores/sql/queries.ts), payload as given. */
function sqlRow(record: SessionRecord, payload: unknown = record.payload): unknown[] {
  const { key, version, userId, createdAt, lastSeenAt, idleExpiresAt, absoluteExpiresAt } = record
  const expiresAt = Math.min(idleExpiresAt, absoluteExpiresAt)
  return [
    key,
    version,
    userId,
    createdAt,
    lastSeenAt,
    idleExpiresAt,
    absoluteExpiresAt,
    expiresAt,
    payload,
    0,
  ]
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

// ---------------------------------------------------------------------------------------------------
// One store under test, with a way into its engine and a way out

interface Bench {
  readonly kind: StoreKind
  readonly store: SessionStore & PrunableStore
  /** The synchronous methods, for MemoryStore and SqliteStore. */
  readonly sync: SyncSessionStore | undefined
  /** Writes records straight into the engine, exactly as the store would have written them. */
  insert(records: readonly SessionRecord[]): Promise<void>
  /** After the fill: what the engine would have done by itself by now on a live store (statistics). */
  settle?(): Promise<void>
  /** The engine's own lookup by key, without latchkey (for MemoryStore, a plain Map of the same records). */
  engineGet(key: string): unknown
  /** Closes the store and removes everything the bench made. Idempotent. */
  dispose(): Promise<void>
}

/** What to remove should the run stop early (Ctrl-C): every bench not yet disposed. */
const pending = new Set<() => Promise<void>>()

/** `remove` once, registered for Ctrl-C until it has run; `close` first, its failure reported only. */
function disposer(kind: StoreKind, close: () => Promise<unknown>, remove: () => Promise<unknown>) {
  let done: Promise<void> | undefined
  const dispose = (): Promise<void> => {
    done ??= (async () => {
      pending.delete(dispose)
      await close().catch((error) => console.error(`${kind}: closing failed: ${messageOf(error)}`))
      await remove()
    })()
    return done
  }
  pending.add(dispose)
  return dispose
}

const suffix = () => randomBytes(6).toString('hex')

/** Removes a folder the bench made, trying again while writes still in flight land in it. */
const removeFolder = (path: string) =>
  rm(path, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 })

async function open(kind: StoreKind, clock?: Clock): Promise<Bench> {
  switch (kind) {
    case 'memory':
      return openMemory(clock)
    case 'sqlite':
      return openSqlite(clock)
    case 'file':
      return openFile(clock)
    case 'postgres':
      return openPostgres(clock)
    case 'mysql':
      return openMysql(clock)
    case 'redis':
      return openRedis(clock)
  }
}

function openMemory(clock?: Clock): Bench {
  const store = new MemoryStore({ clock, maxSessions: 10_000_000, sweepIntervalMs: 0 })
  // Its engine is a Map: a plain one holding the same records, each lookup reading the record's deadline
  // as any store must, shows what lookups cost at each size (CPU caches hold a thousand, not a million).
  const map = new Map<string, SessionRecord>()
  return {
    kind: 'memory',
    store,
    sync: store,
    insert: async (records) => {
      for (const batch of chunks(records, 1000)) {
        stopHere()
        for (const record of batch) {
          if (!store.createSync(record)) throw new Error('MemoryStore refused a fill')
          map.set(record.key, record)
        }
        await yieldToEventLoop()
      }
    },
    engineGet: (key) => map.get(key)?.idleExpiresAt,
    dispose: disposer(
      'memory',
      () => store.close(),
      async () => map.clear(),
    ),
  }
}

async function openSqlite(clock?: Clock): Promise<Bench> {
  const { SqliteStore }: typeof import('../src/stores/sqlite/index.js') =
    await distModule('stores/sqlite/index.js')
  const Database = (await import('better-sqlite3')).default
  const dir = mkdtempSync(join(tmpdir(), `latchkey-bench-sqlite-`))
  const path = join(dir, 'sessions.db')
  const removeDir = () => removeFolder(dir)
  const store = new SqliteStore({ path, clock, pruneIntervalMs: 0 })
  let db: import('better-sqlite3').Database | undefined
  const dispose = disposer(
    'sqlite',
    async () => {
      db?.close()
      await store.close()
    },
    removeDir,
  )
  try {
    await store.migrate()
    db = new Database(path)
    // For the fill only (this connection): no fsync per transaction, and a cache that holds the indexes.
    db.pragma('synchronous = OFF')
    db.pragma('cache_size = -262144')
  } catch (error) {
    await dispose()
    throw error
  }
  const admin = db
  const ROWS = 500
  const placeholders = (rows: number) => Array(rows).fill(`(${SQL_COLUMNS.map(() => '?').join(', ')})`)
  const insertSql = (rows: number) =>
    `INSERT INTO latchkey_sessions (${SQL_COLUMNS.join(', ')}) VALUES ${placeholders(rows).join(', ')}`
  const many = admin.prepare(insertSql(ROWS))
  const fill = admin.transaction((records: readonly SessionRecord[]) => {
    for (const batch of chunks(records, ROWS)) {
      const params = batch.flatMap((record) => sqlRow(record))
      if (batch.length === ROWS) many.run(params)
      else admin.prepare(insertSql(batch.length)).run(params)
    }
  })
  const select = admin.prepare(`SELECT ${SQL_COLUMNS.join(', ')} FROM latchkey_sessions WHERE key = ?`)
  return {
    kind: 'sqlite',
    store,
    sync: store,
    // A transaction per 2 000 rows: the event loop gets a turn every few milliseconds (Ctrl-C).
    insert: async (records) => {
      for (const batch of chunks(records, 2000)) {
        stopHere()
        fill(batch)
        await yieldToEventLoop()
      }
    },
    // The fill's WAL written back into the database file, as a checkpoint would have done by now.
    settle: async () => {
      admin.pragma('wal_checkpoint(TRUNCATE)')
    },
    engineGet: (key) => select.get(key),
    dispose,
  }
}

async function openFile(clock?: Clock): Promise<Bench> {
  const { FileStore }: typeof import('../src/stores/file/index.js') = await distModule('stores/file/index.js')
  const directory = mkdtempSync(join(tmpdir(), 'latchkey-bench-file-'))
  const store = new FileStore({ directory, clock, pruneIntervalMs: 0 })
  const dispose = disposer(
    'file',
    () => store.close(),
    () => removeFolder(directory),
  )
  const base64url = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  let shards: Promise<unknown> | undefined
  // The store's layout: sessions/<1st char>/<2nd char>/<key>, one JSON object per file (file-store.ts).
  const pathOf = (key: string) => join(directory, 'sessions', key[0] as string, key[1] as string, key)
  const content = (record: SessionRecord) => {
    const { key, version, userId, createdAt, lastSeenAt, idleExpiresAt, absoluteExpiresAt, payload } = record
    const fields = { key, version, userId, createdAt, lastSeenAt, idleExpiresAt, absoluteExpiresAt }
    return `${JSON.stringify({ latchkey: 1, ...fields, tombstone: false, payload })}\n`
  }
  return {
    kind: 'file',
    store,
    sync: undefined,
    insert: async (records) => {
      shards ??= Promise.all(
        [...base64url].map((first) =>
          Promise.all(
            [...base64url].map((second) =>
              mkdir(join(directory, 'sessions', first, second), { recursive: true, mode: 0o700 }),
            ),
          ),
        ),
      )
      await shards
      // 64 writes in flight; no fsync (the store syncs each write it makes, a bulk load need not).
      for (const batch of chunks(records, 64)) {
        stopHere()
        await Promise.all(
          batch.map((record) => writeFile(pathOf(record.key), content(record), { mode: 0o600 })),
        )
      }
    },
    engineGet: (key) => readFile(pathOf(key), 'utf8'),
    dispose,
  }
}

async function openPostgres(clock?: Clock): Promise<Bench> {
  const { PostgresStore }: typeof import('../src/stores/postgres/index.js') =
    await distModule('stores/postgres/index.js')
  const pg = (await import('pg')).default
  const tableName = `bench_${suffix()}`
  const store = new PostgresStore({ connectionString: URLS.postgres, tableName, clock, pruneIntervalMs: 0 })
  // As many connections as the store's pool (pg's default, 10), for a fair "engine get".
  const admin = new pg.Pool({ connectionString: URLS.postgres, max: 10 })
  admin.on('error', () => {})
  const dispose = disposer(
    'postgres',
    () => store.close(),
    async () => {
      await admin.query(`DROP TABLE IF EXISTS "${tableName}"`)
      await admin.query('DELETE FROM latchkey_schema WHERE table_name = $1', [tableName]).catch(() => {})
      await admin.end()
    },
  )
  await store.migrate().catch(async (error) => {
    await dispose()
    throw error
  })
  const ROWS = 1000
  const values = (rows: number) =>
    Array.from(
      { length: rows },
      (_, r) => `(${SQL_COLUMNS.map((_, c) => `$${r * SQL_COLUMNS.length + c + 1}`).join(', ')})`,
    ).join(', ')
  const columns = SQL_COLUMNS.map((column) => `"${column}"`).join(', ')
  const select = `SELECT ${columns} FROM "${tableName}" WHERE "key" = $1`
  return {
    kind: 'postgres',
    store,
    sync: undefined,
    insert: async (records) => {
      for (const group of chunks(chunks(records, ROWS), 4)) {
        stopHere()
        await Promise.all(
          group.map((batch) =>
            admin.query(
              `INSERT INTO "${tableName}" (${columns}) VALUES ${values(batch.length)}`,
              // The payload column is BYTEA holding UTF-8, as the store binds it.
              batch.flatMap((record) => sqlRow(record, Buffer.from(record.payload, 'utf8'))),
            ),
          ),
        )
      }
    },
    // Statistics and the visibility map, as autovacuum would have made them by now on a live table.
    settle: async () => {
      await admin.query(`VACUUM ANALYZE "${tableName}"`)
    },
    engineGet: (key) => admin.query(select, [key]),
    dispose,
  }
}

async function openMysql(clock?: Clock): Promise<Bench> {
  const { MySqlStore }: typeof import('../src/stores/mysql/index.js') =
    await distModule('stores/mysql/index.js')
  const mysql = (await import('mysql2/promise')).default
  const tableName = `bench_${suffix()}`
  const store = new MySqlStore({ uri: URLS.mysql, tableName, clock, pruneIntervalMs: 0 })
  const admin = mysql.createPool({ uri: URLS.mysql, connectionLimit: 10 })
  const dispose = disposer(
    'mysql',
    () => store.close(),
    async () => {
      await admin.query(`DROP TABLE IF EXISTS \`${tableName}\``)
      await admin.query('DELETE FROM latchkey_schema WHERE table_name = ?', [tableName]).catch(() => {})
      await admin.end()
    },
  )
  await store.migrate().catch(async (error) => {
    await dispose()
    throw error
  })
  const columns = SQL_COLUMNS.map((column) => `\`${column}\``).join(', ')
  const select = `SELECT ${columns} FROM \`${tableName}\` WHERE \`key\` = ?`
  return {
    kind: 'mysql',
    store,
    sync: undefined,
    insert: async (records) => {
      // Four multi-row INSERTs of 1 000 at a time (mysql2 expands `VALUES ?` from nested arrays).
      for (const group of chunks(chunks(records, 1000), 4)) {
        stopHere()
        await Promise.all(
          group.map((batch) =>
            admin.query(`INSERT INTO \`${tableName}\` (${columns}) VALUES ?`, [
              batch.map((record) => sqlRow(record)),
            ]),
          ),
        )
      }
    },
    // Index statistics, as InnoDB would have recalculated them by now on a live table.
    settle: async () => {
      await admin.query(`ANALYZE TABLE \`${tableName}\``)
    },
    engineGet: (key) => admin.execute(select, [key]),
    dispose,
  }
}

async function openRedis(clock?: Clock): Promise<Bench> {
  const { RedisStore }: typeof import('../src/stores/redis/index.js') =
    await distModule('stores/redis/index.js')
  const { createClient } = await import('redis')
  const prefix = `latchkey-bench-${suffix()}:`
  const store = new RedisStore({ url: URLS.redis, prefix, clock })
  const admin = createClient({ url: URLS.redis })
  admin.on('error', () => {})
  const dispose = disposer(
    'redis',
    () => store.close(),
    async () => {
      if (!admin.isOpen) return
      let cursor = '0'
      do {
        const [next, keys] = (await admin.sendCommand([
          'SCAN',
          cursor,
          'MATCH',
          `${prefix}*`,
          'COUNT',
          '1000',
        ])) as [string, string[]]
        cursor = String(next)
        if (keys.length > 0) await admin.sendCommand(['UNLINK', ...keys])
      } while (cursor !== '0')
      await admin.close()
    },
  )
  await admin.connect().catch(async (error) => {
    await dispose()
    throw error
  })
  const sessionKey = (key: string) => `${prefix}s:{${key}}`
  const now = () => (clock ?? Date).now()
  return {
    kind: 'redis',
    store,
    sync: undefined,
    insert: async (records) => {
      // Sent without waiting, so node-redis pipelines them. The fields and TTL the CREATE script writes
      // (scripts.ts): Redis frees a key 60 s (the clock skew) after its deadline.
      const replies: Promise<unknown>[] = []
      for (const record of records) {
        const key = sessionKey(record.key)
        const { version, createdAt, lastSeenAt, idleExpiresAt, absoluteExpiresAt, payload } = record
        const deadline = Math.min(idleExpiresAt, absoluteExpiresAt)
        replies.push(
          admin.sendCommand([
            'HSET',
            key,
            'v',
            String(version),
            'c',
            String(createdAt),
            'l',
            String(lastSeenAt),
            'i',
            String(idleExpiresAt),
            'a',
            String(absoluteExpiresAt),
            'p',
            payload,
          ]),
          admin.sendCommand(['PEXPIRE', key, String(Math.max(1, deadline - now()) + 60_000)]),
        )
      }
      await Promise.all(replies)
    },
    engineGet: (key) => admin.sendCommand(['HMGET', sessionKey(key), 'v', 'u', 'c', 'l', 'i', 'a', 'p', 't']),
    dispose,
  }
}

/** Why a server store cannot be measured (its server does not answer), or `undefined`. */
async function unreachable(kind: StoreKind): Promise<string | undefined> {
  try {
    if (kind === 'postgres') {
      const pg = (await import('pg')).default
      const client = new pg.Client({ connectionString: URLS.postgres, connectionTimeoutMillis: 3000 })
      await client.connect()
      await client.end()
    } else if (kind === 'mysql') {
      const mysql = (await import('mysql2/promise')).default
      const connection = await mysql.createConnection({ uri: URLS.mysql, connectTimeout: 3000 })
      await connection.end()
    } else if (kind === 'redis') {
      const { createClient } = await import('redis')
      const client = createClient({
        url: URLS.redis,
        socket: { connectTimeout: 3000, reconnectStrategy: false },
      })
      client.on('error', () => {})
      await client.connect()
      await client.close()
    }
    return undefined
  } catch (error) {
    const url = URLS[kind as keyof typeof URLS]
    return `${url} does not answer (${messageOf(error)})`
  }
}

// ---------------------------------------------------------------------------------------------------
// Filling

/** The stored sessions of a measurement: their keys and the version each one is at. */
interface Filled {
  readonly keys: readonly string[]
  readonly versions: Uint32Array
  readonly filledAt: number
}

/** Stores `n` sessions with idle timeout `idleMs` (deadlines by `now`), 10 000 at a time; checks a few. */
async function fill(bench: Bench, n: number, now: number, idleMs: number): Promise<Filled> {
  const keys: string[] = []
  const started = performance.now()
  let reported = started
  // 10 000 at a time, so that the event loop is never held for long (Ctrl-C is handled at once).
  for (let from = 0; from < n; from += 10_000) {
    const batch = newKeys(Math.min(10_000, n - from))
    keys.push(...batch)
    await bench.insert(batch.map((key, j) => storedRecord(key, from + j, now, idleMs)))
    stopHere()
    if (performance.now() - reported > 10_000) {
      reported = performance.now()
      progress(`${bench.kind}: ${count(keys.length)} of ${count(n)} stored`)
    }
  }
  await bench.settle?.()
  const seconds = (performance.now() - started) / 1000
  progress(`${bench.kind}: ${count(n)} sessions stored in ${seconds.toFixed(1)} s (${count(n / seconds)}/s)`)
  for (const i of [0, n - 1, Math.floor(n / 2)]) {
    const got = await bench.store.get(keys[i] as string)
    const want = storedRecord(keys[i] as string, i, now, idleMs)
    if (got?.payload !== want.payload || got.version !== 1 || got.idleExpiresAt !== want.idleExpiresAt) {
      throw new Error(`${bench.kind}: stored session ${i} does not read back through the store as written`)
    }
  }
  return { keys, versions: new Uint32Array(n).fill(1), filledAt: now }
}

// ---------------------------------------------------------------------------------------------------
// Measuring

const OPERATIONS = ['get', 'engine get', 'update', 'touch', 'create'] as const
type Operation = (typeof OPERATIONS)[number]
/** Each operation's time is split over this many rounds (one with --quick). */
const ROUNDS = quick ? 1 : 3

/** One operation: called with its worker's number; synchronous for a synchronous store. */
type Op = (worker: number) => unknown

/** Runs `op` for about `seconds`: `inFlight` workers, or one synchronous caller (0); counts what it did. */
async function run(op: Op, inFlight: number, seconds: number): Promise<{ done: number; seconds: number }> {
  let done = 0
  let busy = 0
  const end = performance.now() + seconds * 1000
  if (inFlight === 0) {
    // Slices of about 10 ms, the event loop getting a turn between them (Ctrl-C, timers).
    while (performance.now() < end && !stopping) {
      const start = performance.now()
      do {
        for (let k = 0; k < 32; k++) op(0)
        done += 32
      } while (performance.now() - start < 10)
      busy += performance.now() - start
      await yieldToEventLoop()
    }
    return { done, seconds: busy / 1000 }
  }
  const start = performance.now()
  await Promise.all(
    Array.from({ length: inFlight }, async (_, worker) => {
      while (performance.now() < end && !stopping) {
        await op(worker)
        done++
      }
    }),
  )
  return { done, seconds: (performance.now() - start) / 1000 }
}

/** The operations on `filled`, each worker on keys of its own (index ≡ worker mod inFlight). */
function operations(bench: Bench, filled: Filled, inFlight: number, problems: Map<string, number>) {
  const { store, sync } = bench
  const { keys, versions, filledAt } = filled
  const workers = Math.max(1, inFlight)
  const pick = (worker: number) => {
    const span = Math.floor((keys.length - 1 - worker) / workers) + 1
    return Math.floor(Math.random() * span) * workers + worker
  }
  const problem = (what: string) => problems.set(what, (problems.get(what) ?? 0) + 1)
  const nextKey = keySupply()
  const updated = (i: number) => {
    const version = (versions[i] as number) + 1
    const now = Date.now()
    const stored = storedRecord(keys[i] as string, i, filledAt, IDLE_MS, version)
    return { ...stored, lastSeenAt: now, idleExpiresAt: now + IDLE_MS }
  }
  const created = (): SessionRecord => {
    const now = Date.now()
    const record = { lastSeenAt: now, idleExpiresAt: now + IDLE_MS, absoluteExpiresAt: now + ABSOLUTE_MS }
    return { key: nextKey(), version: 1, userId: null, createdAt: now, ...record, payload: payloadOf(now) }
  }
  const checkGet = (record: SessionRecord | null) => {
    if (record === null) problem('get found no session')
  }
  const checkUpdate = (i: number, ok: boolean) => {
    if (ok) versions[i] = (versions[i] as number) + 1
    else problem('update resolved false')
  }
  const checkCreate = (ok: boolean) => {
    if (!ok) problem('create resolved false')
  }
  const ops: Record<Operation, Op> = sync
    ? {
        get: (w) => checkGet(sync.getSync(keys[pick(w)] as string)),
        'engine get': (w) => bench.engineGet(keys[pick(w)] as string),
        update: (w) => {
          const i = pick(w)
          checkUpdate(i, sync.updateSync(updated(i), versions[i] as number))
        },
        touch: (w) => sync.touchSync(keys[pick(w)] as string, Date.now(), Date.now() + IDLE_MS),
        create: () => checkCreate(sync.createSync(created())),
      }
    : {
        get: async (w) => checkGet(await store.get(keys[pick(w)] as string)),
        'engine get': (w) => bench.engineGet(keys[pick(w)] as string),
        update: async (w) => {
          const i = pick(w)
          checkUpdate(i, await store.update(updated(i), versions[i] as number))
        },
        touch: (w) => store.touch(keys[pick(w)] as string, Date.now(), Date.now() + IDLE_MS),
        create: async () => checkCreate(await store.create(created())),
      }
  return ops
}

interface Cell {
  readonly store: StoreKind
  readonly sessions: number
  /** Operations in flight; 0 for one synchronous call after another. */
  readonly inFlight: number
  readonly fillSeconds: number
  /** Operations per second. */
  readonly perSecond: Partial<Record<Operation, number>>
  readonly problems: string[]
}

async function measureSize(kind: StoreKind, sessions: number): Promise<Cell> {
  const bench = await open(kind)
  try {
    const started = performance.now()
    const filled = await fill(bench, sessions, Date.now(), IDLE_MS)
    const fillSeconds = (performance.now() - started) / 1000
    const inFlight = bench.sync ? 0 : settings.concurrency
    const problems = new Map<string, number>()
    const ops = operations(bench, filled, inFlight, problems)
    for (const operation of OPERATIONS) await run(ops[operation], inFlight, settings.warmupSeconds)
    // In rounds, each operation in turn: what the engine does in the background after a fill
    // (checkpoints, vacuum, the OS writing back) weighs on every operation alike.
    const totals = new Map(OPERATIONS.map((operation) => [operation, { done: 0, seconds: 0 }]))
    for (let round = 0; round < ROUNDS; round++) {
      for (const operation of OPERATIONS) {
        const { done, seconds } = await run(ops[operation], inFlight, settings.seconds / ROUNDS)
        const total = totals.get(operation)!
        total.done += done
        total.seconds += seconds
        stopHere()
      }
    }
    const perSecond: Partial<Record<Operation, number>> = {}
    for (const [operation, total] of totals) perSecond[operation] = total.done / total.seconds
    const cell = {
      store: kind,
      sessions,
      inFlight,
      fillSeconds,
      perSecond,
      problems: [...problems].map(([what, times]) => `${what} ${count(times)} times`),
    }
    progress(
      `${kind}: ${count(sessions)} sessions: ${OPERATIONS.filter((op) => perSecond[op] !== undefined)
        .map((op) => `${op} ${count(perSecond[op] as number)}/s`)
        .join(', ')}${cell.problems.length > 0 ? ` (${cell.problems.join('; ')})` : ''}`,
    )
    return cell
  } finally {
    await bench.dispose()
  }
}

interface PruneResult {
  readonly store: StoreKind
  readonly expired: number
  readonly seconds: number
  readonly removed: number
  /** The longest gap between ticks of a 1 ms interval timer during the prune. */
  readonly longestStallMs: number
  /** The process's CPU time (all threads) within that gap. */
  readonly cpuInStallMs: number
}

/** The longest gap between ticks of a 1 ms interval timer, and the CPU time the process used in it. */
interface Stall {
  readonly ms: number
  readonly cpuMs: number
}

/**
 * Starts a 1 ms interval timer; the returned function stops it and tells the longest gap between its
 * ticks (the longest the event loop was held) with the process's CPU time in that gap (all threads).
 * Far less CPU than gap: the process was not computing but waiting, for a core on a busy machine or, in
 * a synchronous call (SQLite), for the disk.
 */
function watchEventLoop(): () => Stall {
  let last = performance.now()
  let lastCpu = process.cpuUsage()
  let longest: Stall = { ms: 0, cpuMs: 0 }
  const tick = () => {
    const now = performance.now()
    const cpu = process.cpuUsage(lastCpu)
    if (now - last > longest.ms) longest = { ms: now - last, cpuMs: (cpu.user + cpu.system) / 1000 }
    last = now
    lastCpu = process.cpuUsage()
  }
  const timer = setInterval(tick, 1)
  return () => {
    tick()
    clearInterval(timer)
    return longest
  }
}

async function measurePrune(kind: StoreKind, expired: number): Promise<PruneResult> {
  const clock = new ManualClock(Date.now())
  const bench = await open(kind, clock)
  try {
    // Deadlines within the next two hours by the store's clock, then three hours pass.
    await fill(bench, expired, clock.now(), 7_200_000)
    clock.advance(3 * 3_600_000)
    await sleep(200)
    const stopWatching = watchEventLoop()
    const started = performance.now()
    const removed = await bench.store.prune()
    const seconds = (performance.now() - started) / 1000
    const stall = stopWatching()
    progress(
      `${kind}: prune of ${count(expired)} expired: ${seconds.toFixed(2)} s, ${count(removed)} removed, longest stall ${stall.ms.toFixed(1)} ms (CPU ${stall.cpuMs.toFixed(1)} ms)`,
    )
    return { store: kind, expired, seconds, removed, longestStallMs: stall.ms, cpuInStallMs: stall.cpuMs }
  } finally {
    await bench.dispose()
  }
}

// ---------------------------------------------------------------------------------------------------
// Output

function count(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}

function sizeLabel(n: number): string {
  if (n >= 1_000_000 && n % 1_000_000 === 0) return `${n / 1_000_000}M`
  if (n >= 1000 && n % 1000 === 0) return `${n / 1000}k`
  return count(n)
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

function progress(line: string): void {
  console.error(line)
}

function table(header: string[], rows: string[][], right: boolean[]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`
  return [line(header), line(right.map((r) => (r ? '---:' : '---'))), ...rows.map(line)].join('\n')
}

function report(cells: Cell[], prunes: PruneResult[], skipped: string[]): void {
  const first = sizeLabel(Math.min(...settings.sizes))
  const perSecond = (n: number | undefined) => (n === undefined ? '–' : count(n))
  const ratio = (cell: Cell, op: Operation) => {
    const base = cells.find((c) => c.store === cell.store && c.sessions === Math.min(...settings.sizes))
    const value = cell.perSecond[op]
    const baseValue = base?.perSecond[op]
    return baseValue && value !== undefined ? `${(value / baseValue).toFixed(2)}×` : '–'
  }
  console.log(
    `\nNode ${process.version}, ${cpus().length} × ${cpus()[0]?.model.trim() ?? 'unknown CPU'}. Operations per ` +
      `second, ${settings.seconds} s each after a ${settings.warmupSeconds} s warm-up. In flight: "sync" is one ` +
      `synchronous call after another, a number that many operations at once. "get ÷ ${first}": get/s at this ` +
      `size divided by get/s at ${first}; "engine": the same lookup straight through the driver, without latchkey.\n`,
  )
  const rows = cells.map((cell) => [
    LABELS[cell.store],
    cell.inFlight === 0 ? 'sync' : String(cell.inFlight),
    count(cell.sessions),
    perSecond(cell.perSecond.get),
    ratio(cell, 'get'),
    perSecond(cell.perSecond['engine get']),
    ratio(cell, 'engine get'),
    perSecond(cell.perSecond.update),
    perSecond(cell.perSecond.touch),
    perSecond(cell.perSecond.create),
    cell.problems.join('; ') || 'ok',
  ])
  const header = [
    'store',
    'in flight',
    'sessions',
    'get/s',
    `get ÷ ${first}`,
    'engine get/s',
    `engine ÷ ${first}`,
  ]
  header.push('update/s', 'touch/s', 'create/s', 'checks')
  console.log(table(header, rows, [false, ...Array(9).fill(true), false]))
  if (prunes.length > 0) {
    console.log(
      "\nprune() of records that have all expired by the store's clock. Longest stall: the longest gap " +
        'between ticks of a 1 ms timer while it ran (aim: at most 50 ms). CPU in it: the CPU time the ' +
        'process used in that gap; far less than the gap means it was waiting, for a core on a busy ' +
        'machine or, in a synchronous call, for the disk.\n',
    )
    const pruneRows = prunes.map((p) => [
      LABELS[p.store],
      count(p.expired),
      `${p.seconds.toFixed(2)} s`,
      count(p.removed),
      count(p.removed / p.seconds),
      `${p.longestStallMs.toFixed(1)} ms`,
      `${p.cpuInStallMs.toFixed(1)} ms`,
      p.longestStallMs <= 50 ? 'ok' : 'over 50 ms',
    ])
    const pruneHeader = [
      'store',
      'expired',
      'prune',
      'removed',
      'removed/s',
      'longest stall',
      'CPU in it',
      'aim',
    ]
    console.log(table(pruneHeader, pruneRows, [false, ...Array(6).fill(true), false]))
  }
  if (skipped.length > 0) console.log(`\n${skipped.join('\n')}`)
  console.log('\nRaw results: bench/results/stores.json')
}

// ---------------------------------------------------------------------------------------------------
// Run

let stopping = false
let stoppedAt = 0

/** Throws once Ctrl-C was pressed: a fill or a measurement stops where it is. */
function stopHere(): void {
  if (stopping) throw new Error('stopped')
}

/** Disposes of every bench not yet disposed, saying what could not be removed. */
async function disposeAll(): Promise<void> {
  const results = await Promise.allSettled([...pending].map((dispose) => dispose()))
  for (const result of results) {
    if (result.status === 'rejected')
      console.error(`could not remove what the bench made: ${messageOf(result.reason)}`)
  }
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    // tsx passes on the Ctrl-C the process already had from the terminal: a second one within a
    // second is that copy.
    if (stopping) {
      if (performance.now() - stoppedAt < 1000) return
      console.error(`${signal} again: leaving at once; bench tables, keys or folders may be left behind`)
      process.exit(130)
    }
    stopping = true
    stoppedAt = performance.now()
    console.error(`\n${signal}: removing what the bench made, then stopping (again to leave at once)`)
    void disposeAll().then(() => process.exit(130))
  })
}

const cells: Cell[] = []
const prunes: PruneResult[] = []
const skipped: string[] = []
const started = performance.now()
try {
  for (const kind of settings.stores) {
    const why = await unreachable(kind)
    if (why) {
      skipped.push(`${LABELS[kind]}: skipped, ${why}`)
      progress(`${kind}: skipped, ${why}`)
      continue
    }
    let fillRate: number | undefined
    for (const sessions of settings.sizes) {
      const why = tooLong(sessions, fillRate)
      if (why) {
        skipped.push(`${LABELS[kind]}: ${why}`)
        progress(`${kind}: ${why}`)
        break
      }
      const cell = await measureSize(kind, sessions)
      cells.push(cell)
      fillRate = cell.sessions / cell.fillSeconds
    }
    if (settings.pruneRecords > 0) prunes.push(await measurePrune(kind, settings.pruneRecords))
  }
} catch (error) {
  if (!stopping) {
    console.error(error)
    process.exitCode = 1
  }
} finally {
  await disposeAll()
}
if (stopping) await new Promise(() => {}) // the signal handler exits once everything is removed

const minutes = (performance.now() - started) / 60_000
report(cells, prunes, skipped)
console.log(`Run time: ${minutes.toFixed(1)} min`)
mkdirSync(dirname(RESULTS_FILE), { recursive: true })
writeFileSync(
  RESULTS_FILE,
  `${JSON.stringify(
    {
      date: new Date().toISOString(),
      node: process.version,
      cpus: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown'}`,
      settings,
      runMinutes: Number(minutes.toFixed(2)),
      cells,
      prune: prunes,
      skipped,
    },
    // Six significant digits are plenty for timings and rates.
    (_, value) =>
      typeof value === 'number' && !Number.isInteger(value) ? Number(value.toPrecision(6)) : value,
    2,
  )}\n`,
)
