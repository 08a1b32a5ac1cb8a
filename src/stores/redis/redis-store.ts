import type { createClient } from 'redis'
import { type Clock, systemClock } from '../../core/clock.js'
import { ConfigError, toStoreError } from '../../core/errors.js'
import { requireDriver } from '../../core/optional-peer.js'
import { expiresAt, isStoreKey, type SessionRecord, type StoreOptions } from '../../core/store.js'
import { isServerRefusal, missingSchema } from '../refusal.js'
import {
  type BundledStore,
  storeOperation,
  validateClock,
  validateDelay,
  type WarningHook,
  warningHook,
} from '../shared.js'
import { refuseUnknownStoreOptions } from '../store-options.js'
import {
  CREATE,
  DESTROY,
  INDEX_ADD,
  INDEX_LIST,
  INDEX_REMOVE,
  type LuaScript,
  PRUNE,
  TOUCH,
  UPDATE,
} from './scripts.js'

/** Per-command options the store passes to node-redis: a signal it aborts at the operation's deadline. */
export interface RedisCommandOptions {
  abortSignal?: AbortSignal
}

/**
 * The part of a node-redis 5 client (`createClient()`) the store uses. A `RedisClientType` fits as is;
 * so does anything else with these members.
 */
export interface RedisClientLike {
  /** Sends one raw command; resolves the reply. */
  sendCommand(args: string[], options?: RedisCommandOptions): Promise<unknown>
}

/**
 * The part of a node-redis 5 cluster (`createCluster()`) the store uses. A `RedisClusterType` fits as
 * is. Commands are routed by their key; `SCAN` runs on every master through {@link nodeClient}.
 */
export interface RedisClusterLike {
  /** Sends one raw command to the node serving `firstKey`; follows `MOVED` and `ASK`. */
  sendCommand(
    firstKey: string | undefined,
    isReadonly: boolean | undefined,
    args: string[],
    options?: RedisCommandOptions,
  ): Promise<unknown>
  /** The master nodes, as last discovered. */
  readonly masters: readonly unknown[]
  /** The client connected to one of {@link masters}. */
  nodeClient(node: unknown): RedisClientLike | Promise<RedisClientLike>
}

/** Options of {@link RedisStore}. Give exactly one of `client` and `url`. */
export interface RedisStoreOptions extends StoreOptions {
  /**
   * A connected node-redis client or cluster that you own: the store never connects, reconnects or
   * closes it, and `close()` leaves it open. Give it an `error` listener (node-redis requires one).
   */
  client?: RedisClientLike | RedisClusterLike
  /**
   * `redis://[[user]:password@]host[:port][/db]` or `rediss://…` (TLS). The store then creates,
   * connects and closes its own client: offline queue off (a command while disconnected fails at
   * once), reconnecting by itself with a backoff of 50 ms doubling up to 1 s.
   */
  url?: string
  /**
   * Start of every key the store writes. 1 to 64 characters of letters, digits, `_`, `-`, `.` and
   * `:`, without `--` or `..`. Default `'latchkey:'`.
   */
  prefix?: string
  /**
   * Whether the store may mark its prefix as set up: the first operation writes the key
   * `<prefix>schema` (the layout version, `1`) unless it is there, as `migrate()` does. With `false`
   * (for tools that only read, as the CLI's `count`), a prefix without that key and without any
   * session is the `ERR_LATCHKEY_NO_SCHEMA` error ("no such prefix"), so that a mistyped prefix is
   * never read as an empty store; a prefix that holds sessions but no marker yet (written by a
   * latchkey from before the marker) is accepted. Default `true`.
   */
  createSchema?: boolean
  /**
   * How long the store waits for each reply from Redis, and for a connection attempt of its own client
   * in progress, in ms. Past it the operation rejects with `StoreError` and node-redis drops the
   * command if it was not sent yet (so it never runs later). Default 2000.
   */
  commandTimeoutMs?: number
  /**
   * How far the clocks of the app servers sharing the store may disagree, in ms. Redis keeps each
   * record, tombstone and index entry this long past its deadline before freeing it, and user-index
   * cleanup waits this long, so no server sees a record vanish early. Default 60 000.
   */
  clockSkewMs?: number
  /**
   * Connection errors of the client the store owns (with `url`), as node-redis reports them: every
   * failed reconnection attempt. Requests see them as `StoreError`s anyway. Default: ignored.
   */
  onError?: (error: Error) => void
  /**
   * Told what may go wrong without failing any request. After its first successful operation the store
   * asks Redis, once and in the background, for `CONFIG GET maxmemory` and `maxmemory-policy` (on every
   * master of a cluster). When `maxmemory` is set (not 0) and the policy is anything but `noeviction`,
   * it calls this hook once, naming the policy: Redis could then evict a tombstone or a user index,
   * which can undo a logout or a "sign out everywhere"; the fix is `CONFIG SET maxmemory-policy
   * noeviction`, or `maxmemory-policy noeviction` in redis.conf. The check is best-effort: if CONFIG is
   * refused, renamed or disabled (as on many managed services), times out or fails otherwise, it stays
   * silent; it never delays, fails or retries a request. Default: one line on `console.warn`. What it
   * throws is ignored.
   */
  onWarning?: WarningHook
}

