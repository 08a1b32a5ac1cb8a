// `SessionManager.reseal` (what `latchkey rekey` runs on each record): one record re-sealed with the
// first key by compare-and-set, retried on conflict with the writer's back-off for as long as a commit
// would retry (`commitTimeoutMs`), then left as busy.
import { describe, expect, test } from 'vitest'
import { generateKey } from '../src/core/crypto.js'
import { storeKeyOf } from '../src/core/id.js'
import type { SessionRecord } from '../src/core/store.js'
import { createSessionManager } from '../src/index.js'
import { MemoryStore } from '../src/stores/memory/index.js'

const OLD = generateKey()
const NEW = generateKey()

/** A MemoryStore whose next `failures` updates conflict (nothing written), as if another process wrote first. */
class Conflicting extends MemoryStore {
  failures = 0
  updates = 0

  override async update(record: SessionRecord, expectedVersion: number): Promise<boolean> {
    this.updates++
    if (this.failures > 0) {
      this.failures--
      return false
    }
    return super.update(record, expectedVersion)
  }
}

/** A store holding one session sealed with the old key, and a manager deployed with the new key first. */
async function stale(commitTimeoutMs = 10_000) {
  const store = new Conflicting()
  const before = createSessionManager({ store, keys: [OLD], cookie: { secure: false } })
  const session = await before.load({})
  session.set('n', 1)
  const id = /^sid=([^;]+)/.exec((await before.commit(session)).setCookie ?? '')?.[1] as string
  const record = (await store.get(storeKeyOf(id))) as SessionRecord
  const manager = createSessionManager({
    store,
    keys: [NEW, OLD],
    cookie: { secure: false },
    commitTimeoutMs,
  })
  return { store, manager, id, record }
}

describe('reseal', () => {
  test('re-seals a record sealed with an older key, then finds it current', async () => {
    const { store, manager, id, record } = await stale()
    let conflicts = 0
    expect(await manager.reseal(record, () => conflicts++)).toBe('resealed')
    const resealed = (await store.get(storeKeyOf(id))) as SessionRecord
    expect(resealed.version).toBe(record.version + 1)
    expect(await manager.reseal(resealed)).toBe('current')
    expect(conflicts).toBe(0)
    const only = createSessionManager({ store, keys: [NEW], cookie: { secure: false } })
    expect((await only.load({ cookie: `sid=${id}` })).get('n')).toBe(1)
  })

  test('a conflict is counted and retried', async () => {
    const { store, manager, record } = await stale()
    store.failures = 3
    let conflicts = 0
    expect(await manager.reseal(record, () => conflicts++)).toBe('resealed')
    expect(conflicts).toBe(3)
    expect(store.updates).toBe(4)
  })

  test('a record that keeps conflicting is left as busy once commitTimeoutMs has passed', async () => {
    const { store, manager, record } = await stale(100)
    store.failures = Number.POSITIVE_INFINITY
    let conflicts = 0
    const started = performance.now()
    expect(await manager.reseal(record, () => conflicts++)).toBe('busy')
    const took = performance.now() - started
    expect(took).toBeGreaterThanOrEqual(100)
    expect(took).toBeLessThan(2_000)
    expect(conflicts).toBe(store.updates)
    expect(conflicts).toBeGreaterThan(1)
  })

  test('an ended record is skipped', async () => {
    const { store, manager, id, record } = await stale()
    await store.destroy(storeKeyOf(id))
    store.failures = 1
    expect(await manager.reseal(record)).toBe('skipped')
  })
})
