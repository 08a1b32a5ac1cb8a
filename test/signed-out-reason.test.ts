/**
 * "Why was I signed out?" (`session.endedBecause`, lifecycle/notice.ts) through the manager, on every
 * bundled store: memory, files and SQLite always; PostgreSQL, MariaDB and Redis when their servers
 * answer (services.ts). Each end the user did not ask for is told to the next load of the ended
 * cookie, once; a logout, a forged cookie and the other devices are told nothing.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { createClient } from 'redis'
import { afterAll, afterEach, beforeEach, expect, test } from 'vitest'
import { ManualClock } from '../src/core/clock.js'
import { generateKey } from '../src/core/crypto.js'
import { generateId, storeKeyOf } from '../src/core/id.js'
import { noticeKeyOf } from '../src/core/lifecycle/notice.js'
import { createSessionManager, type SessionManager } from '../src/core/manager.js'
import type { SessionManagerOptions } from '../src/core/options.js'
import type { SessionStore } from '../src/core/store.js'
import { isClosableStore, isCountableStore, isPrunableStore } from '../src/core/store.js'
import { openStore } from '../src/stores/index.js'
import { MemoryStore } from '../src/stores/memory/index.js'
import { pausable } from './support/pausing-store.js'
import { describeWithService, SERVICE_URLS, type ServiceStatus, serverServices } from './support/services.js'

const MINUTE = 60_000
const KEYS = [generateKey()]
const run = `notice_${randomBytes(4).toString('hex')}`
const dir = mkdtempSync(join(tmpdir(), 'latchkey-notice-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

interface Backend {
  readonly name: string
  readonly status: ServiceStatus
  open(clock: ManualClock, label: string): Promise<SessionStore>
  cleanup?(label: string): Promise<void>
  /** Frees one record behind the store's back, as the backend's own expiry does (Redis's TTL). */
  forget?(label: string, key: string): Promise<void>
  /** How long the backend keeps one record by its own clock before freeing it (Redis's PTTL), in ms. */
  ttlOf?(label: string, key: string): Promise<number>
}

const LOCAL: ServiceStatus = { name: 'local', available: true }
const { postgres, mariadb, redis } = await serverServices()

const tableOf = (label: string) => `latchkey_${run}_${label}`

const BACKENDS: Backend[] = [
  { name: 'MemoryStore', status: LOCAL, open: async (clock) => new MemoryStore({ clock }) },
  {
    name: 'FileStore',
    status: LOCAL,
    open: (clock, label) =>
      openStore(`file:${join(dir, label)}`, { storeOptions: { clock, pruneIntervalMs: 0 } }),
  },
  {
    name: 'SqliteStore',
    status: LOCAL,
    open: (clock, label) =>
      openStore(`sqlite:${join(dir, `${label}.db`)}`, { storeOptions: { clock, pruneIntervalMs: 0 } }),
  },
  {
    name: 'PostgresStore',
    status: postgres,
    open: (clock, label) =>
      openStore(SERVICE_URLS.postgres, {
        storeOptions: { clock, tableName: tableOf(label), pruneIntervalMs: 0 },
      }),
    async cleanup(label) {
      const client = new pg.Client({ connectionString: SERVICE_URLS.postgres })
      await client.connect()
      try {
        await client.query(`DROP TABLE IF EXISTS "${tableOf(label)}"`)
        await client
          .query('DELETE FROM latchkey_schema WHERE table_name = $1', [tableOf(label)])
          .catch(() => {})
      } finally {
        await client.end()
      }
    },
  },
  {
    name: 'MySqlStore',
    status: mariadb,
    open: (clock, label) =>
      openStore(SERVICE_URLS.mysql, {
        storeOptions: { clock, tableName: tableOf(label), pruneIntervalMs: 0 },
      }),
    async cleanup(label) {
      const connection = await mysql.createConnection({ uri: SERVICE_URLS.mysql })
      try {
        await connection.query(`DROP TABLE IF EXISTS \`${tableOf(label)}\``)
        await connection
          .query('DELETE FROM latchkey_schema WHERE table_name = ?', [tableOf(label)])
          .catch(() => {})
      } finally {
        await connection.end()
      }
    },
  },
  {
    name: 'RedisStore',
    status: redis,
    open: (clock, label) =>
      openStore(SERVICE_URLS.redis, { storeOptions: { clock, prefix: `${run}:${label}:` } }),
    async cleanup(label) {
      const client = createClient({ url: SERVICE_URLS.redis })
      client.on('error', () => {})
      await client.connect()
      try {
        for await (const keys of client.scanIterator({ MATCH: `${run}:${label}:*`, COUNT: 1000 })) {
          if (keys.length > 0) await client.del(keys)
        }
      } finally {
        await client.close()
      }
    },
    async ttlOf(label, key) {
      const client = createClient({ url: SERVICE_URLS.redis })
      client.on('error', () => {})
      await client.connect()
      try {
        return Number(await client.pTTL(`${run}:${label}:s:{${key}}`))
      } finally {
        await client.close()
      }
    },
    async forget(label, key) {
      const client = createClient({ url: SERVICE_URLS.redis })
      client.on('error', () => {})
      await client.connect()
      try {
        expect(await client.del(`${run}:${label}:s:{${key}}`)).toBe(1)
      } finally {
        await client.close()
      }
    },
  },
]