/** The layout of the keys under a prefix, held by its marker key (`<prefix>schema`). */
export const REDIS_LAYOUT_VERSION = 1

/** What {@link RedisStore.runMigration} did: the marker key of the prefix, created or found. */
export interface RedisMigrationReport {
  /** The key prefix. */
  readonly prefix: string
  /** The marker key, `<prefix>schema`. */
  readonly key: string
  /** `created`: the marker was written now; `current`: it was there. */
  readonly outcome: 'created' | 'current'
  /** The layout version the marker held before: 0 when there was none. */
  readonly from: number
  /** The layout version it holds now. */
  readonly to: number
}

/** Letters, digits, `_`, `-`, `.`, `:`; no glob, quote, brace, space, `;`, `/` or control character. */
const PREFIX = /^[A-Za-z0-9_.:-]{1,64}$/
/** Keys asked for per `SCAN` round. */
const SCAN_COUNT = '1000'
/** The one `maxmemory-policy` under which Redis never evicts a key. */
const NO_EVICTION = 'noeviction'
/** The hash fields of a record, in the order {@link RedisStore.get} reads them. */
const FIELDS = ['v', 'u', 'c', 'l', 'i', 'a', 'p', 't'] as const

/**
 * Sends one raw command within the command timeout; on a cluster, to the master serving `key` (never
 * `readonly`: a replica may lag behind a logout).
 */
type Send = (key: string, args: string[]) => Promise<unknown>

/** A client with the events and state the store watches when it owns it. */
type OwnedClient = ReturnType<typeof createClient>

/**
 * Sessions in Redis (or Redis Cluster), through node-redis 5: the store for several app servers that
 * share sessions. Every write is a Lua script on one key, atomic on the server.
 *
 * Key layout, for the default prefix `latchkey:`:
 * - `latchkey:s:{<store key>}`: one hash per session (fields in `scripts.ts`), with a TTL.
 * - `latchkey:u:{<user id>}`: one sorted set per user: store keys scored by an upper bound of their
 *   record's absolute deadline, with a TTL. The user ID is written as its UTF-8 bytes, those outside
 *   `[A-Za-z0-9_.@-]` as `%XX`, so it never adds a brace to the key.
 *
 * - `latchkey:schema`: the prefix's marker, the layout version (`1`), without a TTL: written by
 *   `migrate()` and by the first operation of a store that may create it (`createSchema`), so that a
 *   store told not to (the CLI's read-only commands) can tell a mistyped prefix from an empty store.
 *
 * The braces are hash tags: a session's slot is its store key's, a user's index slot its user ID's.
 * Every script names exactly one key, so every script runs on one slot, on a single server or a
 * cluster alike; nothing ever needs two keys in one slot.
 *
 * **Expiry** is decided by the store's clock: every script compares the record's deadlines with the
 * `now` the store passes in, so a record is gone the moment `now >= min(idleExpiresAt,
 * absoluteExpiresAt)` whatever Redis's TTL says. The TTL (`PEXPIRE`, the time left by the store's clock
 * plus `clockSkewMs`) only lets Redis free the memory; a tombstone keeps the record's TTL.
 *
 * **The user index across slots** holds one rule: *for every live record of user U with absolute
 * deadline A, U's sorted set has the record's key with a score of at least A.* It holds because
 * - a write that makes a record visible under U (create with a user; update to another user or a later
 *   absolute deadline) first adds the key to U's set with `ZADD GT` score A, then runs its script; the
 *   update script refuses (and the store adds first, then retries) when the stored record does not
 *   already cover it: same user and stored absolute deadline at least A;
 * - a member is removed only when it cannot be live: its score is at or below `now - clockSkewMs`
 *   (then A passed for every server's clock), or it points at a tombstone or a record expired
 *   `clockSkewMs` ago, and its score is at most that record's A (a record created later on the same
 *   key, which would have to reuse a 256-bit key, gets a later A and a higher score, and stays).
 *
 * So the set may hold stale members (a failed create, a record moved to another user, one destroyed
 * by a process that died before cleaning up), which `listByUser` filters out by
 * reading each record, and which age out by score; it never misses a live record.
 *
 * **Failures**: every failure rejects with a `StoreError` naming the store and the operation, with
 * node-redis's error as `cause`; no reply waits longer than `commandTimeoutMs`. At that deadline a
 * command not yet sent is dropped (never run later); one already sent may still have run, as with any
 * network database. A client the store owns has no offline queue (commands fail at once while disconnected)
 * and reconnects by itself, so the store recovers as soon as Redis is back.
 */
