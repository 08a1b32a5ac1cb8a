import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { createClient, createCluster } from 'redis'
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from 'vitest'
import type { AppData } from '../../../test/support/app.js'
import { cookieHeader, type RemoteManager, startRemoteManager } from '../../../test/support/remote.js'
import { describeWithService, SERVICE_URLS, service } from '../../../test/support/services.js'
import { harness } from '../../../test/support/setup.js'
import { defineTwoProcessCapTests } from '../../../test/support/two-processes.js'
import { ManualClock } from '../../core/clock.js'
import { generateKey } from '../../core/crypto.js'
import { ConfigError, StoreError } from '../../core/errors.js'
import type { SessionRecord } from '../../core/store.js'
import { createSessionManager } from '../../index.js'
import { defineStoreConformance, makeRecord, randomStoreKey } from '../../testing/conformance.js'
import {
  type RedisClientLike,
  type RedisClusterLike,
  type RedisCommandOptions,
  RedisStore,
  type RedisStoreOptions,
} from './index.js'

/** Polls `check` until it is true; resolves the time it took, rejects after `timeoutMs`. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<number> {
  const start = performance.now()
  for (;;) {
    if (await check().catch(() => false)) return performance.now() - start
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

const run = promisify(execFile)
const REDIS_URL = SERVICE_URLS.redis
const MINUTE = 60_000
const HOUR = 60 * MINUTE
/** The store's default `clockSkewMs`. */
const SKEW = 60_000

type Admin = ReturnType<typeof createClient>
type Cluster = ReturnType<typeof createCluster>
/** A raw command on the node serving `key`. */
type Raw = (key: string, args: string[]) => Promise<unknown>

/** A prefix no other run uses. */
function freshPrefix(): string {
  return `lk-test-${randomBytes(6).toString('hex')}:`
}

async function connectAdmin(url: string, retry = true): Promise<Admin> {
  const client = createClient({
    url,
    socket: retry ? { connectTimeout: 2000 } : { reconnectStrategy: false },
  })
  client.on('error', () => {})
  await client.connect()
  return client
}

/** A loopback port nothing listens on (it was free a moment ago). */
async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

async function portIsFree(port: number): Promise<boolean> {
  const server = net.createServer()
  return new Promise((resolve) => {
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

/** `count` ports P with P and P + 10 000 (the cluster bus) free. */
async function clusterPorts(count: number): Promise<number[]> {
  const ports: number[] = []
  while (ports.length < count) {
    const port = 20_000 + Math.floor(Math.random() * 10_000)
    if (ports.includes(port)) continue
    if ((await portIsFree(port)) && (await portIsFree(port + 10_000))) ports.push(port)
  }
  return ports
}

/**
 * A TCP proxy on a fixed loopback port to a Redis server: `close()` stops listening and cuts every
 * connection (a server gone, connections refused), `open()` listens again on the same port.
 */
class TcpProxy {
  private server: net.Server | undefined
  private readonly sockets = new Set<net.Socket>()

  private constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  static async start(target: { host: string; port: number }, listening = true): Promise<TcpProxy> {
    const proxy = new TcpProxy(await freePort(), target)
    if (listening) await proxy.open()
    return proxy
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }

  async open(): Promise<void> {
    if (this.server) return
    const server = net.createServer((downstream) => {
      const upstream = net.connect(this.target.port, this.target.host)
      for (const socket of [downstream, upstream]) {
        this.sockets.add(socket)
        socket.on('error', () => {})
        socket.on('close', () => {
          this.sockets.delete(socket)
          downstream.destroy()
          upstream.destroy()
        })
      }
      downstream.pipe(upstream).pipe(downstream)
    })
    this.server = server
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve))
  }

  async close(): Promise<void> {
    const server = this.server
    this.server = undefined
    for (const socket of this.sockets) socket.destroy()
    if (server) await new Promise((resolve) => server.close(resolve))
  }
}

/** A redis-server child process on `port`, answering PING; `stop()` kills it. */
async function startRedisServer(
  port: number,
  dir: string,
  extra: string[] = [],
): Promise<{ process: ChildProcess; url: string; stop(): Promise<void> }> {
  const child = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--save',
      '',
      '--appendonly',
      'no',
      '--daemonize',
      'no',
      ...extra,
    ],
    { stdio: 'ignore' },
  )
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await exited
  }
  try {
    await until(`redis-server on port ${port}`, async () => {
      const { stdout } = await run('redis-cli', ['-p', String(port), 'ping'])
      return stdout.trim() === 'PONG'
    })
  } catch (error) {
    await stop()
    throw error
  }
  return { process: child, url: `redis://127.0.0.1:${port}`, stop }
}

/** Deletes every key under `prefix` on each node (one key per command: cluster slots differ). */
async function wipe(nodes: readonly Admin[], prefix: string): Promise<void> {
  for (const node of nodes) {
    for await (const keys of node.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
      await Promise.all(keys.map((key) => node.unlink(key)))
    }
  }
}

/**
 * A maxmemory far above what any suite writes to the shared Redis (64 GiB, plus a marker), so that the
 * eviction-check tests change no behaviour of the suites running beside them.
 */
const TEST_MAXMEMORY = String(64 * 1024 ** 3 + 4099)

/**
 * Sets `maxmemory` and `maxmemory-policy` on `node` for `body`, then puts back what was there. A
 * `maxmemory` of {@link TEST_MAXMEMORY} found there was left by a run of this file alongside: the
 * server's own values are then Redis's defaults.
 */
async function withEvictionConfig(
  node: Admin,
  maxmemory: string,
  policy: string,
  body: () => Promise<void>,
): Promise<void> {
  const saved = {
    maxmemory: (await node.configGet('maxmemory')).maxmemory as string,
    policy: (await node.configGet('maxmemory-policy'))['maxmemory-policy'] as string,
  }
  expect(saved.maxmemory).toMatch(/^\d+$/)
  expect(saved.policy).toMatch(/^[a-z-]+$/)
  const original = saved.maxmemory === TEST_MAXMEMORY ? { maxmemory: '0', policy: 'noeviction' } : saved
  try {
    await node.configSet('maxmemory', maxmemory)
    await node.configSet('maxmemory-policy', policy)
    await body()
  } finally {
    await node.configSet('maxmemory-policy', original.policy)
    await node.configSet('maxmemory', original.maxmemory)
  }
}

/**
 * A client that passes every command on to `target` (or to `answer`, when it returns a reply) and keeps
 * the `CONFIG` commands the store sends (its eviction check), so that a test can wait for the check.
 */
