/**
 * The store conformance suite: every scenario of the store contract in `src/core/store.ts`, written
 * once and run against every store (bundled or third-party).
 *
 * It is runner-agnostic. Assertions use `node:assert/strict`; {@link storeScenarios} are plain async
 * functions, and {@link defineStoreConformance} registers them through whatever `describe`/`test`
 * pair it is handed (vitest, node:test, mocha, jest).
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import { ManualClock } from '../core/clock.js'
import { generateKey } from '../core/crypto.js'
import { generateId, storeKeyOf } from '../core/id.js'
import { noticeKeyOf } from '../core/lifecycle/notice.js'
import { createSessionManager, type SessionManager } from '../core/manager.js'
import type { SessionManagerOptions } from '../core/options.js'
import {
  expiresAt,
  isClosableStore,
  isCountableStore,
  isListableStore,
  isMigratableStore,
  isPrunableStore,
  isSyncStore,
  isUserIndexedStore,
  type SessionRecord,
  type SessionStore,
} from '../core/store.js'

/** How the suite builds and tears down the store under test. */
export interface StoreConformanceOptions<S extends SessionStore = SessionStore> {
  /** Shown in the suite name: `${name} conformance`. */
  name: string
  /** A fresh, empty store that takes its time from `clock`. Called once or more per scenario. */
  createStore(clock: ManualClock): S | Promise<S>
  /** Releases a store after a scenario. Default: `close()` if the store is closable. */
  disposeStore?(store: S): Promise<void>
  /**
   * A store whose backend is down (server stopped, port closed, directory missing, database closed
   * underneath it, ...), so that its real failure path runs. The "backend down" scenario calls every
   * contract method and every optional capability the store has on it, and each must return a
   * promise (not throw synchronously) that rejects with a `StoreError`: `code` `'ERR_LATCHKEY_STORE'`
   * (checked by code, so a `StoreError` from another installed copy of latchkey counts the same),
   * `operation` naming the method, a non-empty `store` and the backend's error kept as `cause`.
   *
   * Give it: a store whose failures cannot be checked should not pass. When it is omitted,
   * {@link defineStoreConformance} registers the scenario as skipped (with a name saying why), and
   * under `CI=true` as a test that fails, naming the store and saying what to provide. Run directly,
   * `storeScenarios['backend down rejects with StoreError']` rejects without it.
   */
  createUnavailableStore?(clock: ManualClock): S | Promise<S>
  /**
   * Optional: a store whose backend is down until `restore()` is called (a directory created later,
   * a server started later). The "recovers when the backend is back" scenario checks that a create
   * while down rejects with a `StoreError` and did not happen, and that after `restore()` a create/get
   * round trip works on the same store object. When omitted, that scenario is skipped (also under CI).
   */
  createRecoveringStore?(clock: ManualClock): RecoveringStore<S> | Promise<RecoveringStore<S>>
}

/** What {@link StoreConformanceOptions.createRecoveringStore} returns. */
export interface RecoveringStore<S extends SessionStore = SessionStore> {
  /** A store whose backend is down until {@link restore} is called. */
  store: S
  /** Brings the backend back (creates the directory, starts the server). */
  restore(): Promise<void> | void
}

/** One scenario of the suite: resolves when the store conforms, rejects with an assertion error otherwise. */
export type StoreScenario = <S extends SessionStore>(options: StoreConformanceOptions<S>) => Promise<void>

/** The slice of a test runner the suite needs. vitest, node:test, mocha and jest all fit. */
export interface ConformanceRunner {
  describe(name: string, fn: () => void): void
  test: ConformanceTestFunction
}

/** `test(name, fn)`, with `test.skip` used for scenarios that cannot run when the runner has it. */
export interface ConformanceTestFunction {
  (name: string, fn: () => Promise<void>): void
  skip?: (name: string, fn: () => Promise<void>) => void
}

const MINUTE = 60_000
const HOUR = 60 * MINUTE
/** Idle timeout of records built by {@link makeRecord}: 30 minutes. */
const IDLE_MS = 30 * MINUTE
/** Absolute timeout of records built by {@link makeRecord}: 12 hours. */
const ABSOLUTE_MS = 12 * HOUR

/** A fresh store key as the core makes them: SHA-256 of 32 random bytes, base64url (43 chars). */
export function randomStoreKey(): string {
  return createHash('sha256').update(randomBytes(32)).digest('base64url')
}

/**
 * A valid {@link SessionRecord} created at `clock.now()`: version 1, anonymous, idle deadline in
 * 30 minutes, absolute deadline in 12 hours, a random key and a short payload. `overrides` win.
 */
export function makeRecord(clock: { now(): number }, overrides: Partial<SessionRecord> = {}): SessionRecord {
  const now = clock.now()
  return {
    key: randomStoreKey(),
    version: 1,
    userId: null,
    createdAt: now,
    lastSeenAt: now,
    idleExpiresAt: now + IDLE_MS,
    absoluteExpiresAt: now + ABSOLUTE_MS,
    payload: `payload-${randomBytes(6).toString('base64url')}`,
    ...overrides,
  }
}

/** The record as written by an update from `record`: version + 1, new payload, seen now. */
function nextVersion(record: SessionRecord, clock: ManualClock, overrides: Partial<SessionRecord> = {}) {
  const now = clock.now()
  return {
    ...record,
    version: record.version + 1,
    lastSeenAt: now,
    idleExpiresAt: Math.max(record.idleExpiresAt, now + IDLE_MS),
    payload: `v${record.version + 1}-${randomBytes(6).toString('base64url')}`,
    ...overrides,
  }
}

/** Runs `body` with fresh stores made by the factory and disposes every one of them afterwards. */
async function withStores<S extends SessionStore>(
  options: StoreConformanceOptions<S>,
  body: (ctx: { store: S; clock: ManualClock; another(): Promise<S> }) => Promise<void>,
): Promise<void> {
  const clock = new ManualClock()
  const stores: S[] = []
  const another = async () => {
    const store = await options.createStore(clock)
    stores.push(store)
    return store
  }
  try {
    const store = await another()
    await body({ store, clock, another })
  } finally {
    for (const store of stores) await dispose(options, store)
  }
}

async function dispose<S extends SessionStore>(options: StoreConformanceOptions<S>, store: S): Promise<void> {
  if (options.disposeStore) await options.disposeStore(store)
  else if (isClosableStore(store)) await store.close()
}

async function mustCreate(store: SessionStore, record: SessionRecord): Promise<void> {
  assert.equal(await store.create(record), true, `create(${record.key}) on a free key must resolve true`)
}

async function assertGone(store: SessionStore, key: string, why: string): Promise<void> {
  assert.equal(await store.get(key), null, `get must be null: ${why}`)
}

async function collect(iterable: AsyncIterable<SessionRecord>): Promise<SessionRecord[]> {
  const out: SessionRecord[] = []
  for await (const record of iterable) out.push(record)
  return out
}

function sortedKeys(records: readonly SessionRecord[]): string[] {
  return records.map((record) => record.key).sort()
}

function timeoutCount(): number {
  return process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length
}