export class RedisStore implements BundledStore {
  private readonly clock: Clock
  private readonly prefix: string
  private readonly commandTimeoutMs: number
  private readonly clockSkewMs: number
  private readonly createSchema: boolean
  /** The check (or write) of the prefix's marker, once it succeeded or while it runs. */
  private layout: Promise<void> | undefined
  /** Whether the marker is known to be there: then an operation does not wait on {@link layout} at all. */
  private layoutReady = false
  private readonly client: RedisClientLike | RedisClusterLike
  private readonly cluster: RedisClusterLike | undefined
  /** Hands a warning to `onWarning`, which may not throw or reject back into the store. */
  private readonly warn: (warning: Error | string) => void
  /** The eviction check, once started (it runs once per store); `close()` cancels it. */
  private evictionCheck: { done: Promise<void>; cancel: AbortController } | undefined
  /** The client the store created from `url`, which it connects and closes. */
  private readonly owned: OwnedClient | undefined
  /** The last connection error of the client the store owns, until it is ready again. */
  private lastError: Error | undefined
  /** Settles when the owned client's connection attempt in progress succeeds or fails. */
  private attempt: Promise<void> | undefined
  private closed = false

  constructor(options: RedisStoreOptions) {
    refuseUnknownStoreOptions('RedisStore', options ?? {})
    const {
      client,
      url,
      clock = systemClock,
      prefix = 'latchkey:',
      commandTimeoutMs = 2000,
      clockSkewMs = 60_000,
      createSchema = true,
      onError,
      onWarning,
    } = options ?? {}
    this.clock = validateClock(clock)
    if (
      typeof prefix !== 'string' ||
      !PREFIX.test(prefix) ||
      prefix.includes('--') ||
      prefix.includes('..')
    ) {
      throw new ConfigError(
        'prefix',
        `must be 1 to 64 letters, digits, '_', '-', '.' or ':', without '--' or '..', got ${JSON.stringify(prefix)}`,
      )
    }
    validateDelay(commandTimeoutMs, 'commandTimeoutMs', 1)
    validateDelay(clockSkewMs, 'clockSkewMs', 0)
    if (typeof createSchema !== 'boolean') {
      throw new ConfigError('createSchema', `must be true or false, got ${String(createSchema)}`)
    }
    if (onError !== undefined && typeof onError !== 'function') {
      throw new ConfigError('onError', 'must be a function')
    }
    this.warn = warningHook(onWarning)
    if ((client === undefined) === (url === undefined)) {
      throw new ConfigError('client', 'give exactly one of client (a node-redis client or cluster) and url')
    }
    this.prefix = prefix
    this.commandTimeoutMs = commandTimeoutMs
    this.clockSkewMs = clockSkewMs
    this.createSchema = createSchema
    if (client !== undefined) {
      if (typeof (client as { sendCommand?: unknown })?.sendCommand !== 'function') {
        throw new ConfigError('client', 'must be a node-redis client or cluster (no sendCommand method)')
      }
      this.client = client
      this.cluster = isCluster(client) ? client : undefined
      return
    }
    if (typeof url !== 'string' || !/^rediss?:\/\//.test(url)) {
      throw new ConfigError('url', 'must be a redis:// or rediss:// URL')
    }
    const { createClient } = requireDriver<typeof import('redis')>('redis', 'RedisStore')
    let owned: OwnedClient
    try {
      owned = createClient({
        url,
        disableOfflineQueue: true,
        socket: {
          connectTimeout: commandTimeoutMs,
          reconnectStrategy: (retries: number) =>
            Math.min(50 * 2 ** retries, 1000) + Math.floor(Math.random() * 50),
        },
      })
    } catch (error) {
      throw new ConfigError('url', `is not a usable Redis URL (${(error as Error).message})`)
    }
    this.owned = owned
    this.client = owned
    owned.on('error', (error: Error) => {
      this.lastError = error
      this.attemptDone()
      try {
        onError?.(error)
      } catch {
        // A throwing hook must not become an uncaught exception in node-redis's event emitter.
      }
    })
    owned.on('ready', () => {
      this.lastError = undefined
      this.attemptDone()
    })
    owned.on('reconnecting', () => this.attemptStarted())
    this.attemptStarted()
    owned.connect().catch(() => {
      // Reported through 'error'; node-redis keeps reconnecting until close().
    })
  }

