/**
 * Suites that need a server (PostgreSQL, MariaDB, Redis). A reachable server runs the suite; an
 * unreachable one skips it with one clear line, except under `CI=true`, where a missing server is a
 * failure, never a skip.
 *
 *     const postgres = await service('PostgreSQL', POSTGRES_URL, () => ping())
 *     describeWithService(postgres, 'PostgresStore', () => { ... })
 */
import { createClient } from 'redis'
import { describe, test } from 'vitest'

/** Connection settings of the test servers: environment variables, with the machine's defaults. */
export const SERVICE_URLS = Object.freeze({
  postgres: process.env.LATCHKEY_TEST_POSTGRES_URL ?? 'postgres://root@127.0.0.1:5432/test',
  mysql: process.env.LATCHKEY_TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test',
  redis: process.env.LATCHKEY_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379',
})

/** Whether a server answered, and if not, why. */
export type ServiceStatus =
  | { readonly name: string; readonly available: true }
  | { readonly name: string; readonly available: false; readonly reason: string }

/** True when a missing server must fail the run instead of skipping (`CI=true`). */
export const serversRequired = process.env.CI === 'true'

/** The URL with any password masked, for messages. */
export function maskUrl(url: string): string {
  return url.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@')
}

/** Runs `check` (connect, ping, close) with a time limit; resolves what it found. */
export async function service(
  name: string,
  url: string,
  check: () => Promise<unknown>,
  timeoutMs = 5000,
): Promise<ServiceStatus> {
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
      }),
    ])
    return { name, available: true }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    return { name, available: false, reason: `${name} at ${maskUrl(url)} is not reachable (${message})` }
  } finally {
    clearTimeout(timer)
  }
}

/**
 * `describe(title, body)` when the server answered. Otherwise: under `CI=true` a suite whose one test
 * fails with the reason; without it a skipped suite, and one line on stderr saying what and why.
 */
export function describeWithService(status: ServiceStatus, title: string, body: () => void): void {
  if (status.available) {
    describe(title, body)
    return
  }
  if (serversRequired) {
    describe(title, () => {
      test(`${status.name} answers`, () => {
        throw new Error(`${status.reason}; CI=true: a missing server is a failure, not a skip`)
      })
    })
    return
  }
  console.warn(`skipped: ${title}: ${status.reason} (set CI=true to make this a failure)`)
  describe.skip(`${title} (skipped: ${status.reason})`, body)
}

/** The three test servers, each probed (connect, then close) as {@link service} does. */
export async function serverServices(): Promise<{
  postgres: ServiceStatus
  mariadb: ServiceStatus
  redis: ServiceStatus
}> {
  const [{ default: pg }, { default: mysql }, { createClient }] = await Promise.all([
    import('pg'),
    import('mysql2/promise'),
    import('redis'),
  ])
  const [postgres, mariadb, redis] = await Promise.all([
    service('PostgreSQL', SERVICE_URLS.postgres, async () => {
      const client = new pg.Client({ connectionString: SERVICE_URLS.postgres, connectionTimeoutMillis: 4000 })
      try {
        await client.connect()
      } finally {
        await client.end().catch(() => {})
      }
    }),
    service('MariaDB', SERVICE_URLS.mysql, async () => {
      const connection = await mysql.createConnection({ uri: SERVICE_URLS.mysql, connectTimeout: 4000 })
      await connection.end().catch(() => {})
    }),
    service('Redis', SERVICE_URLS.redis, async () => {
      const client = createClient({ url: SERVICE_URLS.redis, socket: { reconnectStrategy: false } })
      client.on('error', () => {})
      await client.connect()
      await client.close()
    }),
  ])
  return { postgres, mariadb, redis }
}

/** `url` with its user, database or password replaced (for URLs a server refuses). */
export function changedUrl(url: string, change: { user?: string; password?: string; path?: string }): string {
  const parsed = new URL(url)
  if (change.user !== undefined) parsed.username = change.user
  if (change.password !== undefined) parsed.password = change.password
  if (change.path !== undefined) parsed.pathname = change.path
  return parsed.toString()
}

/** Deletes every key under each of `prefixes` on the test Redis (a test's own prefixes, after it). */
export async function dropRedisPrefixes(...prefixes: string[]): Promise<void> {
  const client = createClient({ url: SERVICE_URLS.redis })
  client.on('error', () => {})
  await client.connect()
  try {
    for (const prefix of prefixes) {
      for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
        if (keys.length > 0) await client.del(keys)
      }
    }
  } finally {
    await client.close()
  }
}