/** A payload that trips every careless encoding: quotes, backslashes, NUL, astral and combining characters. */
function nastyPayload(): string {
  return `'"\\\0\n\r\t%_*?;--/* */ \u00e9e\u0301 \u4e2d\u6587 \u{1f510}\u{1f9ea} \u2028\u2029 \uffff end`
}

/** A 64 KB payload (65 536 UTF-16 code units, no split surrogate pair) with multi-byte characters throughout. */
function largePayload(): string {
  const unit = `${randomBytes(24).toString('base64url')}\u00e9\u4e2d\u{1f510}"\\`
  const body = unit.repeat(Math.floor(65_536 / unit.length))
  return body + 'x'.repeat(65_536 - body.length)
}

/** A small seeded PRNG (mulberry32) so a failing random run can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const BACKEND_DOWN = 'backend down rejects with StoreError'
const RECOVERS = 'recovers when the backend is back'
/** The `code` of every `StoreError`, whichever copy of latchkey built it. */
const STORE_ERROR_CODE = 'ERR_LATCHKEY_STORE'

/** Why the "backend down" scenario cannot run for the store called `name`, and what to provide. */
function missingUnavailableStore(name: string): string {
  return (
    `${name}: no createUnavailableStore was given, so the conformance suite cannot check how the store ` +
    `fails. Provide createUnavailableStore(clock) returning a ${name} whose backend is down (server ` +
    'stopped, directory missing, database closed underneath it). defineStoreConformance skips this ' +
    'scenario without it, and fails it under CI=true.'
  )
}

/** A short, never-throwing description of any value, for assertion messages. */
function show(value: unknown): string {
  try {
    const text = inspect(value, { depth: 1, breakLength: Number.POSITIVE_INFINITY })
    return text.length > 300 ? `${text.slice(0, 300)}...` : text
  } catch {
    return Object.prototype.toString.call(value)
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as { then?: unknown }).then === 'function'
  )
}

/**
 * Asserts that `error` is a store error for `operation`: `code` {@link STORE_ERROR_CODE} (by code, not
 * `instanceof`, so a `StoreError` from another installed copy of latchkey is judged the same), the
 * method as `operation`, a non-empty `store` and a kept `cause`.
 */
function assertStoreError(error: unknown, operation: string, when: string): void {
  const what = `${operation} ${when}`
  assert.ok(
    typeof error === 'object' && error !== null,
    `${what} must reject with a StoreError, got ${show(error)}`,
  )
  const fields = error as { code?: unknown; operation?: unknown; store?: unknown; cause?: unknown }
  assert.equal(
    fields.code,
    STORE_ERROR_CODE,
    `${what} must reject with a StoreError (code ${STORE_ERROR_CODE}), got ${show(error)}`,
  )
  assert.equal(fields.operation, operation, `${what}: StoreError.operation must name the method`)
  assert.ok(
    typeof fields.store === 'string' && fields.store.length > 0,
    `${what}: StoreError.store must name the store, got ${show(fields.store)}`,
  )
  assert.notEqual(
    fields.cause,
    undefined,
    `${what}: StoreError.cause must keep the backend's error, got undefined`,
  )
}

/**
 * Calls `call` (one store method) and asserts it returns a promise, without throwing synchronously,
 * and that the promise rejects with a store error for `operation` (see {@link assertStoreError}).
 */
async function assertRejectsWithStoreError(
  operation: string,
  call: () => unknown,
  when: string,
): Promise<void> {
  let pending: unknown
  try {
    pending = call()
  } catch (error) {
    assert.fail(
      `${operation} ${when} threw synchronously (${show(error)}); it must return a promise that rejects with a StoreError`,
    )
  }
  assert.ok(isThenable(pending), `${operation} ${when} must return a promise, got ${show(pending)}`)
  const outcome = await Promise.resolve(pending).then(
    (value) => ({ rejected: false as const, value }),
    (error: unknown) => ({ rejected: true as const, error }),
  )
  if (!outcome.rejected) {
    assert.fail(`${operation} ${when} resolved ${show(outcome.value)}; it must reject with a StoreError`)
  }
  assertStoreError(outcome.error, operation, when)
}

/**
 * One call of every contract method and of every optional capability `store` has (but `close`, and
 * `schemaSql`, which needs no backend), by name. `record` is used for update and touch; `list` is
 * iterated to the end.
 */
function everyMethod(
  store: SessionStore,
  clock: ManualClock,
  record: SessionRecord,
): Array<[operation: string, call: () => unknown]> {
  const user = record.userId ?? 'alice'
  const calls: Array<[string, () => unknown]> = [
    ['get', () => store.get(record.key)],
    ['create', () => store.create(makeRecord(clock, { userId: record.userId }))],
    ['update', () => store.update(nextVersion(record, clock), record.version)],
    ['touch', () => store.touch(record.key, clock.now(), clock.now() + IDLE_MS)],
    ['destroy', () => store.destroy(record.key)],
  ]
  if (isUserIndexedStore(store)) {
    calls.push(['listByUser', () => store.listByUser(user)])
  }
  if (isPrunableStore(store)) calls.push(['prune', () => store.prune()])
  if (isCountableStore(store)) calls.push(['count', () => store.count()])
  // `list()` may fail when called or when iterated: both reach a `for await` caller as a rejection.
  if (isListableStore(store)) calls.push(['list', async () => collect(store.list())])
  if (isMigratableStore(store)) calls.push(['migrate', () => store.migrate()])
  return calls
}