  get(key: string): Promise<SessionRecord | null> {
    return this.run('get', async (send, now) => {
      if (!isStoreKey(key)) return null
      return this.read(send, key, now)
    })
  }

  create(record: SessionRecord): Promise<boolean> {
    return this.run('create', async (send, now) => {
      const key = this.recordKey(record.key)
      if (record.userId != null) await this.indexAdd(send, record.userId, record, now)
      return (await this.eval(send, CREATE, key, [...this.times(now), ...recordArgs(record)])) === 1
    })
  }

  update(record: SessionRecord, expectedVersion: number): Promise<boolean> {
    return this.run('update', async (send, now) => {
      const key = this.recordKey(record.key)
      const args = (indexed: string) => [
        ...this.times(now),
        String(expectedVersion),
        indexed,
        ...recordArgs(record),
      ]
      const reply = await this.eval(send, UPDATE, key, args('0'))
      if (reply !== -1) return reply === 1
      // The record would appear under a user whose index may not cover it: index first, then write.
      await this.indexAdd(send, record.userId as string, record, now)
      return (await this.eval(send, UPDATE, key, args('1'))) === 1
    })
  }

  touch(key: string, lastSeenAt: number, idleExpiresAt: number): Promise<void> {
    return this.run('touch', async (send, now) => {
      if (!isStoreKey(key)) return
      await this.eval(send, TOUCH, this.sessionKey(key), [
        ...this.times(now),
        String(lastSeenAt),
        String(idleExpiresAt),
      ])
    })
  }

  destroy(key: string): Promise<void> {
    return this.run('destroy', async (send, now) => {
      if (!isStoreKey(key)) return
      const reply = await this.eval(send, DESTROY, this.sessionKey(key), [String(now)])
      const [absolute, userId] = Array.isArray(reply) ? reply.map(text) : []
      if (typeof userId === 'string') await this.indexRemove(send, userId, [[key, absolute ?? '0']])
    })
  }

  listByUser(userId: string): Promise<SessionRecord[]> {
    return this.run('listByUser', async (send, now) => {
      const members = await this.indexList(send, userId, now)
      const records = await Promise.all(members.map(({ key }) => this.readRaw(send, key)))
      const live: SessionRecord[] = []
      const dead: [string, string][] = []
      records.forEach((fields, n) => {
        const { key } = members[n] as IndexMember
        const record = fields && toRecord(key, fields, now)
        if (record) {
          if (record.userId === userId) live.push(record)
        } else if (fields && this.isGone(fields, now)) {
          dead.push([key, fields[5] as string])
        }
      })
      if (dead.length > 0) await this.indexRemove(send, userId, dead)
      return live
    })
  }

  /**
   * Deletes every record and tombstone whose expiry has passed by the store's clock (Redis would free
   * them itself `clockSkewMs` later), and drops user-index members that aged out; resolves how many
   * records it deleted. It walks every key of the prefix with `SCAN` (on every master of a cluster),
   * so it costs a pass over the keyspace: Redis needs no scheduled prune, this is for tools and tests.
   */
  prune(): Promise<number> {
    return this.run('prune', async (send, now) => {
      let removed = 0
      for (const node of await this.nodes()) {
        for await (const keys of this.scan(node, this.sessionPattern(), 'hash')) {
          const replies = await Promise.all(keys.map((key) => this.eval(send, PRUNE, key, [String(now)])))
          removed += replies.filter((reply) => reply === 1).length
        }
        for await (const keys of this.scan(node, `${this.prefix}u:{*}`, 'zset')) {
          const cutoff = String(now - this.clockSkewMs)
          await Promise.all(keys.map((key) => send(key, ['ZREMRANGEBYSCORE', key, '-inf', cutoff])))
        }
      }
      return removed
    })
  }