function watchConfig(
  target: RedisClientLike,
  answer?: (args: string[], options?: RedisCommandOptions) => Promise<unknown> | undefined,
): { client: RedisClientLike; sent: string[][]; settled(count: number): Promise<void> } {
  const sent: string[][] = []
  const replies: Promise<unknown>[] = []
  const client: RedisClientLike = {
    sendCommand(args, options) {
      const reply = answer?.(args, options) ?? target.sendCommand(args, options)
      if (args[0]?.toUpperCase() === 'CONFIG') {
        sent.push(args)
        replies.push(reply)
      }
      return reply
    },
  }
  return {
    client,
    sent,
    /** Waits until `count` CONFIG commands were sent and answered, and what the store does with them. */
    async settled(count) {
      await until(`${count} CONFIG commands`, async () => sent.length >= count)
      await Promise.allSettled(replies)
      await new Promise((resolve) => setImmediate(resolve))
    },
  }
}

/** Collects the `unhandledRejection`s of the process while `body` runs. */
async function unhandledRejectionsOf(body: () => Promise<void>): Promise<unknown[]> {
  const seen: unknown[] = []
  const listener = (reason: unknown) => seen.push(reason)
  process.on('unhandledRejection', listener)
  try {
    await body()
    // Unhandled rejections are reported after the microtask queue drains.
    await new Promise((resolve) => setTimeout(resolve, 50))
  } finally {
    process.off('unhandledRejection', listener)
  }
  return seen
}

/** What the checks shared by the single server and the cluster need. */
interface Env {
  /** A store with a fresh prefix, cleaned afterwards. */
  store(clock: ManualClock, options?: Partial<RedisStoreOptions>): RedisStore
  prefixOf(store: RedisStore): string
  raw: Raw
  flushScripts(): Promise<void>
}

const redis = await service('Redis', REDIS_URL, async () => (await connectAdmin(REDIS_URL, false)).close())
const binaries = await service('redis-server and redis-cli', 'the PATH', () =>
  Promise.all([run('redis-server', ['--version']), run('redis-cli', ['--version'])]),
)

/** Sorted store keys of records. */
const keysOf = (records: readonly SessionRecord[]) => records.map((record) => record.key).sort()

/**
 * Checks of the user index and scripts, run on one server and on the cluster. `env()` is called
 * inside tests (the servers start in `beforeAll`).
 */
/**
 * "Sign out everywhere (but `exceptKey`)" as the core does it: list the user's records, destroy each.
 * Resolves how many it destroyed.
 */
async function destroyUserSessions(store: RedisStore, userId: string, exceptKey?: string): Promise<number> {
  const keys = (await store.listByUser(userId)).map((record) => record.key).filter((key) => key !== exceptKey)
  await Promise.all(keys.map((key) => store.destroy(key)))
  return keys.length
}