/** Every scenario of the contract, by name. Each builds its own stores and disposes them. */
export const storeScenarios: Record<string, StoreScenario> = {
  async 'round trip is byte for byte'(options) {
    await withStores(options, async ({ store, clock }) => {
      const records = [
        makeRecord(clock, { payload: nastyPayload() }),
        makeRecord(clock, { payload: largePayload(), userId: 'user-\u00e9-"quoted"' }),
        makeRecord(clock, { payload: 'x', userId: '\u{1f9d1}\u200d\u{1f4bb} \u4e2d' }),
        makeRecord(clock, {
          version: 7,
          userId: '42',
          createdAt: clock.now() - 1234,
          lastSeenAt: clock.now() - 5,
          idleExpiresAt: clock.now() + 987_654,
          absoluteExpiresAt: clock.now() + 12_345_678,
        }),
      ]
      assert.equal(records[1]?.payload.length, 65_536)
      for (const record of records) await mustCreate(store, { ...record })
      for (const record of records) {
        const got = await store.get(record.key)
        assert.ok(got, `get(${record.key}) after create must return the record`)
        assert.deepStrictEqual({ ...got }, record)
        assert.equal(got.payload.length, record.payload.length)
        assert.ok(got.payload === record.payload, 'payload must come back byte for byte')
      }

      // The store keeps its own copy: changing the object passed to create changes nothing stored.
      const original = makeRecord(clock, { userId: 'alice' })
      const passed = { ...original }
      await mustCreate(store, passed)
      Object.assign(passed, { payload: 'mutated', version: 99, userId: 'mallory' })
      assert.deepStrictEqual({ ...(await store.get(original.key)) }, original)
    })
  },

  async 'get of an unknown key is null'(options) {
    await withStores(options, async ({ store, clock }) => {
      await mustCreate(store, makeRecord(clock))
      assert.equal(await store.get(randomStoreKey()), null)
    })
  },

  async 'create never overwrites'(options) {
    await withStores(options, async ({ store, clock }) => {
      const first = makeRecord(clock, { userId: 'alice', payload: 'first' })
      await mustCreate(store, first)
      const second = makeRecord(clock, { key: first.key, userId: 'bob', payload: 'second', version: 5 })
      assert.equal(await store.create(second), false, 'a second create on a live key must resolve false')
      assert.deepStrictEqual({ ...(await store.get(first.key)) }, first)
    })
  },

  async 'exactly one of racing creates wins'(options) {
    await withStores(options, async ({ store, clock }) => {
      for (const racers of [2, 20]) {
        const key = randomStoreKey()
        const candidates = Array.from({ length: racers }, (_, i) =>
          makeRecord(clock, { key, payload: `racer-${i}` }),
        )
        const results = await Promise.all(candidates.map((record) => store.create(record)))
        const winners = results.flatMap((won, i) => (won ? [i] : []))
        assert.equal(
          winners.length,
          1,
          `exactly one of ${racers} racing creates must win, got ${winners.length}`,
        )
        const stored = await store.get(key)
        assert.equal(stored?.payload, `racer-${winners[0]}`, 'the stored record must be the winner')
      }
    })
  },

  async 'update is compare-and-set'(options) {
    await withStores(options, async ({ store, clock }) => {
      const v1 = makeRecord(clock, { payload: 'one' })
      await mustCreate(store, v1)
      clock.advance(1000)
      const v2 = nextVersion(v1, clock, { payload: 'two', userId: 'alice' })

      assert.equal(await store.update(v2, 2), false, 'update with a wrong expected version must be false')
      assert.equal(await store.update(v2, 0), false, 'update with a wrong expected version must be false')
      assert.deepStrictEqual({ ...(await store.get(v1.key)) }, v1)

      assert.equal(await store.update(v2, 1), true, 'update with the stored version must be true')
      assert.deepStrictEqual({ ...(await store.get(v1.key)) }, v2)

      const stale = nextVersion(v1, clock, { payload: 'stale' })
      assert.equal(await store.update(stale, 1), false, 'update from a version that moved must be false')
      assert.equal((await store.get(v1.key))?.payload, 'two')

      const missing = makeRecord(clock, { version: 2 })
      assert.equal(await store.update(missing, 1), false, 'update of a key never written must be false')
      assert.equal(await store.get(missing.key), null, 'update must never insert')
    })
  },

  async 'exactly one of racing updates wins'(options) {
    await withStores(options, async ({ store, clock }) => {
      const v1 = makeRecord(clock)
      await mustCreate(store, v1)
      const candidates = Array.from({ length: 20 }, (_, i) =>
        nextVersion(v1, clock, { payload: `writer-${i}` }),
      )
      const results = await Promise.all(candidates.map((record) => store.update(record, 1)))
      const winners = results.flatMap((won, i) => (won ? [i] : []))
      assert.equal(winners.length, 1, `exactly one of 20 racing updates must win, got ${winners.length}`)
      const stored = await store.get(v1.key)
      assert.equal(stored?.version, 2)
      assert.equal(stored?.payload, `writer-${winners[0]}`)
    })
  },

  async 'a chain of updates moves the version from 1 to 50'(options) {
    await withStores(options, async ({ store, clock }) => {
      let current = makeRecord(clock)
      await mustCreate(store, current)
      for (let version = 1; version < 50; version++) {
        clock.advance(10)
        const next = nextVersion(current, clock)
        assert.equal(
          await store.update(next, version),
          true,
          `update ${version} -> ${version + 1} must be true`,
        )
        assert.equal(
          await store.update(next, version),
          false,
          `replaying update from ${version} must be false`,
        )
        current = next
      }
      assert.deepStrictEqual({ ...(await store.get(current.key)) }, current)
      assert.equal(current.version, 50)
    })
  },

  async 'a record expires at its idle deadline'(options) {
    await withStores(options, async ({ store, clock }) => {
      const record = makeRecord(clock, { userId: 'alice' })
      await mustCreate(store, record)
      const deadline = record.idleExpiresAt
      assert.ok(deadline < record.absoluteExpiresAt)

      clock.set(deadline - 1)
      assert.deepStrictEqual(
        { ...(await store.get(record.key)) },
        record,
        'live one ms before the idle deadline',
      )

      clock.set(deadline)
      await assertExpired(store, clock, record)
    })
  },

  async 'a record expires at its absolute deadline'(options) {
    await withStores(options, async ({ store, clock }) => {
      const record = makeRecord(clock, { userId: 'alice' })
      await mustCreate(store, record)
      // Keep it active so that only the absolute deadline can end it.
      while (clock.now() + IDLE_MS / 2 < record.absoluteExpiresAt - 1) {
        clock.advance(IDLE_MS / 2)
        await store.touch(record.key, clock.now(), clock.now() + IDLE_MS)
      }
      clock.set(record.absoluteExpiresAt - 1)
      const live = await store.get(record.key)
      assert.ok(live, 'live one ms before the absolute deadline')
      assert.ok(
        live.idleExpiresAt > record.absoluteExpiresAt,
        'touch must have moved the idle deadline past it',
      )

      clock.set(record.absoluteExpiresAt)
      await assertExpired(store, clock, live)
    })
  },

  async 'touch moves expiry only'(options) {
    await withStores(options, async ({ store, clock }) => {
      const record = makeRecord(clock, { userId: 'alice', payload: nastyPayload(), version: 3 })
      await mustCreate(store, record)
      clock.advance(5 * MINUTE)
      const lastSeenAt = clock.now()
      const idleExpiresAt = lastSeenAt + IDLE_MS
      await store.touch(record.key, lastSeenAt, idleExpiresAt)
      assert.deepStrictEqual({ ...(await store.get(record.key)) }, { ...record, lastSeenAt, idleExpiresAt })

      // A touch does not count as a write: CAS still expects the old version.
      const next = nextVersion(record, clock)
      assert.equal(await store.update(next, 3), true, 'touch must not move the version')
    })
  },

  async 'touch keeps a record alive past its old idle deadline'(options) {
    await withStores(options, async ({ store, clock }) => {
      const record = makeRecord(clock)
      await mustCreate(store, record)
      clock.advance(20 * MINUTE)
      await store.touch(record.key, clock.now(), clock.now() + IDLE_MS)
      clock.set(record.idleExpiresAt + 10 * MINUTE)
      const got = await store.get(record.key)
      assert.equal(got?.payload, record.payload, 'a touched record must outlive its old idle deadline')
      const next = nextVersion(record, clock)
      assert.equal(await store.update(next, 1), true, 'a touched record must still accept updates')
      clock.set(expiresAt(next) - 1)
      assert.equal((await store.get(record.key))?.version, 2)
      clock.set(expiresAt(next))
      await assertGone(store, record.key, 'at the idle deadline of the updated record')
    })
  },

  async 'touch of a missing key resolves'(options) {
    await withStores(options, async ({ store, clock }) => {
      const key = randomStoreKey()
      await store.touch(key, clock.now(), clock.now() + IDLE_MS)
      await assertGone(store, key, 'touch must never insert')
    })
  },

  async 'destroy leaves a tombstone'(options) {
    await withStores(options, async ({ store, clock }) => {
      const record = makeRecord(clock, { userId: 'alice' })
      await mustCreate(store, record)
      const loadedBeforeLogout = await store.get(record.key)
      assert.ok(loadedBeforeLogout)
      await store.destroy(record.key)
      await assertGone(store, record.key, 'after destroy')

      clock.advance(1000)
      const late = nextVersion(loadedBeforeLogout, clock)
      assert.equal(await store.update(late, 1), false, 'a late update after destroy must be false')
      assert.equal(
        await store.create(makeRecord(clock, { key: record.key })),
        false,
        'create over a tombstone',
      )
      await store.touch(record.key, clock.now(), clock.now() + IDLE_MS)
      await assertGone(store, record.key, 'touch must not revive a tombstone')

      clock.set(expiresAt(record) - 1)
      await assertGone(store, record.key, 'the tombstone lives until the record would have expired')
      assert.equal(
        await store.create(makeRecord(clock, { key: record.key })),
        false,
        'create over a tombstone',
      )

      clock.set(expiresAt(record))
      const reborn = makeRecord(clock, { key: record.key, payload: 'reborn' })
      assert.equal(await store.create(reborn), true, 'create after the tombstone expired must be true')
      assert.deepStrictEqual({ ...(await store.get(record.key)) }, reborn)
    })
  },

  async 'destroy is idempotent'(options) {
    await withStores(options, async ({ store, clock }) => {
      const record = makeRecord(clock)
      const other = makeRecord(clock)
      await mustCreate(store, record)
      await mustCreate(store, other)
      await store.destroy(record.key)
      await store.destroy(record.key)
      await store.destroy(randomStoreKey())
      await assertGone(store, record.key, 'after destroy twice')
      assert.equal(
        await store.create(makeRecord(clock, { key: record.key })),
        false,
        'create over a tombstone',
      )
      assert.deepStrictEqual({ ...(await store.get(other.key)) }, other, 'destroy must not touch other keys')
    })
  },

  async 'user index lists by user; a destroyed record leaves it'(options) {
    await withStores(options, async ({ store, clock }) => {
      if (!isUserIndexedStore(store)) return
      const a1 = makeRecord(clock, { userId: 'alice' })
      const a2 = makeRecord(clock, { userId: 'alice' })
      const a3 = makeRecord(clock, { userId: 'alice' })
      const aDestroyed = makeRecord(clock, { userId: 'alice' })
      const aExpired = makeRecord(clock, { userId: 'alice', idleExpiresAt: clock.now() + MINUTE })
      const b1 = makeRecord(clock, { userId: 'bob' })
      const anonymous = makeRecord(clock)
      for (const record of [a1, a2, a3, aDestroyed, aExpired, b1, anonymous]) await mustCreate(store, record)
      await store.destroy(aDestroyed.key)
      clock.advance(MINUTE)

      const alice = await store.listByUser('alice')
      assert.deepStrictEqual(sortedKeys(alice), sortedKeys([a1, a2, a3]), 'only live, non-tombstoned records')
      assert.deepStrictEqual({ ...alice.find((record) => record.key === a2.key) }, a2)
      assert.deepStrictEqual(await store.listByUser('nobody'), [])

      // "Sign out everywhere but here", as the core does it: destroy each listed record but one.
      for (const record of [a1, a3]) await store.destroy(record.key)
      assert.deepStrictEqual(sortedKeys(await store.listByUser('alice')), [a2.key])
      assert.deepStrictEqual({ ...(await store.get(a2.key)) }, a2, 'the record kept')
      for (const record of [a1, a3]) {
        await assertGone(store, record.key, 'destroyed')
        assert.equal(await store.update(nextVersion(record, clock), 1), false, 'update after destroy')
        assert.equal(await store.create(makeRecord(clock, { key: record.key })), false, 'destroy tombstones')
      }
      assert.deepStrictEqual({ ...(await store.get(b1.key)) }, b1, 'other users are untouched')
      assert.deepStrictEqual(
        { ...(await store.get(anonymous.key)) },
        anonymous,
        'anonymous sessions are untouched',
      )

      await store.destroy(a2.key)
      assert.deepStrictEqual(await store.listByUser('alice'), [])
      assert.deepStrictEqual(sortedKeys(await store.listByUser('bob')), [b1.key])
    })
  },

  async 'update moves a record between users'(options) {
    await withStores(options, async ({ store, clock }) => {
      if (!isUserIndexedStore(store)) return
      const v1 = makeRecord(clock)
      await mustCreate(store, v1)
      const v2 = nextVersion(v1, clock, { userId: 'alice' })
      assert.equal(await store.update(v2, 1), true)
      assert.deepStrictEqual(sortedKeys(await store.listByUser('alice')), [v1.key])
      const v3 = nextVersion(v2, clock, { userId: 'bob' })
      assert.equal(await store.update(v3, 2), true)
      assert.deepStrictEqual(await store.listByUser('alice'), [])
      assert.deepStrictEqual(sortedKeys(await store.listByUser('bob')), [v1.key])
      const v4 = nextVersion(v3, clock, { userId: null })
      assert.equal(await store.update(v4, 3), true)
      assert.deepStrictEqual(await store.listByUser('bob'), [])
      assert.equal((await store.get(v1.key))?.version, 4)

      // An expired record of a user does not survive into the next record created on its key.
      const old = makeRecord(clock, { userId: 'carol', idleExpiresAt: clock.now() + MINUTE })
      await mustCreate(store, old)
      clock.advance(MINUTE)
      await mustCreate(store, makeRecord(clock, { key: old.key, userId: 'dave' }))
      assert.deepStrictEqual(await store.listByUser('carol'), [])
      assert.deepStrictEqual(sortedKeys(await store.listByUser('dave')), [old.key])
    })
  },

  async 'prune removes only what expired'(options) {
    await withStores(options, async ({ store, clock }) => {
      if (!isPrunableStore(store)) return
      const start = clock.now()
      const live = makeRecord(clock, { userId: 'alice' })
      const idleExpired = makeRecord(clock, { userId: 'alice', idleExpiresAt: start + MINUTE })
      const absoluteExpired = makeRecord(clock, { absoluteExpiresAt: start + MINUTE })
      const liveTombstone = makeRecord(clock)
      const expiredTombstone = makeRecord(clock, { idleExpiresAt: start + MINUTE })
      const touched = makeRecord(clock, { idleExpiresAt: start + MINUTE })
      const updated = makeRecord(clock, { idleExpiresAt: start + MINUTE })
      // Moved by a write to one millisecond after the prune: a store that keeps an index deadline
      // apart from the exact one (rounded, or running ahead) must still keep them.
      const nearlyUpdated = makeRecord(clock, { idleExpiresAt: start + MINUTE })
      const nearlyTouched = makeRecord(clock, { idleExpiresAt: start + MINUTE })
      const all = [
        ...[live, idleExpired, absoluteExpired, liveTombstone, expiredTombstone, touched, updated],
        ...[nearlyUpdated, nearlyTouched],
      ]
      for (const record of all) await mustCreate(store, record)
      await store.destroy(liveTombstone.key)
      await store.destroy(expiredTombstone.key)
      // Touch and update move the deadline: prune must see the new one.
      await store.touch(touched.key, start, start + IDLE_MS)
      assert.equal(await store.update(nextVersion(updated, clock), 1), true)
      const nearly = { ...nearlyUpdated, version: 2, idleExpiresAt: start + MINUTE + 1 }
      assert.equal(await store.update(nearly, 1), true)
      await store.touch(nearlyTouched.key, start, start + MINUTE + 1)

      clock.set(start + MINUTE)
      assert.equal(
        await store.prune(),
        3,
        'prune must count the two expired records and the expired tombstone',
      )
      assert.equal(await store.prune(), 0, 'a second prune finds nothing')

      assert.deepStrictEqual({ ...(await store.get(live.key)) }, live)
      assert.equal(
        (await store.get(touched.key))?.payload,
        touched.payload,
        'a touched record survives prune',
      )
      assert.equal((await store.get(updated.key))?.version, 2, 'an updated record survives prune')
      for (const record of [nearlyUpdated, nearlyTouched]) {
        assert.equal(
          (await store.get(record.key))?.payload,
          record.payload,
          'a record live for one more millisecond survives prune',
        )
      }
      clock.set(start + MINUTE + 1)
      assert.equal(await store.prune(), 2, 'prune removes them once their moved deadline has passed')
      clock.set(start + MINUTE)
      assert.equal(
        await store.create(makeRecord(clock, { key: liveTombstone.key })),
        false,
        'live tombstone kept',
      )
      for (const record of [idleExpired, absoluteExpired, expiredTombstone]) {
        await assertGone(store, record.key, 'pruned')
        const again = makeRecord(clock, { key: record.key, payload: 'again' })
        assert.equal(await store.create(again), true, 'an expired key can be created again after prune')
        assert.equal((await store.get(record.key))?.payload, 'again')
      }
      if (isUserIndexedStore(store)) {
        assert.deepStrictEqual(sortedKeys(await store.listByUser('alice')), [live.key])
      }
    })
  },

  async 'count and list see only live records'(options) {
    await withStores(options, async ({ store, clock }) => {
      if (!isCountableStore(store) && !isListableStore(store)) return
      const sees = async (want: readonly SessionRecord[], when: string) => {
        if (isCountableStore(store)) assert.equal(await store.count(), want.length, `count ${when}`)
        if (isListableStore(store)) {
          assert.deepStrictEqual(sortedKeys(await collect(store.list())), sortedKeys(want), `list ${when}`)
        }
      }
      await sees([], 'of an empty store')

      const live = Array.from({ length: 5 }, (_, i) => makeRecord(clock, { userId: i % 2 ? 'alice' : null }))
      const destroyed = makeRecord(clock)
      const expiring = makeRecord(clock, { idleExpiresAt: clock.now() + MINUTE })
      for (const record of [...live, destroyed, expiring]) await mustCreate(store, record)
      await store.destroy(destroyed.key)
      await sees([...live, expiring], 'must skip tombstones')

      clock.advance(MINUTE)
      await sees(live, 'must skip expired records')

      if (isListableStore(store)) {
        const listed = await collect(store.list())
        const first = live[0]
        assert.ok(first)
        assert.deepStrictEqual({ ...listed.find((record) => record.key === first.key) }, first)
      }
    })
  },

  async 'migrate twice is harmless'(options) {
    await withStores(options, async ({ store, clock }) => {
      if (!isMigratableStore(store)) return
      const sql = store.schemaSql()
      assert.equal(typeof sql, 'string')
      assert.ok(sql.trim().length > 0, 'schemaSql must return the DDL')
      await store.migrate()
      const record = makeRecord(clock)
      await mustCreate(store, record)
      await store.migrate()
      await Promise.all([store.migrate(), store.migrate()])
      assert.deepStrictEqual(
        { ...(await store.get(record.key)) },
        record,
        'migrate must keep existing records',
      )
      const other = makeRecord(clock)
      await mustCreate(store, other)
      assert.deepStrictEqual({ ...(await store.get(other.key)) }, other)
    })
  },

  async 'close releases everything'(options) {
    const timersBefore = timeoutCount()
    const clock = new ManualClock()
    const store = await options.createStore(clock)
    let closed = false
    try {
      if (!isClosableStore(store)) return
      const record = makeRecord(clock, { userId: 'alice' })
      await mustCreate(store, record)
      assert.equal((await store.get(record.key))?.payload, record.payload)
      await store.close()
      closed = true
      assert.ok(timeoutCount() <= timersBefore, 'close must clear every timer the store started')

      for (const [operation, call] of everyMethod(store, clock, record)) {
        await assertRejectsWithStoreError(operation, call, 'after close')
      }
    } finally {
      // A store closed here is disposed only by a custom disposeStore (which may also remove files).
      if (!closed || options.disposeStore) await dispose(options, store)
    }
  },

  async [BACKEND_DOWN](options) {
    // Not a silent pass: a store whose failures cannot be checked does not conform.
    if (!options.createUnavailableStore) assert.fail(missingUnavailableStore(options.name))
    const clock = new ManualClock()
    const store = await options.createUnavailableStore(clock)
    try {
      const record = makeRecord(clock, { userId: 'alice' })
      for (const [operation, call] of everyMethod(store, clock, record)) {
        await assertRejectsWithStoreError(operation, call, 'with the backend down')
      }
      if (isSyncStore(store)) {
        const synchronous: [string, () => unknown][] = [
          ['get', () => store.getSync(record.key)],
          ['create', () => store.createSync(record)],
          ['update', () => store.updateSync(nextVersion(record, clock), record.version)],
          ['touch', () => store.touchSync(record.key, clock.now(), clock.now() + IDLE_MS)],
        ]
        for (const [operation, call] of synchronous) {
          assert.throws(
            call,
            (error: unknown) =>
              (error as { code?: unknown }).code === 'ERR_LATCHKEY_STORE' &&
              (error as { operation?: unknown }).operation === operation,
            `${operation}Sync must throw a StoreError (code ERR_LATCHKEY_STORE, operation '${operation}') with the backend down`,
          )
        }
      }
    } finally {
      await dispose(options, store)
    }
  },

  async 'synchronous methods keep the same contract'(options) {
    await withStores(options, async ({ store, clock }) => {
      if (!isSyncStore(store)) return
      const record = makeRecord(clock, { userId: 'alice', payload: nastyPayload() })
      assert.equal(store.createSync(record), true, 'createSync on a free key')
      assert.equal(store.createSync({ ...record, payload: 'other' }), false, 'createSync never overwrites')
      assert.deepStrictEqual({ ...store.getSync(record.key) }, record, 'getSync round trip')
      assert.deepStrictEqual({ ...(await store.get(record.key)) }, record, 'get sees what createSync wrote')
      const v2 = nextVersion(record, clock)
      assert.equal(store.updateSync(v2, 1), true, 'updateSync from the current version')
      assert.equal(store.updateSync(nextVersion(record, clock), 1), false, 'updateSync is compare-and-set')
      assert.deepStrictEqual({ ...(await store.get(record.key)) }, v2)
      clock.advance(MINUTE)
      store.touchSync(record.key, clock.now(), clock.now() + IDLE_MS)
      const touched = store.getSync(record.key)
      assert.equal(touched?.payload, v2.payload, 'touchSync leaves the payload')
      assert.equal(touched?.version, 2, 'touchSync leaves the version')
      assert.equal(touched?.idleExpiresAt, clock.now() + IDLE_MS, 'touchSync moves the idle deadline')
      await store.destroy(record.key)
      assert.equal(store.getSync(record.key), null, 'getSync of a tombstone')
      assert.equal(store.updateSync(nextVersion(v2, clock), 2), false, 'updateSync of a tombstone')
      assert.equal(
        store.createSync(makeRecord(clock, { key: record.key })),
        false,
        'createSync over a tombstone',
      )
      store.touchSync(record.key, clock.now(), clock.now() + IDLE_MS)
      assert.equal(await store.get(record.key), null, 'touchSync does not revive a tombstone')
      const expiring = makeRecord(clock)
      assert.equal(store.createSync(expiring), true)
      clock.advance(IDLE_MS)
      assert.equal(store.getSync(expiring.key), null, 'getSync of an expired record')
      assert.equal(
        store.updateSync(nextVersion(expiring, clock), 1),
        false,
        'updateSync of an expired record',
      )
      assert.equal(store.getSync('../../etc/passwd'), null, 'getSync of a key the core never makes')
    })
  },

  async [RECOVERS](options) {
    // Optional: without the factory there is nothing to run (defineStoreConformance reports a skip).
    if (!options.createRecoveringStore) return
    const clock = new ManualClock()
    const { store, restore } = await options.createRecoveringStore(clock)
    try {
      const lost = makeRecord(clock, { userId: 'alice' })
      await assertRejectsWithStoreError('create', () => store.create(lost), 'before restore()')
      await assertRejectsWithStoreError('get', () => store.get(lost.key), 'before restore()')
      await restore()
      await assertGone(store, lost.key, 'a create that rejected must not have happened')
      const record = makeRecord(clock, { userId: 'alice', payload: nastyPayload() })
      await mustCreate(store, record)
      assert.deepStrictEqual(
        { ...(await store.get(record.key)) },
        record,
        'after restore() the store must work again',
      )
      assert.equal(await store.create(lost), true, 'the create that failed while down can be retried')
    } finally {
      await dispose(options, store)
    }
  },

  async 'random operations agree with a model of the contract'(options) {
    await withStores(options, async ({ store, clock }) => {
      const seed = (Date.now() ^ randomBytes(4).readUInt32LE(0)) >>> 0
      const random = prng(seed)
      const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T
      const keys = Array.from({ length: 6 }, randomStoreKey)
      const users = ['alice', 'bob', null]
      const model = new Map<string, { record: SessionRecord; tombstone: boolean }>()
      const isLive = (key: string) => {
        const entry = model.get(key)
        return entry !== undefined && clock.now() < expiresAt(entry.record)
      }
      const modelGet = (key: string) => {
        const entry = model.get(key)
        return entry && !entry.tombstone && isLive(key) ? entry.record : null
      }

      for (let step = 0; step < 400; step++) {
        const key = pick(keys)
        const where = `seed ${seed}, step ${step}`
        const op = pick([
          'get',
          'create',
          'update',
          'touch',
          'destroy',
          'advance',
          'advance',
          'byUser',
        ] as const)
        if (op === 'get') {
          const got = await store.get(key)
          const want = modelGet(key)
          assert.deepStrictEqual(got && { ...got }, want, `get (${where})`)
        } else if (op === 'create') {
          const record = makeRecord(clock, {
            key,
            userId: pick(users),
            idleExpiresAt: clock.now() + 5 * MINUTE,
          })
          const want = !isLive(key)
          assert.equal(await store.create(record), want, `create (${where})`)
          if (want) model.set(key, { record, tombstone: false })
        } else if (op === 'update') {
          const current = modelGet(key) ?? makeRecord(clock, { key })
          const expected = random() < 0.8 ? current.version : current.version + 1
          const next = nextVersion(current, clock, { version: expected + 1, userId: pick(users) })
          const want = modelGet(key)?.version === expected
          assert.equal(await store.update(next, expected), want, `update (${where})`)
          if (want) model.set(key, { record: next, tombstone: false })
        } else if (op === 'touch') {
          const idleExpiresAt = clock.now() + Math.floor(random() * 10 * MINUTE)
          await store.touch(key, clock.now(), idleExpiresAt)
          const current = modelGet(key)
          if (current) {
            model.set(key, {
              record: { ...current, lastSeenAt: clock.now(), idleExpiresAt },
              tombstone: false,
            })
          }
        } else if (op === 'destroy') {
          await store.destroy(key)
          const entry = model.get(key)
          if (entry && isLive(key)) model.set(key, { record: entry.record, tombstone: true })
        } else if (op === 'advance') {
          clock.advance(Math.floor(random() * 3 * MINUTE))
        } else if (isUserIndexedStore(store)) {
          const user = pick(['alice', 'bob'])
          const want = keys.filter((k) => modelGet(k)?.userId === user).sort()
          assert.deepStrictEqual(sortedKeys(await store.listByUser(user)), want, `listByUser (${where})`)
        }
      }
    })
  },
}