  /** Counts live records with `SCAN` over the prefix (every master of a cluster): one pass over the keyspace. */
  count(): Promise<number> {
    return this.run('count', async (send, now) => {
      let live = 0
      for (const node of await this.nodes()) {
        const seen = new Set<string>()
        for await (const keys of this.scan(node, this.sessionPattern(), 'hash')) {
          const fresh = keys.filter((key) => !seen.has(key) && seen.add(key))
          const states = await Promise.all(
            fresh.map(async (key) => texts(await send(key, ['HMGET', key, 'i', 'a', 't']))),
          )
          for (const [i, a, t] of states) if (!t && isLive(i, a, now)) live++
        }
      }
      return live
    })
  }

  /**
   * Every live record, found with `SCAN` over the prefix (every master of a cluster) and read a batch
   * at a time. Records written during the walk may or may not be seen; none is seen twice.
   */
  async *list(): AsyncIterable<SessionRecord> {
    const nodes = await this.run('list', async () => this.nodes())
    for (const node of nodes) {
      const seen = new Set<string>()
      const pages = this.scan(node, this.sessionPattern(), 'hash')
      for (;;) {
        const page = await this.run('list', async (send, now) => {
          const next = await pages.next()
          if (next.done) return undefined
          const fresh = next.value.filter((key) => !seen.has(key) && seen.add(key))
          const records = await Promise.all(
            fresh.map((sessionKey) => {
              // `<prefix>s:{<store key>}`: the store key sits between the braces.
              const key = sessionKey.slice(this.prefix.length + 3, -1)
              return this.read(send, key, now)
            }),
          )
          return records.filter((record): record is SessionRecord => record !== null)
        })
        if (page === undefined) break
        yield* page
      }
    }
  }

  /**
   * Sets the prefix up: writes its marker key, `<prefix>schema`, holding the layout version, unless it
   * is there (whatever `createSchema` says). `latchkey migrate` runs it; a store that may create
   * (`createSchema`, the default) does the same on its first operation.
   */
  runMigration(): Promise<RedisMigrationReport> {
    return this.run(
      'migrate',
      async (send) => {
        const key = this.markerKey()
        const set = await send(key, ['SET', key, String(REDIS_LAYOUT_VERSION), 'NX'])
        const found = set === null ? text(await send(key, ['GET', key])) : null
        this.layout = Promise.resolve()
        this.layoutReady = true
        const from = found === null ? 0 : Number(found)
        return {
          prefix: this.prefix,
          key,
          outcome: set === null ? 'current' : 'created',
          from: Number.isFinite(from) ? from : 0,
          to: Math.max(REDIS_LAYOUT_VERSION, Number.isFinite(from) ? from : 0),
        }
      },
      false,
    )
  }

  /** {@link runMigration}, without the report. */
  async migrate(): Promise<void> {
    await this.runMigration()
  }

  /**
   * Closes the client the store created from `url` (waiting up to `commandTimeoutMs` for replies in
   * flight); a client you passed stays open. Later calls reject with `StoreError`. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.evictionCheck) {
      this.evictionCheck.cancel.abort()
      await this.evictionCheck.done
    }
    const owned = this.owned
    if (!owned) return
    let timer: NodeJS.Timeout | undefined
    try {
      if (!owned.isReady) {
        owned.destroy()
        return
      }
      const graceful = owned.close().then(() => true)
      const late = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), this.commandTimeoutMs)
      })
      if (!(await Promise.race([graceful, late]))) owned.destroy()
    } catch (error) {
      // Already closed underneath (by node-redis itself); nothing is left to release.
      if (owned.isOpen) throw toStoreError('RedisStore', 'close', error)
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * Runs one operation: the closed check, the wait for a connection attempt in progress (at most
   * `commandTimeoutMs`), the prefix's marker (once: see {@link ensureLayout}) unless `layout` is
   * false, and the operation itself; any failure becomes a `StoreError`. The first operation that
   * succeeds starts the eviction check, which the operation does not wait for.
   */
  private async run<T>(
    operation: string,
    body: (send: Send, now: number) => Promise<T>,
    layout = true,
  ): Promise<T> {
    const result = await storeOperation('RedisStore', operation, this.closed, async () => {
      const attempt = this.attempt
      if (attempt) await this.withDeadline(() => attempt)
      try {
        if (layout && !this.layoutReady) await this.ensureLayout()
        return await body(this.send, this.clock.now())
      } catch (error) {
        // Not connected because the server refused (a wrong password, no such DB index): its reason,
        // not "the client is offline".
        if (this.owned?.isReady === false && isServerRefusal(this.lastError)) throw this.lastError
        throw error
      }
    })
    if (!this.evictionCheck && !this.closed) {
      const cancel = new AbortController()
      this.evictionCheck = { done: this.checkEviction(cancel.signal), cancel }
    }
    return result
  }