for (const backend of BACKENDS) {
  describeWithService(backend.status, `session.endedBecause on ${backend.name}`, () => {
    let clock: ManualClock
    let store: SessionStore
    let manager: SessionManager
    let label: string
    let count = 0
    const managers: SessionManager[] = []

    const make = (more: Partial<SessionManagerOptions> = {}) =>
      createSessionManager({ store, keys: KEYS, clock, cookie: { secure: false }, ...more })
    const load = (id: string, by = manager) => by.load({ cookie: `sid=${id}` })

    /** Stores a session signed in as `user` and resolves its ID. */
    async function signIn(user: string): Promise<string> {
      const session = await manager.load({})
      session.login(user)
      const { setCookie } = await manager.commit(session)
      const id = /^sid=([^;]+)/.exec(setCookie ?? '')?.[1]
      if (id === undefined) throw new Error(`no session cookie in ${setCookie}`)
      return id
    }

    /** The handle of the session `id`. */
    async function handleOf(id: string): Promise<string> {
      return manager.handleOf(await load(id)) as string
    }

    beforeEach(async () => {
      label = `t${++count}`
      clock = new ManualClock()
      store = await backend.open(clock, label)
      manager = make()
    })
    afterEach(async () => {
      if (isClosableStore(store)) await store.close()
      for (const extra of managers.splice(0)) await extra.close().catch(() => {})
      await backend.cleanup?.(label)
    })

    test('revoked by handle: the next load of that cookie says revoked, the one after nothing; the other device is told nothing', async () => {
      const laptop = await signIn('ann')
      const phone = await signIn('ann')
      expect(await manager.revoke(await handleOf(laptop))).toBe(true)
      const told = await load(laptop)
      expect(told.isNew).toBe(true)
      expect(told.endedBecause).toBe('revoked')
      expect((await load(laptop)).endedBecause).toBeNull()
      const other = await load(phone)
      expect(other.isNew).toBe(false)
      expect(other.endedBecause).toBeNull()
      // The notice is not a session: not in the user index, not listed.
      expect((await manager.listUserSessions('ann')).length).toBe(1)
    })

    test('sign out everywhere: each other device is told once; the one that asked, nothing', async () => {
      const laptop = await signIn('ann')
      const tablet = await signIn('ann')
      const phone = await signIn('ann')
      expect(await manager.revokeUserSessions('ann', { except: await handleOf(phone) })).toBe(2)
      for (const id of [laptop, tablet]) {
        expect((await load(id)).endedBecause).toBe('signed-out-everywhere')
        expect((await load(id)).endedBecause).toBeNull()
      }
      expect((await load(phone)).endedBecause).toBeNull()
    })

    test('idle timeout found on load (the timeouts shortened since the session was stored) says idle-timeout, once', async () => {
      // The store forgets a record at its stored deadline; the core learns of a timeout only while the
      // store still returns the record: here, because this manager's idle timeout is shorter.
      const id = await signIn('ann')
      const shorter = make({ idleTimeoutMs: 10 * MINUTE })
      managers.push(shorter)
      clock.advance(11 * MINUTE)
      expect((await load(id, shorter)).endedBecause).toBe('idle-timeout')
      expect((await load(id, shorter)).endedBecause).toBeNull()
    })

    test('absolute timeout found on load says absolute-timeout, once', async () => {
      const id = await signIn('ann')
      const shorter = make({ idleTimeoutMs: 10 * MINUTE, absoluteTimeoutMs: 10 * MINUTE })
      managers.push(shorter)
      clock.advance(11 * MINUTE)
      expect((await load(id, shorter)).endedBecause).toBe('absolute-timeout')
      expect((await load(id, manager)).endedBecause).toBeNull()
    })

    test('a record sealed with a key no longer configured says key-retired, once; a damaged one nothing', async () => {
      const id = await signIn('ann')
      const rekeyed = make({ keys: [generateKey()] })
      managers.push(rekeyed)
      expect((await load(id, rekeyed)).endedBecause).toBe('key-retired')
      expect((await load(id, rekeyed)).endedBecause).toBeNull()

      const damaged = await signIn('bob')
      const key = storeKeyOf(damaged)
      const record = await store.get(key)
      if (record === null) throw new Error('no record')
      const payload = `${record.payload.slice(0, -2)}${record.payload.endsWith('AA') ? 'BB' : 'AA'}`
      expect(await store.update({ ...record, version: record.version + 1, payload }, record.version)).toBe(
        true,
      )
      expect((await load(damaged)).endedBecause).toBeNull()
      // Only the pending notice of a signed-in session (version 1) is there; no reason was left.
      expect((await store.get(noticeKeyOf(key)))?.version).toBe(1)
    })

    test('a logout of its own leaves no notice', async () => {
      const id = await signIn('ann')
      const session = await load(id)
      session.logout()
      await manager.commit(session)
      expect((await load(id)).endedBecause).toBeNull()
      expect(await store.get(noticeKeyOf(storeKeyOf(id)))).toBeNull()
    })

    test('a forged cookie is told nothing and leaves nothing behind', async () => {
      await signIn('ann')
      const before = isCountableStore(store) ? await store.count() : null
      const forged = generateId()
      const session = await load(forged)
      expect(session.isNew).toBe(true)
      expect(session.endedBecause).toBeNull()
      expect(await store.get(noticeKeyOf(storeKeyOf(forged)))).toBeNull()
      if (before !== null)
        expect(await (store as SessionStore & { count(): Promise<number> }).count()).toBe(before)
    })

    test('the synchronous load leaves a waiting notice to load, so every adapter tells it', async () => {
      const laptop = await signIn('ann')
      expect(await manager.revoke(await handleOf(laptop))).toBe(true)
      expect(manager.loadSync({ cookie: `sid=${laptop}` })).toBeNull()
      expect((await load(laptop)).endedBecause).toBe('revoked')
    })

    test('two racing loads with the same revoked cookie: exactly one is told', async () => {
      const laptop = await signIn('ann')
      expect(await manager.revoke(await handleOf(laptop))).toBe(true)
      const other = make()
      managers.push(other)
      const loads = await Promise.all([load(laptop), load(laptop, other), load(laptop)])
      expect(loads.map((session) => session.endedBecause).filter((reason) => reason !== null)).toEqual([
        'revoked',
      ])
    })

    test('a timeout after the store freed the record (prune, or the backend expiring it) is still told, once', async () => {
      const id = await signIn('ann')
      const key = storeKeyOf(id)
      // The pending notice left at sign-in is no session and holds none of its data.
      const pending = await store.get(noticeKeyOf(key))
      const session = await store.get(key)
      // Nothing but the word and the absolute deadline, which the session's record shows in clear too.
      expect(pending?.payload).toBe(`~notice:timeout:${session?.absoluteExpiresAt}`)
      expect(pending?.createdAt).toBe(session?.createdAt)
      expect(pending?.userId).toBeNull()
      expect(manager.inspect(pending as NonNullable<typeof pending>)).toBe('notice')
      expect(JSON.stringify(pending)).not.toContain('ann')
      if (backend.ttlOf) {
        // Redis frees the session's hash by its TTL, and keeps the notice's a week longer.
        const sessionTtl = await backend.ttlOf(label, key)
        expect(sessionTtl).toBeGreaterThan(0)
        expect(await backend.ttlOf(label, noticeKeyOf(key))).toBeGreaterThan(
          sessionTtl + 6 * 24 * 60 * MINUTE,
        )
      }
      clock.advance(31 * MINUTE)
      expect(await store.get(key)).toBeNull()
      if (backend.forget) await backend.forget(label, key)
      if (isPrunableStore(store)) await store.prune()
      expect((await load(id)).endedBecause).toBe('idle-timeout')
      expect((await load(id)).endedBecause).toBeNull()
    })

    test('a timeout is told with keys other than those of the session: its pending notice needs none', async () => {
      const id = await signIn('ann')
      const rekeyed = make({ keys: [generateKey()] })
      managers.push(rekeyed)
      clock.advance(31 * MINUTE)
      expect((await load(id, rekeyed)).endedBecause).toBe('idle-timeout')
      expect((await load(id, manager)).endedBecause).toBeNull()
    })

    test('an end in progress is never told as a timeout: its reason is in place before the record reads missing', async () => {
      const laptop = await signIn('ann')
      const key = storeKeyOf(laptop)
      const paused = pausable(store)
      const revoking = make({ store: paused.store })
      managers.push(revoking)
      // Hold the end between its compare-and-set of the ended payload and the notice of its reason.
      const held = paused.pause('create', { match: ([record]) => record.key === noticeKeyOf(key) })
      const revoked = revoking.revoke(await handleOf(laptop))
      await held.reached
      const meanwhile = await load(laptop)
      expect(meanwhile.isNew).toBe(true)
      expect(meanwhile.endedBecause).toBeNull()
      held.release()
      expect(await revoked).toBe(true)
      expect((await load(laptop)).endedBecause).toBe('revoked')
      expect((await load(laptop)).endedBecause).toBeNull()
    })

    test('a notice is no session: inspect names it, and it never reaches the user index', async () => {
      const laptop = await signIn('ann')
      expect(await manager.revoke(await handleOf(laptop))).toBe(true)
      const notice = await store.get(noticeKeyOf(storeKeyOf(laptop)))
      expect(notice?.userId).toBeNull()
      expect(manager.inspect(notice as NonNullable<typeof notice>)).toBe('notice')
      expect(JSON.stringify(notice)).not.toContain('ann')
    })
  })
}