async function assertExpired(store: SessionStore, clock: ManualClock, record: SessionRecord): Promise<void> {
  await assertGone(store, record.key, `at ${clock.now()}, the record expired`)
  assert.equal(
    await store.update(nextVersion(record, clock), record.version),
    false,
    'update of an expired record',
  )
  await store.touch(record.key, clock.now(), clock.now() + IDLE_MS)
  await assertGone(store, record.key, 'touch must not revive an expired record')
  if (isUserIndexedStore(store)) {
    assert.deepStrictEqual(
      await store.listByUser('alice'),
      [],
      'listByUser must not return an expired record',
    )
  }
  const reborn = makeRecord(clock, { key: record.key, payload: 'reborn' })
  assert.equal(await store.create(reborn), true, 'create over an expired record must be true')
  assert.deepStrictEqual({ ...(await store.get(record.key)) }, reborn)
}

/**
 * "Why was I signed out?" (`session.endedBecause`) on the store under test, through a session manager:
 * what a store must do for it is only the contract above (keep every record, a notice included, until
 * its own deadlines, and free it no earlier, by prune or TTL), and these scenarios show it does. Each
 * end its user did not ask for is told to the next load of that cookie and to no other, once: revoked,
 * signed out everywhere, idle and absolute timeouts (also after the store pruned the expired record:
 * the timeout is told from a pending notice left at sign-in, not from the record), a key no longer
 * configured. Revocations need {@link UserIndexedStore} (every bundled store has it); without it
 * those two scenarios check nothing more than that the store was given.
 */