  /**
   * Once per store: with `createSchema`, writes the prefix's marker unless it is there; without, checks
   * that it is there, or that the prefix holds a session (a deployment from before the marker), else
   * throws the `ERR_LATCHKEY_NO_SCHEMA` error. A failure is forgotten, so the next operation tries again.
   */
  private ensureLayout(): Promise<void> {
    this.layout ??= this.checkLayout().then(
      () => {
        this.layoutReady = true
      },
      (error: unknown) => {
        this.layout = undefined
        throw error
      },
    )
    return this.layout
  }

  private async checkLayout(): Promise<void> {
    const key = this.markerKey()
    if (this.createSchema) {
      await this.send(key, ['SET', key, String(REDIS_LAYOUT_VERSION), 'NX'])
      return
    }
    if (Number(await this.send(key, ['EXISTS', key])) === 1) return
    for (const node of await this.nodes()) {
      for await (const _ of this.scan(node, this.sessionPattern(), 'hash')) return
    }
    throw missingSchema(
      `no such prefix ${this.prefix} in Redis (no key ${key}, no session): run \`latchkey migrate\` to set it up, or check prefix`,
    )
  }

  /** The key that marks the prefix as set up, holding the layout version. */
  private markerKey(): string {
    return `${this.prefix}schema`
  }

  /**
   * Asks every node (every master of a cluster) for `maxmemory` and `maxmemory-policy`, and warns once
   * if one of them may evict keys. Best-effort: it never rejects, and any failure (CONFIG refused,
   * renamed or disabled, a timeout, a node gone, `cancel` aborted by `close()`) ends it silently.
   * Started after an operation succeeded, so the connection was up a moment ago.
   */
  private async checkEviction(cancel: AbortSignal): Promise<void> {
    try {
      const nodes = await this.nodes()
      if (cancel.aborted) return
      const configs = await Promise.all(
        nodes.map(async (node) => {
          // Two commands, not one CONFIG GET of both: Redis 6.2 takes a single parameter.
          const get = async (name: string) =>
            configValue(
              await this.withDeadline(
                (options) => node.sendCommand(['CONFIG', 'GET', name], options),
                cancel,
              ),
              name,
            )
          const [maxmemory, policy] = await Promise.all([get('maxmemory'), get('maxmemory-policy')])
          return { maxmemory, policy }
        }),
      )
      const evicting = configs.filter(
        ({ maxmemory, policy }) =>
          policy !== null &&
          policy !== '' &&
          policy.toLowerCase() !== NO_EVICTION &&
          isFiniteNumber(maxmemory) &&
          Number(maxmemory) !== 0,
      )
      if (evicting.length === 0 || cancel.aborted) return
      const policies = [...new Set(evicting.map(({ policy }) => policy as string))].join(', ')
      const where = this.cluster ? ` on ${evicting.length} of ${configs.length} cluster masters` : ''
      this.warn(
        `Redis maxmemory-policy is ${policies}${where} with maxmemory set: when Redis is full it may ` +
          'evict a session tombstone or a user index, which can undo a logout or a "sign out everywhere" ' +
          `(revoked sessions come back, live ones are missed). Use noeviction: CONFIG SET maxmemory-policy ` +
          `${NO_EVICTION} (and CONFIG REWRITE), or maxmemory-policy ${NO_EVICTION} in redis.conf.`,
      )
    } catch {
      // Best-effort: CONFIG is often renamed or refused (managed Redis, ACLs); say nothing.
    }
  }

  /**
   * Runs `call` with a deadline of `commandTimeoutMs`: at the deadline it rejects, and the signal it
   * was handed aborts, so that node-redis drops the command if it has not been sent yet. `cancel`
   * aborting does the same at once.
   */
  private async withDeadline<T>(
    call: (options: RedisCommandOptions) => Promise<T>,
    cancel?: AbortSignal,
  ): Promise<T> {
    const controller = new AbortController()
    let timer: NodeJS.Timeout | undefined
    let cancelled = () => {}
    const deadline = new Promise<never>((_, reject) => {
      const stop = (reason: string) => {
        controller.abort()
        reject(new Error(reason))
      }
      timer = setTimeout(
        () => stop(`no answer from Redis within ${this.commandTimeoutMs} ms`),
        this.commandTimeoutMs,
      )
      cancelled = () => stop('cancelled')
      if (cancel?.aborted) cancelled()
      cancel?.addEventListener('abort', cancelled)
    })
    const pending = call({ abortSignal: controller.signal })
    try {
      return await Promise.race([pending, deadline])
    } finally {
      clearTimeout(timer)
      cancel?.removeEventListener('abort', cancelled)
      pending.catch(() => {})
    }
  }

