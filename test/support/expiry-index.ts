/**
 * The SQL stores' `expires_at` index column: moved about once per EXPIRY_SLACK_MS of a session's
 * writes instead of on every write, never earlier than the record's exact deadline, never more than
 * the slack later; the record itself (and its expiry) exact all along.
 */
import { expect } from 'vitest'
import type { ManualClock } from '../../src/core/clock.js'
import { expiresAt, type SessionRecord, type SessionStore } from '../../src/core/store.js'
import { EXPIRY_SLACK_MS } from '../../src/stores/sql/queries.js'
import { makeRecord } from '../../src/testing/conformance.js'

/** Runs the scenario on `store`; `indexed(key)` reads the row's `expires_at` straight from the table. */
export async function expiryIndexScenario(
  store: SessionStore,
  clock: ManualClock,
  indexed: (key: string) => Promise<number>,
): Promise<void> {
  const idle = 30 * 60_000
  let record: SessionRecord = makeRecord(clock, { idleExpiresAt: clock.now() + idle })
  expect(await store.create(record)).toBe(true)
  const first = await indexed(record.key)
  expect(first).toBe(expiresAt(record) + EXPIRY_SLACK_MS)

  // Writes a few seconds apart: each moves the deadline, none moves the index column.
  for (let i = 0; i < 5; i++) {
    clock.advance(5_000)
    const next: SessionRecord = {
      ...record,
      version: record.version + 1,
      lastSeenAt: clock.now(),
      idleExpiresAt: clock.now() + idle,
      payload: `write ${i}`,
    }
    expect(await store.update(next, record.version)).toBe(true)
    record = next
    expect(await indexed(record.key)).toBe(first)
    expect(await store.get(record.key)).toEqual(record)
  }
  await store.touch(record.key, clock.now(), clock.now() + idle)
  record = { ...record, lastSeenAt: clock.now(), idleExpiresAt: clock.now() + idle }
  expect(await indexed(record.key)).toBe(first)

  // Once the deadline has passed the stored column, a write moves it to the new deadline plus the slack.
  clock.advance(EXPIRY_SLACK_MS)
  const later: SessionRecord = {
    ...record,
    version: record.version + 1,
    lastSeenAt: clock.now(),
    idleExpiresAt: clock.now() + idle,
  }
  expect(await store.update(later, record.version)).toBe(true)
  expect(await indexed(later.key)).toBe(expiresAt(later) + EXPIRY_SLACK_MS)
  clock.advance(EXPIRY_SLACK_MS + 1)
  await store.touch(later.key, clock.now(), clock.now() + idle)
  expect(await indexed(later.key)).toBe(clock.now() + idle + EXPIRY_SLACK_MS)

  // A change of user (a sign-in) is written whole, and an earlier deadline moves the column back.
  const signedIn: SessionRecord = {
    ...later,
    version: later.version + 1,
    userId: 'alice',
    lastSeenAt: clock.now(),
    idleExpiresAt: clock.now() + idle,
    absoluteExpiresAt: clock.now() + 2 * 60_000,
  }
  expect(await store.update(signedIn, later.version)).toBe(true)
  expect(await store.get(signedIn.key)).toEqual(signedIn)
  expect(await indexed(signedIn.key)).toBe(expiresAt(signedIn) + EXPIRY_SLACK_MS)

  // The exact deadline decides, though the column runs ahead of it.
  clock.set(expiresAt(signedIn) - 1)
  expect(await store.get(signedIn.key)).toEqual(signedIn)
  clock.set(expiresAt(signedIn))
  expect(await store.get(signedIn.key)).toBeNull()
}