export const noticeScenarios: Record<string, StoreScenario> = {
  async 'notice: revoked is told once, to that cookie only'(options) {
    await withNotices(options, async (t) => {
      if (!isUserIndexedStore(t.store)) return
      const laptop = await t.signIn('ann')
      const phone = await t.signIn('ann')
      assert.equal(await t.manager.revoke(await t.handleOf(laptop)), true, 'revoke must end the session')
      await t.assertToldNothing(generateId(), 'a cookie that never named a session')
      await t.assertToldOnce(laptop, 'revoked')
      const other = await t.load(phone)
      assert.equal(other.isNew, false, 'the other device stays signed in')
      assert.equal(other.endedBecause, null, 'the other device is told nothing')
    })
  },

  async 'notice: signed out everywhere is told once to each other device, not to the one that asked'(
    options,
  ) {
    await withNotices(options, async (t) => {
      if (!isUserIndexedStore(t.store)) return
      const laptop = await t.signIn('ann')
      const tablet = await t.signIn('ann')
      const phone = await t.signIn('ann')
      const bob = await t.signIn('bob')
      const except = await t.handleOf(phone)
      assert.equal(await t.manager.revokeUserSessions('ann', { except }), 2)
      await t.assertToldOnce(laptop, 'signed-out-everywhere')
      await t.assertToldOnce(tablet, 'signed-out-everywhere')
      for (const id of [phone, bob]) {
        const session = await t.load(id)
        assert.equal(session.isNew, false, 'a session not revoked stays signed in')
        assert.equal(session.endedBecause, null)
      }
    })
  },

  async 'notice: the session the cap on sessions per user ended is told session-cap, once, and no other'(
    options,
  ) {
    await withNotices(options, async (t) => {
      if (!isUserIndexedStore(t.store)) return
      const capped = t.make({ maxSessionsPerUser: 2 })
      const signIn = async (userId: string): Promise<string> => {
        const session = await capped.load({})
        session.login(userId)
        const id = cookieId((await capped.commit(session)).setCookie)
        t.clock.advance(1_000)
        return id
      }
      const oldest = await signIn('ann')
      const middle = await signIn('ann')
      const bob = await signIn('bob')
      const newest = await signIn('ann')
      await t.assertToldOnce(oldest, 'session-cap')
      for (const id of [middle, newest, bob]) {
        const session = await t.load(id)
        assert.equal(session.isNew, false, 'a session within the cap stays signed in')
        assert.equal(session.endedBecause, null)
      }
    })
  },

  async 'notice: a sign-in the cap refuses fails with ERR_LATCHKEY_SESSION_CAP; the devices signed in stay, told nothing'(
    options,
  ) {
    await withNotices(options, async (t) => {
      if (!isUserIndexedStore(t.store)) return
      const capped = t.make({ maxSessionsPerUser: 2, sessionCapPolicy: 'refuse' })
      const signIn = async (): Promise<string> => {
        const session = await capped.load({})
        session.login('ann')
        const id = cookieId((await capped.commit(session)).setCookie)
        t.clock.advance(1_000)
        return id
      }
      const first = await signIn()
      const second = await signIn()
      await assert.rejects(signIn(), { code: 'ERR_LATCHKEY_SESSION_CAP' }, 'the third sign-in is refused')
      for (const id of [first, second]) {
        const session = await t.load(id)
        assert.equal(session.isNew, false, 'a session signed in before the refusal stays signed in')
        assert.equal(session.endedBecause, null, 'and is told nothing')
      }
      assert.equal((await capped.listUserSessions('ann')).length, 2, 'the refused session is not listed')
    })
  },

  async 'notice: idle timeout is told once, also after the store pruned the expired record'(options) {
    await withNotices(options, async (t) => {
      const pruned = await t.signIn('ann')
      const kept = await t.signIn('bob')
      t.clock.advance(NOTICE_IDLE_MS + MINUTE)
      await assertGone(t.store, storeKeyOf(pruned), 'the session is past its idle deadline')
      if (isPrunableStore(t.store)) assert.ok((await t.store.prune()) >= 2, 'prune frees the expired records')
      await assertGone(t.store, storeKeyOf(pruned), 'pruned')
      await t.assertToldNothing(generateId(), 'a cookie that never named a session')
      await t.assertToldOnce(pruned, 'idle-timeout')
      await t.assertToldOnce(kept, 'idle-timeout')
    })
  },

  async 'notice: absolute timeout is told once, also days after the store pruned the expired record'(
    options,
  ) {
    await withNotices(options, async (t) => {
      let id = await t.signIn('ann')
      // Active all along (a request every 20 minutes, its ID renewed after an hour), so it is the
      // absolute deadline that ends it.
      for (let minutes = 20; minutes < NOTICE_ABSOLUTE_MS / MINUTE; minutes += 20) {
        t.clock.advance(20 * MINUTE)
        const session = await t.load(id)
        assert.equal(session.isNew, false, `still signed in after ${minutes} minutes`)
        const { setCookie } = await t.manager.commit(session)
        if (setCookie) id = cookieId(setCookie)
      }
      t.clock.advance(20 * MINUTE + 1)
      await assertGone(t.store, storeKeyOf(id), 'the session is past its absolute deadline')
      if (isPrunableStore(t.store)) await t.store.prune()
      // The user comes back six days later (a notice waits a week).
      t.clock.advance(6 * 24 * HOUR)
      if (isPrunableStore(t.store)) await t.store.prune()
      await t.assertToldOnce(id, 'absolute-timeout')
    })
  },

  async 'notice: a key no longer configured is told once, to that cookie only'(options) {
    await withNotices(options, async (t) => {
      const id = await t.signIn('ann')
      const other = await t.signIn('bob')
      const rekeyed = t.make({ keys: [generateKey()] })
      const told = await t.load(id, rekeyed)
      assert.equal(told.endedBecause, 'key-retired')
      assert.equal((await t.load(id, rekeyed)).endedBecause, null, 'told once')
      assert.equal((await t.load(id)).isNew, false, 'the record stays: its key comes back with a rollback')
      assert.equal((await t.load(other)).endedBecause, null, 'a cookie whose session opens is told nothing')
    })
  },

  async 'notice: a logout, a renewed ID and a regenerated one are told nothing, even once expired'(options) {
    await withNotices(options, async (t) => {
      const out = await t.signIn('ann')
      const session = await t.load(out)
      session.logout()
      await t.manager.commit(session)
      const regenerated = await t.signIn('cid')
      const moved = await t.load(regenerated)
      moved.regenerate()
      const regeneratedTo = cookieId((await t.manager.commit(moved)).setCookie)
      assert.notEqual(regeneratedTo, regenerated, 'regenerate moves the session to a new ID')
      const renewed = await t.signIn('bob')
      let successor = renewed
      // Active (a request every 20 minutes) until its ID renews, an hour after sign-in.
      for (let minutes = 20; minutes <= NOTICE_RENEWAL_MS / MINUTE; minutes += 20) {
        t.clock.advance(20 * MINUTE)
        const next = await t.load(successor)
        assert.equal(next.isNew, false, `still signed in after ${minutes} minutes`)
        const { setCookie } = await t.manager.commit(next)
        if (setCookie) successor = cookieId(setCookie)
      }
      assert.notEqual(successor, renewed, 'the ID renews')
      t.clock.advance(NOTICE_IDLE_MS + MINUTE)
      if (isPrunableStore(t.store)) await t.store.prune()
      await t.assertToldNothing(out, 'logged out by its user')
      await t.assertToldNothing(renewed, 'renewed: the session moved to another ID')
      await t.assertToldNothing(regenerated, 'regenerated: the session moved to another ID')
      await t.assertToldOnce(regeneratedTo, 'idle-timeout')
      await t.assertToldOnce(successor, 'idle-timeout')
    })
  },

  async 'notice: racing loads of one expired cookie, exactly one is told'(options) {
    await withNotices(options, async (t) => {
      const id = await t.signIn('ann')
      t.clock.advance(NOTICE_IDLE_MS + MINUTE)
      if (isPrunableStore(t.store)) await t.store.prune()
      // Every compare-and-set on the notice is held until both loads have read it.
      const notice = noticeKeyOf(storeKeyOf(id))
      assert.notEqual(await t.store.get(notice), null, 'the notice of a timeout outlives the pruned record')
      const held: (() => void)[] = []
      let both: () => void = () => {}
      const bothArrived = new Promise<void>((resolve) => {
        both = resolve
      })
      const racing = new Proxy(t.store, {
        get(target, property, receiver) {
          const value = Reflect.get(target, property, receiver)
          if (property !== 'update' || typeof value !== 'function') {
            return typeof value === 'function' ? value.bind(target) : value
          }
          return async (record: SessionRecord, expected: number) => {
            if (record.key === notice) {
              await new Promise<void>((resolve) => {
                held.push(resolve)
                if (held.length === 2) both()
              })
            }
            return value.call(target, record, expected)
          }
        },
      })
      const manager = t.make({ store: racing })
      const loads = Promise.all([t.load(id, manager), t.load(id, manager)])
      await bothArrived
      for (const release of held) release()
      const told = (await loads).map((session) => session.endedBecause)
      assert.deepEqual(
        told.filter((reason) => reason !== null),
        ['idle-timeout'],
        `told: ${show(told)}`,
      )
      assert.equal((await t.load(id)).endedBecause, null, 'and never again')
    })
  },
}

