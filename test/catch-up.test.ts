/**
 * The catch-up fast path: a commit that loaded a version this process has since written starts from
 * that write (one compare-and-set) instead of learning of it from a failed one and a reread; and it
 * falls back to the full path whenever another process wrote the session, or anything ended it, in
 * between. Both layers: the asynchronous path (a pausing store) and the synchronous one (MemoryStore).
 */
import { describe, expect, test } from 'vitest'
import type { SessionManager } from '../src/core/manager.js'
import { createSessionManager } from '../src/index.js'
import { cookieOf, type Data, KEYS, load, setup } from './support/managers.js'

/** A stored session holding `n: 0`; resolves its ID. */
async function stored(manager: SessionManager<Data>): Promise<string> {
  const session = await load(manager, undefined)
  session.set('n', 0)
  const id = cookieOf(await manager.commit(session))
  if (!id) throw new Error('not stored')
  return id
}

describe('a commit queued behind one of this process', () => {
  test('starts from the write before it: one update, no reread, both changes kept', async () => {
    const { manager, paused } = setup()
    const id = await stored(manager)
    const first = await load(manager, id)
    const second = await load(manager, id)
    first.set('a', 1)
    second.set('b', 2)
    second.update('n', (n) => (n as number) + 1)
    paused.calls.length = 0
    await manager.commit(first)
    await manager.commit(second)
    expect(paused.calls).toEqual(['update', 'update'])
    const after = await load(manager, id)
    expect([after.get('a'), after.get('b'), after.get('n')]).toEqual([1, 2, 1])
  })

  test('falls back to the full path when another process wrote in between: nothing is lost', async () => {
    const { manager, make, paused } = setup()
    const other = make()
    const id = await stored(manager)
    const first = await load(manager, id)
    const second = await load(manager, id)
    first.update('n', (n) => (n as number) + 1)
    await manager.commit(first)
    // Another process (its own manager, the same store) writes after this process's write.
    const elsewhere = await load(other, id)
    elsewhere.update('n', (n) => (n as number) + 10)
    elsewhere.set('c', 3)
    await other.commit(elsewhere)
    second.update('n', (n) => (n as number) + 100)
    paused.calls.length = 0
    await manager.commit(second)
    // The guess from this process's write failed its compare-and-set; the reread found the other write.
    expect(paused.calls).toEqual(['update', 'get', 'update'])
    const after = await load(manager, id)
    expect([after.get('n'), after.get('c')]).toEqual([111, 3])
  })

  test('does not bring back a session ended after the write it would start from', async () => {
    const { manager, make } = setup()
    const other = make()
    const id = await stored(manager)
    const first = await load(manager, id)
    const second = await load(manager, id)
    first.set('a', 1)
    await manager.commit(first)
    const ending = await load(other, id)
    ending.logout()
    await other.commit(ending)
    second.set('b', 2)
    await manager.commit(second)
    expect((await load(manager, id)).isNew).toBe(true)
  })

  test('on a synchronous store too: the second commit lands at once, from the first one’s write', () => {
    const { memory, clock } = setup()
    const manager = createSessionManager<Data>({
      store: memory,
      keys: KEYS,
      clock,
      cookie: { secure: false },
    })
    const fresh = manager.loadSync({ cookie: undefined })
    if (fresh === null) throw new Error('sync load')
    fresh.set('n', 0)
    const id = cookieOf(manager.commitSync(fresh) ?? { setCookie: null, private: true })
    const first = manager.loadSync({ cookie: `sid=${id}` })
    const second = manager.loadSync({ cookie: `sid=${id}` })
    if (first === null || second === null) throw new Error('sync load')
    first.set('a', 1)
    second.set('b', 2)
    expect(manager.commitSync(first)).not.toBeNull()
    // Without the catch-up its compare-and-set conflicts, and commitSync hands over to commit().
    expect(manager.commitSync(second)).not.toBeNull()
    const after = manager.loadSync({ cookie: `sid=${id}` })
    expect([after?.get('a'), after?.get('b')]).toEqual([1, 2])
  })
})