function defineIndexChecks(env: () => Env): void {
  const userKeyOf = (store: RedisStore, userId: string) =>
    `${env().prefixOf(store)}u:{${encodeURIComponent(userId)}}`
  const scoreOf = async (store: RedisStore, userId: string, key: string) => {
    const userKey = userKeyOf(store, userId)
    const score = await env().raw(userKey, ['ZSCORE', userKey, key])
    return score === null ? null : Number(score)
  }
  const sessionKey = (store: RedisStore, key: string) => `${env().prefixOf(store)}s:{${key}}`
  const hashOf = async (key: string) => {
    const flat = (await env().raw(key, ['HGETALL', key])) as string[]
    return Object.fromEntries(flat.flatMap((field, n) => (n % 2 ? [] : [[field, flat[n + 1]]])))
  }

  /** The rule of the index: every live record of a user is in the user's set with a score >= its deadline. */
  const assertIndexCovers = async (store: RedisStore) => {
    for await (const record of store.list()) {
      if (record.userId === null) continue
      const score = await scoreOf(store, record.userId, record.key)
      expect(score, `index of ${record.userId} misses ${record.key}`).not.toBeNull()
      expect(score as number).toBeGreaterThanOrEqual(record.absoluteExpiresAt)
    }
  }

  test('key layout: one hash per session, one sorted set per user, TTLs on both', async () => {
    const clock = new ManualClock()
    const store = env().store(clock)
    const record = makeRecord(clock, { userId: 'alice', version: 3 })
    await store.create(record)
    const key = sessionKey(store, record.key)
    expect(await hashOf(key)).toEqual({
      v: '3',
      u: 'alice',
      c: String(record.createdAt),
      l: String(record.lastSeenAt),
      i: String(record.idleExpiresAt),
      a: String(record.absoluteExpiresAt),
      p: record.payload,
    })
    // Redis frees a record the skew after its deadline, counted by the store's clock from now.
    const ttl = Number(await env().raw(key, ['PTTL', key]))
    expect(ttl).toBeLessThanOrEqual(record.idleExpiresAt - clock.now() + SKEW)
    expect(ttl).toBeGreaterThan(record.idleExpiresAt - clock.now() + SKEW - 5000)
    expect(await scoreOf(store, 'alice', record.key)).toBe(record.absoluteExpiresAt)
    const userKey = userKeyOf(store, 'alice')
    expect(Number(await env().raw(userKey, ['PTTL', userKey]))).toBeGreaterThan(
      record.absoluteExpiresAt - clock.now() + SKEW - 5000,
    )

    await store.destroy(record.key)
    expect(await hashOf(key)).toEqual({
      v: '3',
      c: String(record.createdAt),
      l: String(record.lastSeenAt),
      i: String(record.idleExpiresAt),
      a: String(record.absoluteExpiresAt),
      t: '1',
    })
    expect(Number(await env().raw(key, ['PTTL', key]))).toBeGreaterThan(ttl - 5000)
    expect(await scoreOf(store, 'alice', record.key)).toBeNull()
  })

  test('Redis frees a record by itself once its deadline and the skew have passed', async () => {
    const clock = { now: () => Date.now() }
    const store = env().store(new ManualClock(), { clock, clockSkewMs: 50 })
    const record = makeRecord(clock, { userId: 'alice', idleExpiresAt: Date.now() + 100 })
    await store.create(record)
    const key = sessionKey(store, record.key)
    expect(Number(await env().raw(key, ['EXISTS', key]))).toBe(1)
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(Number(await env().raw(key, ['EXISTS', key]))).toBe(0)
  })

  test('works on after SCRIPT FLUSH: EVALSHA falls back to EVAL, which caches the script again', async () => {
    const clock = new ManualClock()
    const store = env().store(clock)
    const record = makeRecord(clock, { userId: 'alice' })
    expect(await store.create(record)).toBe(true)
    for (let round = 0; round < 2; round++) {
      await env().flushScripts()
      const other = makeRecord(clock, { userId: 'alice' })
      expect(await store.create(other)).toBe(true)
      const next = { ...record, version: record.version + 1 + round, payload: `round-${round}` }
      expect(await store.update(next, record.version + round)).toBe(true)
      await env().flushScripts()
      await store.touch(record.key, clock.now(), clock.now() + HOUR)
      expect((await store.get(record.key))?.idleExpiresAt).toBe(clock.now() + HOUR)
      await env().flushScripts()
      expect(keysOf(await store.listByUser('alice'))).toEqual([record.key, other.key].sort())
      await env().flushScripts()
      await store.destroy(other.key)
      expect(await store.get(other.key)).toBeNull()
      await env().flushScripts()
      expect(await store.prune()).toBe(0)
    }
    expect(await destroyUserSessions(store, 'alice')).toBe(1)
  })

  test('destroy and listByUser clean the index; a member of a record under another user stays', async () => {
    const clock = new ManualClock()
    const store = env().store(clock)
    const [a1, a2, a3] = [1, 2, 3].map(() => makeRecord(clock, { userId: 'alice' })) as [
      SessionRecord,
      SessionRecord,
      SessionRecord,
    ]
    for (const record of [a1, a2, a3]) expect(await store.create(record)).toBe(true)

    await store.destroy(a1.key)
    expect(await scoreOf(store, 'alice', a1.key)).toBeNull()

    // Moved to bob: alice's member stays (it may move back while a reader looks), and is filtered.
    expect(await store.update({ ...a2, version: 2, userId: 'bob' }, 1)).toBe(true)
    expect(keysOf(await store.listByUser('alice'))).toEqual([a3.key])
    expect(await scoreOf(store, 'alice', a2.key)).toBe(a2.absoluteExpiresAt)
    expect(keysOf(await store.listByUser('bob'))).toEqual([a2.key])
    expect(await destroyUserSessions(store, 'alice', a3.key)).toBe(0)
    expect(await store.get(a2.key)).not.toBeNull()

    // A tombstone written by a process that died before it cleaned the index: the next read cleans it.
    const key = sessionKey(store, a3.key)
    await env().raw(key, ['HDEL', key, 'p', 'u'])
    await env().raw(key, ['HSET', key, 't', '1'])
    expect(await scoreOf(store, 'alice', a3.key)).not.toBeNull()
    expect(await store.listByUser('alice')).toEqual([])
    expect(await scoreOf(store, 'alice', a3.key)).toBeNull()
  })

  test('a member without a record (a create in flight, or failed) stays until its score has passed', async () => {
    const clock = new ManualClock()
    const store = env().store(clock)
    const pending = randomStoreKey()
    const userKey = userKeyOf(store, 'carol')
    await env().raw(userKey, ['ZADD', userKey, String(clock.now() + HOUR), pending])
    const live = makeRecord(clock, {
      userId: 'carol',
      idleExpiresAt: clock.now() + 3 * HOUR,
      absoluteExpiresAt: clock.now() + 3 * HOUR,
    })
    await store.create(live)
    expect(keysOf(await store.listByUser('carol'))).toEqual([live.key])
    expect(await scoreOf(store, 'carol', pending)).toBe(clock.now() + HOUR)

    // Past its score, but not by the skew: another server's clock may be behind.
    clock.advance(HOUR + SKEW - 1)
    await store.touch(live.key, clock.now(), clock.now() + HOUR)
    expect(keysOf(await store.listByUser('carol'))).toEqual([live.key])
    expect(await scoreOf(store, 'carol', pending)).not.toBeNull()
    clock.advance(1)
    expect(keysOf(await store.listByUser('carol'))).toEqual([live.key])
    expect(await scoreOf(store, 'carol', pending)).toBeNull()
  })

  test('an update to a later absolute deadline raises the score before it writes', async () => {
    const clock = new ManualClock()
    const store = env().store(clock)
    const record = makeRecord(clock, { userId: 'alice' })
    await store.create(record)
    const later = { ...record, version: 2, absoluteExpiresAt: record.absoluteExpiresAt + HOUR }
    expect(await store.update(later, 1)).toBe(true)
    expect(await scoreOf(store, 'alice', record.key)).toBe(later.absoluteExpiresAt)
    const sooner = { ...later, version: 3, absoluteExpiresAt: record.absoluteExpiresAt - HOUR }
    expect(await store.update(sooner, 2)).toBe(true)
    expect(await scoreOf(store, 'alice', record.key)).toBe(later.absoluteExpiresAt)
    clock.set(sooner.absoluteExpiresAt)
    expect(await store.listByUser('alice')).toEqual([])
  })

  test('under concurrent creates, moves, destroys and revocations the index never misses a live record', async () => {
    const clock = new ManualClock()
    const store = env().store(clock)
    const users = ['alice', 'bob', 'carol', null]
    const keys = Array.from({ length: 10 }, randomStoreKey)
    let seed = 12345
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return seed / 2 ** 31
    }
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T
    const step = async () => {
      const key = pick(keys)
      const op = pick([
        'create',
        'update',
        'update',
        'update',
        'destroy',
        'destroyUserSessions',
        'list',
      ] as const)
      if (op === 'create') {
        await store.create(makeRecord(clock, { key, userId: pick(users) }))
      } else if (op === 'update') {
        const current = await store.get(key)
        if (!current) return
        const absoluteExpiresAt = current.absoluteExpiresAt + pick([-MINUTE, 0, MINUTE])
        const next = { ...current, version: current.version + 1, userId: pick(users), absoluteExpiresAt }
        await store.update(next, current.version)
      } else if (op === 'destroy') {
        await store.destroy(key)
      } else if (op === 'destroyUserSessions') {
        await destroyUserSessions(store, pick(['alice', 'bob', 'carol']), pick(keys))
      } else {
        await store.listByUser(pick(['alice', 'bob', 'carol']))
      }
    }
    for (let round = 0; round < 15; round++) {
      await Promise.all(Array.from({ length: 30 }, step))
      await assertIndexCovers(store)
      const all: SessionRecord[] = []
      for await (const record of store.list()) all.push(record)
      for (const user of ['alice', 'bob', 'carol']) {
        expect(keysOf(await store.listByUser(user))).toEqual(keysOf(all.filter((r) => r.userId === user)))
      }
      clock.advance(pick([0, MINUTE, 10 * MINUTE]))
    }
  })

  test('user IDs with braces, globs and separators stay apart', async () => {
    const clock = new ManualClock()
    const store = env().store(clock)
    const users = ['*', 'a*', '}{', 'x}:{y', 'u:{alice}', '[ab]', '?', '', 'a b;"\'\n\u00e9\u{1f510}']
    const records = users.map((userId) => makeRecord(clock, { userId }))
    for (const record of records) expect(await store.create(record)).toBe(true)
    for (const record of records) {
      expect(keysOf(await store.listByUser(record.userId as string))).toEqual([record.key])
    }
    // Index keys spell the user ID in UTF-8 with every byte but [A-Za-z0-9_.@-] as %XX: no brace of its own.
    const indexKey = `${env().prefixOf(store)}u:{a%20b%3B%22%27%0A%C3%A9%F0%9F%94%90}`
    expect(Number(await env().raw(indexKey, ['EXISTS', indexKey]))).toBe(1)
    const bracesKey = `${env().prefixOf(store)}u:{x%7D%3A%7By}`
    expect(Number(await env().raw(bracesKey, ['EXISTS', bracesKey]))).toBe(1)
    expect(await destroyUserSessions(store, '*')).toBe(1)
    expect(await store.count()).toBe(users.length - 1)
    clock.advance(13 * HOUR)
    expect(await store.prune()).toBe(users.length)
  })
}

