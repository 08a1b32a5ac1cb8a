/**
 * What `bench/peer-stores.ts` and its server processes (`bench/peer-store-server.ts`) agree on; the
 * database servers' addresses, and dropping a cell's redis keys, serve `bench/dropin.ts` as well.
 */

/** latchkey's bundled stores that have a peer package for express-session. */
export const PEER_STORES = ['redis', 'postgres', 'mysql', 'file', 'sqlite'] as const
export type PeerStore = (typeof PEER_STORES)[number]

/** latchkey on its store, or express-session on the peer store package. */
export const SIDES = ['latchkey', 'peer'] as const
export type Side = (typeof SIDES)[number]

/** Each store: latchkey's class, and the npm package its peer is. */
export const STORE_NAMES: Record<PeerStore, { readonly latchkey: string; readonly peer: string }> = {
  redis: { latchkey: 'RedisStore', peer: 'connect-redis' },
  postgres: { latchkey: 'PostgresStore', peer: 'connect-pg-simple' },
  mysql: { latchkey: 'MySqlStore', peer: 'express-mysql-session' },
  file: { latchkey: 'FileStore', peer: 'session-file-store' },
  sqlite: { latchkey: 'SqliteStore', peer: 'better-sqlite3-session-store' },
}

/** The database servers: BENCH_POSTGRES_URL, BENCH_MYSQL_URL (MariaDB here), BENCH_REDIS_URL. */
export function storeUrls(): { readonly postgres: string; readonly mysql: string; readonly redis: string } {
  return {
    postgres: process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
    mysql: process.env.BENCH_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test',
    redis: process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379',
  }
}

/** Drops the redis keys that start with `prefix` (a cell's, once its server has stopped). */
export async function dropRedisKeys(prefix: string): Promise<void> {
  const { createClient } = await import('redis')
  const client = createClient({ url: storeUrls().redis })
  await client.connect()
  try {
    for await (const keys of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
      if (keys.length > 0) await client.unlink(keys)
    }
  } finally {
    await client.quit()
  }
}