  /** One command, to the node serving `key` on a cluster, within `commandTimeoutMs`. */
  private readonly send: Send = (key, args) => {
    const { cluster } = this
    if (cluster) return this.withDeadline((options) => cluster.sendCommand(key, false, args, options))
    const client = this.client as RedisClientLike
    return this.withDeadline((options) => client.sendCommand(args, options))
  }

  private attemptStarted(): void {
    if (this.attempt) return
    this.attempt = new Promise<void>((resolve) => {
      this.attemptDone = () => {
        this.attempt = undefined
        this.attemptDone = () => {}
        resolve()
      }
    })
  }

  private attemptDone: () => void = () => {}

  /** `EVALSHA`, falling back to `EVAL` (which caches the script again) when the server lost it. */
  private async eval(send: Send, script: LuaScript, key: string, args: string[]): Promise<unknown> {
    try {
      return await send(key, ['EVALSHA', script.sha, '1', key, ...args])
    } catch (error) {
      if (!String((error as { message?: unknown })?.message).startsWith('NOSCRIPT')) throw error
      return send(key, ['EVAL', script.source, '1', key, ...args])
    }
  }

  private times(now: number): [string, string] {
    return [String(now), String(this.clockSkewMs)]
  }

  private sessionKey(key: string): string {
    return `${this.prefix}s:{${key}}`
  }

  private userKey(userId: string): string {
    return `${this.prefix}u:{${encodeUserId(userId)}}`
  }

  /** The session key of a record about to be written; a malformed store key is refused. */
  private recordKey(key: string): string {
    if (!isStoreKey(key)) {
      throw new Error('a store key must be 43 characters of base64url')
    }
    return this.sessionKey(key)
  }

  /** `SCAN` pattern of exactly the session keys of this prefix (not those of a longer prefix). */
  private sessionPattern(): string {
    return `${this.prefix}s:{${'?'.repeat(43)}}`
  }

  private async read(send: Send, key: string, now: number): Promise<SessionRecord | null> {
    const fields = await this.readRaw(send, key)
    return fields && toRecord(key, fields, now)
  }

  /** The record's {@link FIELDS}, or `null` when there is no hash under the key. */
  private async readRaw(send: Send, key: string): Promise<(string | null)[] | null> {
    const sessionKey = this.sessionKey(key)
    const fields = texts(await send(sessionKey, ['HMGET', sessionKey, ...FIELDS]))
    return fields.every((field) => field === null) ? null : fields
  }

  /** A tombstone, or a record expired for every clock within the skew: its index member may go. */
  private isGone(fields: (string | null)[], now: number): boolean {
    const [, , , , i, a, , t] = fields
    if (!isFiniteNumber(a)) return false
    return t === '1' || !isLive(i, a, now - this.clockSkewMs)
  }

  private async indexAdd(send: Send, userId: string, record: SessionRecord, now: number): Promise<void> {
    const key = this.userKey(userId)
    await this.eval(send, INDEX_ADD, key, [...this.times(now), String(record.absoluteExpiresAt), record.key])
  }

  private async indexList(send: Send, userId: string, now: number): Promise<IndexMember[]> {
    const key = this.userKey(userId)
    const flat = texts(await this.eval(send, INDEX_LIST, key, [String(now - this.clockSkewMs), String(now)]))
    const members: IndexMember[] = []
    for (let n = 0; n + 1 < flat.length; n += 2) {
      const member = flat[n]
      if (member && isStoreKey(member)) members.push({ key: member, score: flat[n + 1] ?? '0' })
    }
    return members
  }

  /** Removes `[store key, bound]` members whose score is at most their bound; failures are left for later. */
  private async indexRemove(send: Send, userId: string, members: [string, string][]): Promise<void> {
    try {
      await this.eval(send, INDEX_REMOVE, this.userKey(userId), members.flat())
    } catch {
      // Housekeeping only: a member left behind is filtered by every read and ages out by its score.
    }
  }

  /** The nodes to `SCAN`: the client itself, or every master of the cluster. */
  private async nodes(): Promise<RedisClientLike[]> {
    const { cluster } = this
    if (!cluster) return [this.client as RedisClientLike]
    const masters = [...cluster.masters]
    if (masters.length === 0) throw new Error('the cluster knows no master (not connected, or closed)')
    return Promise.all(masters.map((master) => cluster.nodeClient(master)))
  }

