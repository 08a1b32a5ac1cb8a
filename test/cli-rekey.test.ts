// `latchkey rekey` (the built CLI, a child process) on 10 000 sessions while the application (a manager
// in this process, already deployed with the new key first) writes to them: no session is lost, no
// acknowledged write is lost, and no record is left sealed with the old key. Then, interrupted (SIGINT)
// and run again, it carries on where it stopped. On SQLite, files, PostgreSQL, MariaDB and Redis, one
// after the other.
import { setImmediate, setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { generateKey, Keyring } from '../src/core/crypto.js'
import type { SessionEvent } from '../src/core/events.js'
import { isPendingNotice } from '../src/core/lifecycle/notice.js'
import { isEnded } from '../src/core/lifecycle/record-state.js'
import { createSessionManager, type SessionManager } from '../src/core/manager.js'
import { isListableStore, type ListableStore, type SessionStore } from '../src/core/store.js'
import { builtCli, jsonOf, runCli, startCli } from './support/cli.js'
import { type Backend, backends, closeStore, seedSession } from './support/cli-backends.js'
import { describeWithService } from './support/services.js'

const SESSIONS = 10_000
const USERS = 100
const WRITERS = 4

let main: string
beforeAll(async () => {
  main = await builtCli()
}, 240_000)

const all = await backends('rekey')
afterAll(async () => {
  for (const backend of all) await backend.cleanup()
})

function manager(
  store: SessionStore,
  keys: string[],
  onEvent?: (event: SessionEvent) => void,
): SessionManager {
  return createSessionManager({ store, keys, cookie: { secure: false }, ...(onEvent ? { onEvent } : {}) })
}

function listable(store: SessionStore): SessionStore & ListableStore {
  if (!isListableStore(store)) throw new Error(`${store.constructor.name} cannot list`)
  return store
}

/** Records of `store` that the key `key` alone does not open (ended payloads aside). */
async function sealedWithOtherKeys(store: SessionStore, key: string): Promise<number> {
  const only = new Keyring([Buffer.from(key, 'base64url')])
  let others = 0
  for await (const record of listable(store).list()) {
    // A pending notice (of a timeout, `session.endedBecause`) is sealed with no key.
    if (isPendingNotice(record)) continue
    if (!isEnded(record) && only.open(record.payload, record.key) === null) others++
  }
  return others
}

/** Stores `count` sessions sealed with `keys[0]`, a tenth of them signed in; resolves their IDs. */
async function seed(store: SessionStore, keys: string[], count: number): Promise<string[]> {
  const app = manager(store, keys)
  const ids: string[] = []
  for (let start = 0; start < count; start += 250) {
    const batch = Array.from({ length: Math.min(250, count - start) }, (_, i) => {
      const n = start + i
      return seedSession(app, {
        data: { n: 0, label: `session ${n}` },
        userAgent: `Agent/${n}`,
        ...(n % 10 === 0 ? { user: `user-${n % USERS}` } : {}),
      })
    })
    ids.push(...(await Promise.all(batch)))
  }
  return ids
}

/** Rekey while eight writers update (and now and then create) sessions; checks that nothing is lost. */
async function rekeyUnderWrites(
  backend: Backend,
  store: SessionStore,
  ids: readonly string[],
  oldKey: string,
  newKey: string,
): Promise<void> {
  const events: SessionEvent[] = []
  // The application, deployed with the new key first: it opens both, seals with the new one.
  const app = manager(store, [newKey, oldKey], (event) => {
    if (event.type === 'dropped' || event.type === 'rejected' || event.type === 'expired') events.push(event)
  })
  const acknowledged = new Map<string, number>()
  const created: string[] = []
  const lost: string[] = []
  const started = performance.now()
  const rekey = startCli(main, ['rekey', '--json', '--concurrency', '8', ...backend.args()], {
    env: { LATCHKEY_KEYS: `${newKey},${oldKey}` },
  })
  let running = true
  const finished = rekey.done.finally(() => {
    running = false
  })
  // Most writes go to a hot tenth of the sessions, so that the application and the rekey meet on the
  // same records; a quarter go anywhere; one in fifty creates a new session.
  let writes = 0
  const writer = async (w: number): Promise<void> => {
    for (let i = 0; running; i++) {
      // A synchronous store answers without a macrotask: let the event loop see the child exit.
      await setImmediate()
      if (i % 50 === 49) {
        created.push(await seedSession(app, { data: { n: 0, label: `new ${w}/${i}` } }))
        continue
      }
      const pool = i % 4 === 0 ? ids.length : ids.length / 10
      const id = ids[Math.floor(Math.random() * pool)] as string
      const session = await app.load({ cookie: `sid=${id}` })
      if (session.isNew) {
        lost.push(id)
        continue
      }
      session.update('n', (n = 0) => (n as number) + 1)
      await app.commit(session)
      acknowledged.set(id, (acknowledged.get(id) ?? 0) + 1)
      writes++
    }
  }
  await Promise.all([finished, ...Array.from({ length: WRITERS }, (_, w) => writer(w))])
  const result = await finished
  const elapsed = Math.round(performance.now() - started)
  const report = jsonOf(result) as Record<string, number>
  console.info(`${backend.name}: rekey ${elapsed} ms, ${writes} concurrent writes, ${JSON.stringify(report)}`)
  expect(result.code, result.stderr).toBe(0)
  expect(writes).toBeGreaterThan(0)
  expect(lost).toEqual([])
  expect(events).toEqual([])
  expect(report.unopenable).toBe(0)
  expect(report.busy).toBe(0)
  expect(report.resealed! + report.current! + report.skipped!).toBeGreaterThanOrEqual(ids.length)
  // None sealed with the old key: every record opens with the new key alone ...
  expect(await sealedWithOtherKeys(store, newKey)).toBe(0)
  // ... and every session, old or new, loads with the new key alone, with every acknowledged write.
  const rotated = manager(store, [newKey])
  const everyone = [...ids, ...created]
  for (let start = 0; start < everyone.length; start += 100) {
    await Promise.all(
      everyone.slice(start, start + 100).map(async (id) => {
        const session = await rotated.load({ cookie: `sid=${id}` })
        expect(session.isNew, `session ${id} lost`).toBe(false)
        expect(session.get('n'), `writes to ${id}`).toBe(acknowledged.get(id) ?? 0)
      }),
    )
  }
}

/** Interrupts a rekey once its first records are done; the run after it finishes the rest. */
async function interruptAndResume(
  backend: Backend,
  store: SessionStore,
  sessions: number,
  current: string,
): Promise<void> {
  const next = generateKey()
  const keys = `${next},${current}`
  const only = new Keyring([Buffer.from(next, 'base64url')])
  // The first records in the order the store lists them, which is the order rekey works in.
  const leading: string[] = []
  for await (const record of listable(store).list()) if (leading.push(record.key) >= 20) break
  const run = startCli(main, ['rekey', '--json', '--concurrency', '1', ...backend.args()], {
    env: { LATCHKEY_KEYS: keys },
  })
  let exited = false
  void run.done.finally(() => {
    exited = true
  })
  const deadline = Date.now() + 60_000
  for (let seen = false; !seen && !exited && Date.now() < deadline; ) {
    await sleep(2)
    for (const key of leading) {
      const record = await store.get(key)
      if (record && only.open(record.payload, record.key) !== null) {
        seen = true
        break
      }
    }
  }
  run.kill('SIGINT')
  const first = await run.done
  expect(first.code, first.stderr).toBe(130)
  const stopped = jsonOf(first) as { partial: Record<string, number>; error: { code: string } }
  expect(stopped.error.code).toBe('ERR_LATCHKEY_INTERRUPTED')
  expect(stopped.partial.resealed).toBeGreaterThan(0)
  expect(stopped.partial.resealed).toBeLessThan(sessions)
  const second = await runCli(main, ['rekey', '--json', '--concurrency', '8', ...backend.args()], {
    env: { LATCHKEY_KEYS: keys },
  })
  expect(second.code, second.stderr).toBe(0)
  const rest = jsonOf(second) as Record<string, number>
  expect(rest.current).toBeGreaterThanOrEqual(stopped.partial.resealed!)
  expect(stopped.partial.resealed! + rest.resealed!).toBeGreaterThanOrEqual(sessions)
  expect(await sealedWithOtherKeys(store, next)).toBe(0)
}

function rekeySuite(backend: Backend): void {
  const sessions = SESSIONS
  const oldKey = generateKey()
  const newKey = generateKey()
  let store: SessionStore
  let ids: string[] = []

  beforeAll(async () => {
    store = await backend.open()
    const started = performance.now()
    ids = await seed(store, [oldKey], sessions)
    console.info(
      `${backend.name}: seeded ${sessions} sessions in ${Math.round(performance.now() - started)} ms`,
    )
  }, 300_000)
  afterAll(async () => {
    if (store) await closeStore(store)
  })

  test(`rekey of ${sessions} sessions under concurrent writes loses none and leaves none with the old key`, async () => {
    await rekeyUnderWrites(backend, store, ids, oldKey, newKey)
  }, 300_000)

  test('interrupted (SIGINT), it stops with exit 130 and what it did; run again, it finishes the rest', async () => {
    await interruptAndResume(backend, store, sessions, newKey)
  }, 300_000)
}

for (const backend of all) {
  describeWithService(backend.status, `latchkey rekey on ${backend.name}`, () => rekeySuite(backend))
}