/** Timeouts of the managers the notice scenarios build: idle 30 minutes, absolute 2 hours, renewal every hour. */
const NOTICE_IDLE_MS = 30 * MINUTE
const NOTICE_ABSOLUTE_MS = 2 * HOUR
const NOTICE_RENEWAL_MS = HOUR

/** What a notice scenario is handed: its store, clock and manager, and what it does with them. */
interface NoticeTest {
  readonly store: SessionStore
  readonly clock: ManualClock
  readonly manager: SessionManager
  make(more?: Partial<SessionManagerOptions>): SessionManager
  load(id: string, by?: SessionManager): ReturnType<SessionManager['load']>
  signIn(userId: string): Promise<string>
  handleOf(id: string): Promise<string>
  assertToldOnce(id: string, reason: string): Promise<void>
  assertToldNothing(id: string, why: string): Promise<void>
}

function cookieId(setCookie: string | null | undefined): string {
  const id = /^[^=]+=([^;]+)/.exec(setCookie ?? '')?.[1]
  assert.ok(id !== undefined && id !== '', `no session cookie in ${show(setCookie)}`)
  return id
}

async function withNotices<S extends SessionStore>(
  options: StoreConformanceOptions<S>,
  run: (t: NoticeTest) => Promise<void>,
): Promise<void> {
  const clock = new ManualClock()
  const store = await options.createStore(clock)
  const keys = [generateKey()]
  const make = (more: Partial<SessionManagerOptions> = {}) =>
    createSessionManager({
      store,
      keys,
      clock,
      cookie: { secure: false },
      idleTimeoutMs: NOTICE_IDLE_MS,
      absoluteTimeoutMs: NOTICE_ABSOLUTE_MS,
      renewalIntervalMs: NOTICE_RENEWAL_MS,
      ...more,
    })
  const manager = make()
  const load = (id: string, by = manager) => by.load({ cookie: `sid=${id}` })
  const t: NoticeTest = {
    store,
    clock,
    manager,
    make,
    load,
    async signIn(userId) {
      const session = await manager.load({})
      session.login(userId)
      return cookieId((await manager.commit(session)).setCookie)
    },
    async handleOf(id) {
      const handle = manager.handleOf(await load(id))
      assert.ok(handle !== null, 'a signed-in session has a handle')
      return handle
    },
    async assertToldOnce(id, reason) {
      const told = await load(id)
      assert.equal(told.isNew, true, 'an ended session loads as a fresh one')
      assert.equal(told.endedBecause, reason, `the first load of the ended cookie is told ${reason}`)
      assert.equal((await load(id)).endedBecause, null, `${reason} is told once`)
    },
    async assertToldNothing(id, why) {
      const session = await load(id)
      assert.equal(session.endedBecause, null, `told nothing: ${why}`)
    },
  }
  try {
    await run(t)
  } finally {
    await dispose(options, store)
  }
}