  /** Pages of keys matching `pattern` on one node; a key may come twice (SCAN's own guarantee). */
  private async *scan(node: RedisClientLike, pattern: string, type: string): AsyncGenerator<string[]> {
    let cursor = '0'
    do {
      const args = ['SCAN', cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT, 'TYPE', type]
      const answer = array(await this.withDeadline((options) => node.sendCommand(args, options)))
      cursor = text(answer[0]) ?? '0'
      const keys = texts(answer[1]).filter((key) => key !== null)
      if (keys.length > 0) yield keys
    } while (cursor !== '0')
  }
}

interface IndexMember {
  key: string
  score: string
}

/**
 * A user ID as it appears in its index key: UTF-8 bytes, letters, digits and `_ . @ -` as they are,
 * every other byte as `%XX`. One to one, ASCII, and never a brace, so the hash tag stays the user's.
 */
function encodeUserId(userId: string): string {
  let out = ''
  for (const byte of Buffer.from(userId, 'utf8')) {
    const char = String.fromCharCode(byte)
    out += /[A-Za-z0-9_.@-]/.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

/**
 * The value of `name` in a `CONFIG GET` reply: a flat `[name, value, …]` array (RESP2), or a map
 * (RESP3: a `Map`, an object, or an array of pairs, by the client's type mapping); `null` if absent.
 */
function configValue(reply: unknown, name: string): string | null {
  let pairs: [unknown, unknown][]
  if (reply instanceof Map) pairs = [...reply.entries()]
  else if (Array.isArray(reply)) {
    pairs = reply.every(Array.isArray)
      ? (reply as [unknown, unknown][])
      : reply.flatMap((key, n) => (n % 2 === 0 ? [[key, reply[n + 1]] as [unknown, unknown]] : []))
  } else if (reply !== null && typeof reply === 'object') pairs = Object.entries(reply)
  else return null
  for (const [key, value] of pairs) if (text(key)?.toLowerCase() === name) return text(value)
  return null
}

function isCluster(client: RedisClientLike | RedisClusterLike): client is RedisClusterLike {
  const candidate = client as Partial<RedisClusterLike>
  return typeof candidate.nodeClient === 'function' && 'masters' in candidate
}

/** The script arguments of a record after `now, skew`: v, c, l, i, a, p, hasUser, userId. */
function recordArgs(record: SessionRecord): string[] {
  return [
    String(record.version),
    String(record.createdAt),
    String(record.lastSeenAt),
    String(record.idleExpiresAt),
    String(record.absoluteExpiresAt),
    record.payload,
    record.userId == null ? '0' : '1',
    record.userId ?? '',
  ]
}

/** A reply as text: strings as they are, buffers decoded as UTF-8, anything else `null`. */
function text(value: unknown): string | null {
  if (typeof value === 'string') return value
  if (typeof value === 'number') return String(value)
  if (value instanceof Uint8Array) return Buffer.from(value).toString('utf8')
  return null
}

/** An array reply, or `[]`. */
function array(value: unknown): unknown[] {
  return Array.isArray(value) ? value : []
}

/** An array reply as text, whatever the client's type mapping. */
function texts(value: unknown): (string | null)[] {
  return array(value).map(text)
}

function isFiniteNumber(value: string | null | undefined): value is string {
  return value !== null && value !== undefined && value !== '' && Number.isFinite(Number(value))
}

function isLive(i: string | null | undefined, a: string | null | undefined, now: number): boolean {
  return (
    isFiniteNumber(i) &&
    isFiniteNumber(a) &&
    now < expiresAt({ idleExpiresAt: Number(i), absoluteExpiresAt: Number(a) })
  )
}

/** The live record in `fields` ({@link FIELDS} order), or `null` (tombstone, expired, not a record). */
function toRecord(key: string, fields: (string | null)[], now: number): SessionRecord | null {
  const [v, u, c, l, i, a, p, t] = fields
  if (t || !isLive(i, a, now) || !isFiniteNumber(v) || !isFiniteNumber(c) || !isFiniteNumber(l)) return null
  if (typeof p !== 'string') return null
  return {
    key,
    version: Number(v),
    userId: u ?? null,
    createdAt: Number(c),
    lastSeenAt: Number(l),
    idleExpiresAt: Number(i),
    absoluteExpiresAt: Number(a),
    payload: p,
  }
}