describeWithService(redis, 'RedisStore on one server', () => {
  let admin: Admin
  const prefixes = new Map<RedisStore, string>()
  const cleanups: (() => Promise<unknown>)[] = []
  beforeAll(async () => {
    admin = await connectAdmin(REDIS_URL)
  })
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  })
  afterAll(async () => {
    for (const [store, prefix] of prefixes) {
      await store.close()
      await wipe([admin], prefix)
    }
    await admin?.close()
  })

  function storeOn(url: string, clock: ManualClock, options: Partial<RedisStoreOptions> = {}): RedisStore {
    const prefix = options.prefix ?? freshPrefix()
    const store = new RedisStore({ url, prefix, clock, ...options })
    prefixes.set(store, prefix)
    return store
  }

  async function dispose(store: RedisStore): Promise<void> {
    await store.close()
    const prefix = prefixes.get(store)
    prefixes.delete(store)
    if (prefix) await wipe([admin], prefix)
  }

  defineStoreConformance(
    { describe, test },
    {
      name: 'RedisStore (url)',
      createStore: (clock) => storeOn(REDIS_URL, clock),
      disposeStore: dispose,
      // Nothing listens on the port: every connection attempt is refused.
      createUnavailableStore: async (clock) =>
        new RedisStore({ url: `redis://127.0.0.1:${await freePort()}`, clock }),
      // A proxy that starts closed; restore() opens it and waits until the store answers again.
      async createRecoveringStore(clock) {
        const proxy = await TcpProxy.start(redisTarget(), false)
        cleanups.push(() => proxy.close())
        const store = storeOn(proxy.url, clock)
        return {
          store,
          restore: async () => {
            await proxy.open()
            await until('the store to reconnect', () => store.count().then(() => true))
          },
        }
      },
    },
  )

  defineStoreConformance(
    { describe, test },
    {
      name: 'RedisStore (your client)',
      createStore(clock) {
        const prefix = freshPrefix()
        const store = new RedisStore({ client: admin, prefix, clock })
        prefixes.set(store, prefix)
        return store
      },
      disposeStore: dispose,
      // A client of yours that is not connected (never was, or you closed it).
      createUnavailableStore: (clock) =>
        new RedisStore({ client: createClient({ url: REDIS_URL }), clock, prefix: freshPrefix() }),
    },
  )

  describe('RedisStore user index and scripts (one server)', () => {
    defineIndexChecks(() => ({
      store: (clock, options) => storeOn(REDIS_URL, clock, options),
      prefixOf: (store) => prefixes.get(store) as string,
      raw: (_key, args) => admin.sendCommand(args),
      flushScripts: async () => {
        await admin.sendCommand(['SCRIPT', 'FLUSH'])
      },
    }))
  })

  describe('RedisStore options', () => {
    test('a prefix that could escape its namespace is refused with ConfigError', () => {
      const bad = [
        '',
        "a'b",
        'a"b',
        'a;b',
        'a b',
        'a\tb',
        'a\nb',
        'a\0b',
        'a\u007fb',
        'a*',
        'a?',
        'a[b]',
        'a\\b',
        'a{b}',
        'a}',
        'a--b',
        'a..b',
        'a/b',
        '../x',
        'é:',
        'x'.repeat(65),
      ]
      for (const prefix of bad) {
        expect(() => new RedisStore({ client: admin, prefix }), JSON.stringify(prefix)).toThrow(ConfigError)
        try {
          new RedisStore({ client: admin, prefix })
        } catch (error) {
          expect((error as ConfigError).option).toBe('prefix')
        }
      }
      for (const prefix of ['latchkey:', 'app-1.sessions:', 'a', 'A_b-c.d:e:', 'x'.repeat(64)]) {
        expect(() => new RedisStore({ client: admin, prefix })).not.toThrow()
      }
    })

    test('client and url: exactly one, each checked', () => {
      const option = (options: RedisStoreOptions) => {
        try {
          new RedisStore(options)
        } catch (error) {
          expect(error).toBeInstanceOf(ConfigError)
          return (error as ConfigError).option
        }
        throw new Error('accepted')
      }
      expect(option({})).toBe('client')
      expect(option({ client: admin, url: REDIS_URL })).toBe('client')
      expect(option({ client: {} as never })).toBe('client')
      expect(option({ url: 'http://127.0.0.1:6379' })).toBe('url')
      expect(option({ url: 'redis://[::1' })).toBe('url')
      expect(option({ client: admin, commandTimeoutMs: 0 })).toBe('commandTimeoutMs')
      expect(option({ client: admin, commandTimeoutMs: 1.5 })).toBe('commandTimeoutMs')
      expect(option({ client: admin, clockSkewMs: -1 })).toBe('clockSkewMs')
      expect(option({ client: admin, clock: {} as never })).toBe('clock')
      expect(option({ client: admin, onWarning: 'console' as never })).toBe('onWarning')
    })

    test('count, list and prune see only their own prefix, not a longer one that starts with it', async () => {
      const clock = new ManualClock()
      const prefix = freshPrefix()
      const short = storeOn(REDIS_URL, clock, { prefix })
      const long = storeOn(REDIS_URL, clock, { prefix: `${prefix}s:` })
      const longer = storeOn(REDIS_URL, clock, { prefix: `${prefix}u:` })
      await short.create(makeRecord(clock, { userId: 'alice' }))
      for (const store of [long, longer]) {
        await store.create(makeRecord(clock, { userId: 'alice', idleExpiresAt: clock.now() + 1 }))
        await store.create(makeRecord(clock, { userId: 'alice' }))
      }
      expect(await short.count()).toBe(1)
      expect(await long.count()).toBe(2)
      clock.advance(1)
      expect(await short.prune()).toBe(0)
      expect(await long.prune()).toBe(1)
      expect(await longer.count()).toBe(1)
      expect(await short.listByUser('alice')).toHaveLength(1)
    })

    test('a store just built answers its first call: it waits for its connection attempt', async () => {
      const store = storeOn(REDIS_URL, new ManualClock())
      expect(await store.get(randomStoreKey())).toBeNull()
    })

    test('a create or update whose index write fails does not happen: the index is written first', async () => {
      let failIndex = false
      const isIndexWrite = (args: readonly string[]) =>
        /^EVAL/.test(args[0] ?? '') && /u:\{/.test(args[3] ?? '')
      const flaky: RedisClientLike = {
        sendCommand: (args, options) =>
          failIndex && isIndexWrite(args)
            ? Promise.reject(new Error('injected: index write failed'))
            : admin.sendCommand(args, options),
      }
      const clock = new ManualClock()
      const prefix = freshPrefix()
      const store = new RedisStore({ client: flaky, prefix, clock })
      prefixes.set(store, prefix)
      failIndex = true
      const signedIn = makeRecord(clock, { userId: 'alice' })
      await expect(store.create(signedIn)).rejects.toMatchObject({ operation: 'create' })
      expect(await store.get(signedIn.key)).toBeNull()
      const anonymous = makeRecord(clock)
      expect(await store.create(anonymous)).toBe(true)
      const login = { ...anonymous, version: 2, userId: 'alice' }
      await expect(store.update(login, 1)).rejects.toMatchObject({ operation: 'update' })
      expect((await store.get(anonymous.key))?.userId).toBeNull()
      failIndex = false
      expect(await store.update(login, 1)).toBe(true)
      expect(keysOf(await store.listByUser('alice'))).toEqual([anonymous.key])
    })

    test('a create that times out while your client is offline is dropped, never run later', async () => {
      const proxy = await TcpProxy.start(redisTarget())
      cleanups.push(() => proxy.close())
      // Your client, with node-redis's default offline queue: commands wait for the reconnection.
      const client = createClient({ url: proxy.url, socket: { reconnectStrategy: 20 } })
      client.on('error', () => {})
      await client.connect()
      cleanups.push(async () => client.destroy())
      const clock = new ManualClock()
      const prefix = freshPrefix()
      const store = new RedisStore({ client, prefix, clock, commandTimeoutMs: 200 })
      prefixes.set(store, prefix)
      await proxy.close()
      await until('the client to notice', async () => !client.isReady)
      const anonymous = makeRecord(clock)
      const signedIn = makeRecord(clock, { userId: 'alice' })
      for (const record of [anonymous, signedIn]) {
        const error = await store.create(record).catch((e: unknown) => e)
        expect(error).toBeInstanceOf(StoreError)
        expect(error).toMatchObject({ operation: 'create', store: 'RedisStore' })
      }
      await proxy.open()
      await until('the client to reconnect', async () => client.isReady)
      await new Promise((resolve) => setTimeout(resolve, 100))
      expect(await store.get(anonymous.key)).toBeNull()
      expect(await store.get(signedIn.key)).toBeNull()
      // Not even the first step of the signed-in create (its index entry) ran.
      expect(await admin.exists(`${prefix}u:{alice}`)).toBe(0)
      expect(await store.listByUser('alice')).toEqual([])
    })
  })

  describe('RedisStore eviction check (maxmemory-policy)', () => {
    /** Three operations of a new store, as a request would run them. */
    async function threeOperations(store: RedisStore, clock: ManualClock): Promise<void> {
      const record = makeRecord(clock, { userId: 'alice' })
      expect(await store.create(record)).toBe(true)
      expect((await store.get(record.key))?.key).toBe(record.key)
      await store.destroy(record.key)
    }

    /** A store on `client` (its prefix cleaned up afterwards) whose warnings are collected. */
    function warnedStore(
      client: RedisClientLike,
      options: Omit<RedisStoreOptions, 'client' | 'url' | 'prefix' | 'clock'> = {},
    ): { store: RedisStore; clock: ManualClock; warnings: string[] } {
      const warnings: string[] = []
      const clock = new ManualClock()
      const prefix = freshPrefix()
      const store = new RedisStore({
        client,
        prefix,
        clock,
        onWarning: (warning) => warnings.push(warning.message),
        ...options,
      })
      prefixes.set(store, prefix)
      return { store, clock, warnings }
    }

    test('maxmemory set and allkeys-lru: one warning naming the policy, the risk and the fix; never again', async () => {
      await withEvictionConfig(admin, TEST_MAXMEMORY, 'allkeys-lru', async () => {
        // The store's own client (url): the warning comes once its first operation succeeded.
        const clock = new ManualClock()
        const warnings: string[] = []
        const owned = storeOn(REDIS_URL, clock, { onWarning: (warning) => warnings.push(warning.message) })
        expect(await owned.get(randomStoreKey())).toBeNull()
        await until('the warning', async () => warnings.length > 0)
        await threeOperations(owned, clock)
        await new Promise((resolve) => setTimeout(resolve, 100))
        expect(warnings).toHaveLength(1)
        const [message] = warnings as [string]
        expect(message).toContain('maxmemory-policy is allkeys-lru')
        expect(message).toMatch(/tombstone/)
        expect(message).toMatch(/user index/)
        expect(message).toMatch(/logout/)
        expect(message).toMatch(/sign out everywhere/)
        expect(message).toContain('CONFIG SET maxmemory-policy noeviction')
        expect(message).toContain('redis.conf')

        // Your client: the check is two CONFIG GETs, sent once whatever the number of operations.
        const watched = watchConfig(admin)
        const { store: yours, clock: yourClock, warnings: hooked } = warnedStore(watched.client)
        await threeOperations(yours, yourClock)
        await watched.settled(2)
        await threeOperations(yours, yourClock)
        await new Promise((resolve) => setImmediate(resolve))
        expect(watched.sent.map((args) => args.join(' ')).sort()).toEqual([
          'CONFIG GET maxmemory',
          'CONFIG GET maxmemory-policy',
        ])
        expect(hooked).toEqual([message])
      })
    })

    test('the default onWarning is one console.warn line starting with "latchkey:"; a hook that throws changes nothing', async () => {
      await withEvictionConfig(admin, TEST_MAXMEMORY, 'volatile-ttl', async () => {
        const warn = vi.spyOn(console, 'warn').mockImplementation(() => {})
        try {
          const watched = watchConfig(admin)
          // No onWarning: the default, console.warn.
          const { store, clock } = warnedStore(watched.client, { onWarning: undefined })
          await threeOperations(store, clock)
          await watched.settled(2)
          const lines = warn.mock.calls.filter(([line]) => String(line).includes('maxmemory-policy'))
          expect(lines).toHaveLength(1)
          expect(String(lines[0]?.[0])).toMatch(/^latchkey: Redis maxmemory-policy is volatile-ttl /)
        } finally {
          warn.mockRestore()
        }
        const rejected = await unhandledRejectionsOf(async () => {
          for (const onWarning of [
            () => {
              throw new Error('hook failed')
            },
            async () => {
              throw new Error('async hook failed')
            },
          ]) {
            const watched = watchConfig(admin)
            const { store, clock } = warnedStore(watched.client, { onWarning })
            await threeOperations(store, clock)
            await watched.settled(2)
            await threeOperations(store, clock)
          }
        })
        expect(rejected).toEqual([])
      })
    })

    test('noeviction: no warning', async () => {
      await withEvictionConfig(admin, TEST_MAXMEMORY, 'noeviction', async () => {
        const watched = watchConfig(admin)
        const { store, clock, warnings } = warnedStore(watched.client)
        await threeOperations(store, clock)
        await watched.settled(2)
        expect(warnings).toEqual([])
      })
    })

    test('maxmemory 0 (no limit: Redis never evicts) with an evicting policy: no warning', async () => {
      await withEvictionConfig(admin, '0', 'allkeys-lru', async () => {
        const watched = watchConfig(admin)
        const { store, clock, warnings } = warnedStore(watched.client)
        await threeOperations(store, clock)
        await watched.settled(2)
        expect(warnings).toEqual([])
      })
    })

    test('CONFIG refused (an ACL user without +config): operations succeed, no warning, no unhandled rejection', async () => {
      const user = `latchkey-noconfig-${randomBytes(4).toString('hex')}`
      await admin.sendCommand(['ACL', 'SETUSER', user, 'on', 'nopass', '~*', '&*', '+@all', '-config'])
      let client: Admin | undefined
      try {
        await withEvictionConfig(admin, TEST_MAXMEMORY, 'allkeys-lru', async () => {
          const url = new URL(REDIS_URL)
          url.username = user
          url.password = 'any'
          client = await connectAdmin(url.href)
          await expect(client.sendCommand(['CONFIG', 'GET', 'maxmemory-policy'])).rejects.toThrow(/NOPERM/)
          const rejected = await unhandledRejectionsOf(async () => {
            // Your client, logged in as that user.
            const watched = watchConfig(client as Admin)
            const { store: yours, clock, warnings } = warnedStore(watched.client)
            await threeOperations(yours, clock)
            await watched.settled(2)
            await threeOperations(yours, clock)
            expect(watched.sent).toHaveLength(2)
            // The store's own client, logged in as that user.
            const owned = storeOn(url.href, clock, { onWarning: (warning) => warnings.push(warning.message) })
            await threeOperations(owned, clock)
            await new Promise((resolve) => setTimeout(resolve, 100))
            await threeOperations(owned, clock)
            expect(warnings).toEqual([])
          })
          expect(rejected).toEqual([])
        })
      } finally {
        await (client as Admin | undefined)?.close()
        await admin.sendCommand(['ACL', 'DELUSER', user])
      }
    })

    test('CONFIG renamed, or never answered: no operation waits for it; silent at the timeout', async () => {
      const rejected = await unhandledRejectionsOf(async () => {
        const renamed = watchConfig(admin, (args) =>
          args[0] === 'CONFIG' ? Promise.reject(new Error("ERR unknown command 'CONFIG'")) : undefined,
        )
        // Like node-redis: a command whose signal aborts (at the store's timeout) rejects.
        let timedOut = 0
        const unanswered = watchConfig(admin, (args, options) =>
          args[0] === 'CONFIG'
            ? new Promise((_, reject) =>
                options?.abortSignal?.addEventListener('abort', () => {
                  timedOut++
                  reject(new Error('aborted'))
                }),
              )
            : undefined,
        )
        for (const watched of [renamed, unanswered]) {
          const { store, clock, warnings } = warnedStore(watched.client, { commandTimeoutMs: 1000 })
          await threeOperations(store, clock)
          await threeOperations(store, clock)
          // Six operations done while the check's CONFIG commands were still waiting for their timeout.
          expect(watched.sent).toHaveLength(2)
          expect(timedOut).toBe(0)
          await watched.settled(2)
          expect(warnings).toEqual([])
        }
        expect(timedOut).toBe(2)
      })
      expect(rejected).toEqual([])
    })
  })

  describe('two processes on one RedisStore: the cap on sessions per user', () => {
    defineTwoProcessCapTests(() => {
      const prefix = freshPrefix()
      return {
        local: (clock) => storeOn(REDIS_URL, clock, { prefix }),
        remote: {
          module: 'src/stores/redis/index.ts',
          exportName: 'RedisStore',
          options: { url: REDIS_URL, prefix },
        },
      }
    })
  })

  describe('two managers in two processes on one RedisStore', () => {
    async function pair(): Promise<{
      local: ReturnType<typeof createSessionManager<AppData>>
      remote: RemoteManager
      clock: ManualClock
    }> {
      const prefix = freshPrefix()
      const keys = [generateKey()]
      const clock = new ManualClock()
      const store = storeOn(REDIS_URL, clock, { prefix })
      const local = createSessionManager<AppData>({ cookie: { secure: false }, store, keys, clock })
      cleanups.push(() => dispose(store))
      const remote = await startRemoteManager({
        path: '',
        keys,
        time: clock.now(),
        store: {
          module: 'src/stores/redis/index.ts',
          exportName: 'RedisStore',
          options: { url: REDIS_URL, prefix },
        },
        dataKeys: ['n'],
      })
      cleanups.push(() => remote.close())
      return { local, remote, clock }
    }

    test('a session created in one is read in the other; a logout in one holds in the other', async () => {
      const { local, remote } = await pair()
      // Here to there.
      const session = await local.load({})
      session.set('n', 7)
      session.login('alice')
      const cookie = cookieHeader((await local.commit(session)).setCookie)
      expect(cookie).toMatch(/^sid=[\w-]{43}$/)
      expect(await remote.load(cookie)).toMatchObject({ isNew: false, userId: 'alice', data: { n: 7 } })
      expect(await remote.listUserSessions('alice')).toHaveLength(1)
      const { ref } = await remote.load(cookie)
      await remote.act(ref, { kind: 'logout' })
      await remote.commit(ref)
      expect((await local.load({ cookie })).isNew).toBe(true)
      expect(await local.listUserSessions('alice')).toEqual([])

      // There to here.
      const there = await remote.load(undefined)
      await remote.act(there.ref, { kind: 'set', key: 'n', value: 1 })
      await remote.act(there.ref, { kind: 'login', userId: 'bob' })
      const bob = cookieHeader((await remote.commit(there.ref)).setCookie)
      const here = await local.load({ cookie: bob })
      expect([here.userId, here.get('n')]).toEqual(['bob', 1])
      here.logout()
      await local.commit(here)
      expect((await remote.load(bob)).isNew).toBe(true)
      expect(await remote.listUserSessions('bob')).toEqual([])
    })

    test('100 concurrent update() increments split across both processes end at exactly 100', async () => {
      const { local, remote } = await pair()
      const session = await local.load({})
      session.set('n', 0)
      const cookie = cookieHeader((await local.commit(session)).setCookie) as string
      const here = async () => {
        const s = await local.load({ cookie })
        s.update('n', (n = 0) => n + 1)
        await local.commit(s)
      }
      const there = async () => {
        const { ref } = await remote.load(cookie)
        await remote.act(ref, { kind: 'inc', key: 'n' })
        await remote.commit(ref)
      }
      await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? here() : there())))
      expect((await local.load({ cookie })).get('n')).toBe(100)
      expect((await remote.load(cookie)).data).toEqual({ n: 100 })
    })
  })

  describe('faults', () => {
    test('the Redis port closed under a running app: 503 at once, the process stays up, service resumes, nothing acknowledged is lost', async () => {
      const proxy = await TcpProxy.start(redisTarget())
      cleanups.push(() => proxy.close())
      const clock = new ManualClock()
      const store = storeOn(proxy.url, clock, { commandTimeoutMs: 1000 })
      const h = await harness({ store, clock })
      cleanups.push(() => h.close())
      const clients = Array.from({ length: 5 }, () => h.client())
      for (const [i, client] of clients.entries()) {
        expect((await client.request(`/set?key=a&value=${i}`)).status).toBe(200)
        expect((await client.request('/inc')).status).toBe(200)
      }
      expect((await clients[0]?.request('/login?user=alice'))?.status).toBe(200)

      await proxy.close()
      for (const client of clients) {
        const response = await client.request('/inc')
        expect(response.status).toBe(503)
      }
      expect((await h.client().request('/set?key=b&value=1')).status).toBe(503)
      expect(h.errors.length).toBeGreaterThanOrEqual(6)
      expect(h.errors.every((error) => error instanceof StoreError)).toBe(true)

      await proxy.open()
      const first = clients[0] as (typeof clients)[number]
      const recovery = await until(
        'service to resume',
        async () => (await first.request('/state')).status === 200,
      )
      console.info(`RedisStore: service resumed ${Math.round(recovery)} ms after the port reopened`)
      for (const [i, client] of clients.entries()) {
        const { response, body } = await client.json('/state?key=a')
        expect(response.status).toBe(200)
        expect(body).toMatchObject({ isNew: false, value: String(i), n: 1 })
      }
      expect(await store.listByUser('alice')).toHaveLength(1)
      expect((await first.json('/inc')).body).toMatchObject({ n: 2, userId: 'alice' })
    })

    test('a manager in another process over a port that closes: StoreError, alive, resumes', async () => {
      const proxy = await TcpProxy.start(redisTarget())
      cleanups.push(() => proxy.close())
      const prefix = freshPrefix()
      const clock = new ManualClock()
      const store = storeOn(REDIS_URL, clock, { prefix })
      const keys = [generateKey()]
      const local = createSessionManager<AppData>({ cookie: { secure: false }, store, keys, clock })
      const remote = await startRemoteManager({
        path: '',
        keys,
        time: clock.now(),
        store: {
          module: 'src/stores/redis/index.ts',
          exportName: 'RedisStore',
          options: { url: proxy.url, prefix, commandTimeoutMs: 500 },
        },
        dataKeys: ['n'],
      })
      cleanups.push(() => remote.close())
      const session = await local.load({})
      session.set('n', 41)
      const cookie = cookieHeader((await local.commit(session)).setCookie)
      expect((await remote.load(cookie)).data).toEqual({ n: 41 })

      await proxy.close()
      for (let i = 0; i < 3; i++) {
        await expect(remote.load(cookie)).rejects.toMatchObject({ code: 'ERR_LATCHKEY_STORE' })
      }
      expect(() => process.kill(remote.pid, 0)).not.toThrow()
      await proxy.open()
      await until('the other process to resume', async () => (await remote.load(cookie)).data.n === 41)
      const { ref } = await remote.load(cookie)
      await remote.act(ref, { kind: 'inc', key: 'n' })
      await remote.commit(ref)
      expect((await local.load({ cookie })).get('n')).toBe(42)
    })
  })
})