/**
 * Registers every scenario of {@link storeScenarios} as a test under `describe(`${name} conformance`)`.
 *
 * Without `createUnavailableStore`, the "backend down" scenario cannot run, and a store whose
 * failures cannot be checked must not pass unnoticed: when `process.env.CI === 'true'` it is
 * registered as a test that fails with a message naming the store and saying what to provide;
 * otherwise it is skipped visibly, as `backend down rejects with StoreError (skipped: no
 * createUnavailableStore given; fails under CI=true)`. Without `createRecoveringStore` (optional),
 * "recovers when the backend is back" is skipped the same way, also under CI. A skip goes through
 * `runner.test.skip` when the runner has it, else through `runner.test` with the same name and a body
 * that does nothing.
 *
 * @example
 * import { describe, test } from 'vitest'
 * defineStoreConformance({ describe, test }, { name: 'MyStore', createStore: (clock) => new MyStore({ clock }) })
 */
export function defineStoreConformance<S extends SessionStore>(
  runner: ConformanceRunner,
  options: StoreConformanceOptions<S>,
): void {
  const inCi = process.env.CI === 'true'
  const skip = (name: string, reason: string) => {
    const skipped = `${name} (skipped: ${reason})`
    if (runner.test.skip) runner.test.skip(skipped, async () => {})
    else runner.test(skipped, async () => {})
  }
  runner.describe(`${options.name} conformance`, () => {
    for (const [name, scenario] of Object.entries({ ...storeScenarios, ...noticeScenarios })) {
      if (name === BACKEND_DOWN && !options.createUnavailableStore) {
        if (inCi) {
          runner.test(name, async () => {
            assert.fail(`${missingUnavailableStore(options.name)} (CI=true: not skipped)`)
          })
        } else {
          skip(name, 'no createUnavailableStore given; fails under CI=true')
        }
      } else if (name === RECOVERS && !options.createRecoveringStore) {
        skip(name, 'no createRecoveringStore given')
      } else {
        runner.test(name, () => scenario(options))
      }
    }
  })
}
