import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, describe, expect, test } from 'vitest'
import { ManualClock } from '../src/core/clock.js'
import { generateKey } from '../src/core/crypto.js'
import { StoreError } from '../src/core/errors.js'
import { storeKeyOf } from '../src/core/id.js'
import { createSessionManager } from '../src/index.js'
import { SqliteStore } from '../src/stores/sqlite/index.js'
import type { AppData } from './support/app.js'
import { gatedHooks } from './support/app.js'
import type { Harness } from './support/setup.js'
import { harness } from './support/setup.js'

let h: Harness<SqliteStore> | undefined
let dir: string
afterEach(async () => {
  await h?.close()
  h = undefined
  rmSync(dir, { recursive: true, force: true })
})

function sqliteHarness(options: Parameters<typeof harness>[0] = {}, busyTimeoutMs = 5_000) {
  dir = mkdtempSync(join(tmpdir(), 'latchkey-http-'))
  const clock = new ManualClock()
  const store = new SqliteStore({ path: join(dir, 'sessions.db'), clock, busyTimeoutMs })
  return harness<SqliteStore>({ ...options, clock, store })
}

/** Every byte SQLite has on disk for the database: main file, WAL and shared memory. */
function filesOnDisk(): Buffer {
  return Buffer.concat(readdirSync(dir).map((name) => readFileSync(join(dir, name))))
}

describe('encryption at rest (SQLite)', () => {
  test('a canary set in a session, and the raw ID, never appear in the SQLite files', async () => {
    h = await sqliteHarness()
    const client = h.client()
    const canary = 'CANARY-6f1d2c-do-not-store-in-clear'
    await client.request(`/set?key=secret&value=${canary}`)
    await client.request('/login?user=erin')
    await client.request(`/set?key=again&value=${canary}`)
    const id = client.cookie as string
    expect((await client.json('/state?key=secret')).body.value).toBe(canary)
    const bytes = filesOnDisk()
    expect(bytes.length).toBeGreaterThan(0)
    // The files do hold the session: its store key is there, so the search below looks in the right place.
    expect(bytes.includes(storeKeyOf(id))).toBe(true)
    expect(bytes.includes(canary)).toBe(false)
    expect(bytes.includes(Buffer.from(canary, 'utf16le'))).toBe(false)
    expect(bytes.includes(id)).toBe(false)
  })

  test('one flipped bit in a stored payload gives an anonymous session, not a 5xx', async () => {
    h = await sqliteHarness()
    const client = h.client()
    await client.request('/set?key=a&value=1')
    const id = client.cookie as string
    const record = await h.recordOf(id)
    if (!record) throw new Error('not stored')
    const [keyId, body] = record.payload.split('.') as [string, string]
    const bytes = Buffer.from(body, 'base64url')
    bytes[20] = (bytes[20] as number) ^ 0x01
    const flipped = `${keyId}.${bytes.toString('base64url')}`
    expect(
      await h.store.update({ ...record, version: record.version + 1, payload: flipped }, record.version),
    ).toBe(true)
    const { response, body: state } = await client.json('/state?key=a')
    expect(response.status).toBe(200)
    expect(state).toMatchObject({ isNew: true, value: null })
    expect(h.errors).toEqual([])
  })

  test('a session sealed with an older key opens, and is re-sealed with the first key on its next commit', async () => {
    h = await sqliteHarness()
    const client = h.client()
    await client.request('/set?key=a&value=old-key')
    const id = client.cookie as string
    const oldKey = h.keys[0] as string
    const newKey = generateKey()
    await h.server.close()
    const sealedWithOld = (await h.recordOf(id))?.payload

    // Only the new key: the old session cannot be opened.
    const newOnly = createSessionManager<AppData>({
      store: h.store,
      keys: [newKey],
      clock: h.clock,
      cookie: { secure: false },
    })
    expect((await newOnly.load({ cookie: `sid=${id}` })).isNew).toBe(true)

    // The rotated keyring (new first, old still listed) opens it and re-seals it with the new key.
    const rotated = createSessionManager<AppData>({
      store: h.store,
      keys: [newKey, oldKey],
      clock: h.clock,
      cookie: { secure: false },
    })
    const session = await rotated.load({ cookie: `sid=${id}` })
    expect(session.get('a')).toBe('old-key')
    await rotated.commit(session)
    const resealed = (await h.recordOf(id))?.payload
    expect(resealed).not.toBe(sealedWithOld)
    expect((await newOnly.load({ cookie: `sid=${id}` })).get('a')).toBe('old-key')
  })
})

describe('store failure (SQLite locked by another process)', () => {
  test('requests get a clear 503 while the store cannot answer, and service resumes by itself', async () => {
    h = await sqliteHarness({}, 50)
    const client = h.client()
    await client.request('/set?key=a&value=1')
    const blocker = new Database(join(dir, 'sessions.db'))
    blocker.exec('BEGIN EXCLUSIVE')
    try {
      const response = await client.request('/inc')
      expect(response.status).toBe(503)
      expect(response.headers.get('retry-after')).toBe('1')
      expect(response.headers.getSetCookie()).toEqual([])
      expect(await response.text()).toMatch(/session store is not answering/)
      const anonymous = await h.client().request('/set?key=b&value=2')
      expect(anonymous.status).toBe(503)
    } finally {
      blocker.exec('COMMIT')
      blocker.close()
    }
    expect(h.errors.length).toBeGreaterThanOrEqual(2)
    expect(h.errors.every((error) => error instanceof StoreError)).toBe(true)
    h.errors.length = 0
    const { response, body } = await client.json('/inc?key=a')
    expect(response.status).toBe(200)
    expect(body).toMatchObject({ isNew: false, value: '1', n: 1 })
  })

  test('a commit that fails answers 503 and writes nothing', async () => {
    const { hooks, isLoaded, release } = gatedHooks()
    h = await sqliteHarness({ hooks }, 50)
    const client = h.client()
    await client.request('/set?key=a&value=1')
    const pending = client.request('/slow-set?key=a&value=2')
    await isLoaded
    const blocker = new Database(join(dir, 'sessions.db'))
    blocker.exec('BEGIN EXCLUSIVE')
    release()
    const response = await pending
    blocker.exec('COMMIT')
    blocker.close()
    expect(response.status).toBe(503)
    expect(h.errors.splice(0).every((error) => error instanceof StoreError)).toBe(true)
    expect((await client.json('/state?key=a')).body.value).toBe('1')
  })
})