/** Host and port of the test server, for proxies. */
function redisTarget(): { host: string; port: number } {
  const url = new URL(REDIS_URL)
  return { host: url.hostname || '127.0.0.1', port: Number(url.port || 6379) }
}

describeWithService(binaries, 'RedisStore under DEBUG SLEEP (a private redis-server)', () => {
  let server: Awaited<ReturnType<typeof startRedisServer>> | undefined
  let dir = ''
  const cleanups: (() => Promise<unknown>)[] = []
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'latchkey-redis-'))
    server = await startRedisServer(await freePort(), dir, ['--enable-debug-command', 'yes'])
  })
  afterAll(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
    await server?.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  test('a server asleep past the command timeout: 503 within it, no reconnection needed after, nothing lost', async () => {
    const url = (server as NonNullable<typeof server>).url
    const clock = new ManualClock()
    const store = new RedisStore({ url, clock, commandTimeoutMs: 300 })
    const h = await harness({ store, clock })
    cleanups.push(() => h.close())
    const clients = Array.from({ length: 3 }, () => h.client())
    for (const [i, client] of clients.entries()) {
      expect((await client.request(`/set?key=a&value=${i}`)).status).toBe(200)
    }
    const sleeper = await connectAdmin(url)
    cleanups.push(() => sleeper.close())
    // Asleep long enough that every request below meets it even on a loaded machine; no wall-clock
    // assertion: a request that did not give up at the command timeout would still be waiting.
    const asleep = sleeper.sendCommand(['DEBUG', 'SLEEP', '4'])
    await new Promise((resolve) => setTimeout(resolve, 50))
    for (const client of clients) {
      const response = await client.request('/inc')
      expect(response.status).toBe(503)
    }
    await expect(store.get(randomStoreKey())).rejects.toMatchObject({
      code: 'ERR_LATCHKEY_STORE',
      operation: 'get',
      message: expect.stringMatching(/within 300 ms/),
    })
    expect(h.errors.every((error) => error instanceof StoreError)).toBe(true)
    await asleep
    for (const [i, client] of clients.entries()) {
      const { response, body } = await client.json('/state?key=a')
      expect(response.status).toBe(200)
      expect(body).toMatchObject({ isNew: false, value: String(i), n: null })
    }
  })
})

describeWithService(binaries, 'RedisStore on a Redis Cluster of three masters', () => {
  let cluster: Cluster
  let masters: Admin[] = []
  let servers: Awaited<ReturnType<typeof startRedisServer>>[] = []
  let dir = ''
  const prefixes = new Map<RedisStore, string>()

  beforeAll(async () => {
    const start = performance.now()
    dir = mkdtempSync(join(tmpdir(), 'latchkey-cluster-'))
    try {
      const ports = await clusterPorts(3)
      servers = await Promise.all(
        ports.map((port) =>
          startRedisServer(port, dir, [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            join(dir, `nodes-${port}.conf`),
          ]),
        ),
      )
      const up = performance.now() - start
      await run('redis-cli', [
        '--cluster',
        'create',
        ...ports.map((port) => `127.0.0.1:${port}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ])
      await until('cluster_state:ok', async () => {
        const infos = await Promise.all(
          ports.map((port) => run('redis-cli', ['-p', String(port), 'cluster', 'info'])),
        )
        return infos.every(({ stdout }) => stdout.includes('cluster_state:ok'))
      })
      cluster = createCluster({ rootNodes: [{ url: `redis://127.0.0.1:${ports[0]}` }] })
      cluster.on('error', () => {})
      await cluster.connect()
      masters = await Promise.all(cluster.masters.map((master) => cluster.nodeClient(master)))
      expect(masters).toHaveLength(3)
      console.info(
        `Redis Cluster: 3 servers up in ${Math.round(up)} ms, cluster ready in ${Math.round(performance.now() - start)} ms`,
      )
    } catch (error) {
      await stopCluster()
      throw error
    }
  }, 60_000)

  async function stopCluster(): Promise<void> {
    if (cluster?.isOpen) cluster.destroy()
    await Promise.all(servers.map((server) => server.stop()))
    servers = []
    if (dir) rmSync(dir, { recursive: true, force: true })
  }

  afterAll(async () => {
    try {
      if (cluster?.isOpen) for (const prefix of prefixes.values()) await wipe(masters, prefix)
    } finally {
      await stopCluster()
    }
  })

  function store(clock: ManualClock, options: Partial<RedisStoreOptions> = {}): RedisStore {
    const prefix = freshPrefix()
    const created = new RedisStore({ client: cluster, prefix, clock, ...options })
    prefixes.set(created, prefix)
    return created
  }

  defineStoreConformance(
    { describe, test },
    {
      name: 'RedisStore (cluster)',
      createStore: (clock) => store(clock),
      async disposeStore(created) {
        await created.close()
        const prefix = prefixes.get(created)
        prefixes.delete(created)
        if (prefix) await wipe(masters, prefix)
      },
      // A cluster client of yours, closed underneath the store.
      async createUnavailableStore(clock) {
        const closed = createCluster({ rootNodes: [{ url: (servers[0] as (typeof servers)[number]).url }] })
        closed.on('error', () => {})
        await closed.connect()
        closed.destroy()
        return new RedisStore({ client: closed, clock, prefix: freshPrefix() })
      },
    },
  )

  test('the records of one store spread over all three masters, and SCAN finds them on each', async () => {
    const clock = new ManualClock()
    const created = store(clock)
    const records = Array.from({ length: 60 }, () => makeRecord(clock, { userId: 'alice' }))
    for (const record of records) await created.create(record)
    const perMaster = await Promise.all(
      masters.map(async (master) => {
        let n = 0
        for await (const keys of master.scanIterator({ MATCH: `${prefixes.get(created)}s:*`, COUNT: 1000 })) {
          n += keys.length
        }
        return n
      }),
    )
    expect(perMaster.every((n) => n > 0)).toBe(true)
    expect(perMaster.reduce((a, b) => a + b)).toBe(60)
    expect(await created.count()).toBe(60)
    expect(keysOf(await created.listByUser('alice'))).toEqual(keysOf(records))
    expect(await destroyUserSessions(created, 'alice')).toBe(60)
    expect(await created.count()).toBe(0)
  })

  test('eviction check: every master is asked; a warning names the policy and how many masters may evict', async () => {
    const [evicting] = masters as [Admin]
    await withEvictionConfig(evicting, TEST_MAXMEMORY, 'allkeys-random', async () => {
      const watchedNodes: ReturnType<typeof watchConfig>[] = []
      const client: RedisClusterLike = {
        sendCommand: (key, isReadonly, args, options) => cluster.sendCommand(key, isReadonly, args, options),
        get masters() {
          return cluster.masters
        },
        async nodeClient(master) {
          const watched = watchConfig(await cluster.nodeClient(master as never))
          watchedNodes.push(watched)
          return watched.client
        },
      }
      const warnings: string[] = []
      const clock = new ManualClock()
      const created = store(clock, { client, onWarning: (warning) => warnings.push(warning.message) })
      const record = makeRecord(clock, { userId: 'alice' })
      expect(await created.create(record)).toBe(true)
      await until('every master asked', async () => watchedNodes.length === 3)
      await Promise.all(watchedNodes.map((watched) => watched.settled(2)))
      expect(await destroyUserSessions(created, 'alice')).toBe(1)
      await new Promise((resolve) => setImmediate(resolve))
      expect(watchedNodes.map((watched) => watched.sent.length)).toEqual([2, 2, 2])
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toContain('maxmemory-policy is allkeys-random on 1 of 3 cluster masters')
    })
  })

  describe('RedisStore user index and scripts (cluster)', () => {
    defineIndexChecks(() => ({
      store,
      prefixOf: (created) => prefixes.get(created) as string,
      raw: (key, args) => cluster.sendCommand(key, false, args),
      flushScripts: async () => {
        await Promise.all(masters.map((master) => master.sendCommand(['SCRIPT', 'FLUSH'])))
      },
    }))
  })
})
