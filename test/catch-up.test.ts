/**
 * The catch-up fast path: a commit that loaded a version this process has since written starts from
 * that write (one compare-and-set) instead of learning of it from a failed one and a reread; and it
 * falls back to the full path whenever another process wrote the session, or anything ended it, in
 * between. Both layers: the asynchronous path (a pausing store) and the synchronous one (MemoryStore).
 */
import { describe, expect, test } from 'vitest'
import type { SessionManager } from '../src/core/manager.js'
import type { Session } from '../src/core/session.js'
import { createSessionManager } from '../src/index.js'
import type { MemoryStore } from '../src/stores/memory/index.js'
import { cookieOf, type Data, KEYS, load, setup } from './support/managers.js'
import type { Pausable, PausePoint } from './support/pausing-store.js'

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

/** Settles on the next turn of the event loop: every promise that can settle by then has. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** Whether `promise` has settled, as a flag read later. */
function watch(promise: Promise<unknown>): { settled: boolean } {
  const flag = { settled: false }
  promise.then(
    () => {
      flag.settled = true
    },
    () => {
      flag.settled = true
    },
  )
  return flag
}

/**
 * `count` requests loaded on the stored session `id`, the first of which sets `a: 1` and commits, its
 * update held (`when`) until `release`: the others, committed meanwhile, wait behind it.
 */
async function behindHeld(
  manager: SessionManager<Data>,
  paused: Pausable<MemoryStore>,
  id: string,
  count: number,
  when: PausePoint,
) {
  const [first, ...rest] = await Promise.all(Array.from({ length: count }, () => load(manager, id)))
  if (first === undefined) throw new Error('load')
  const held = paused.pause('update', { when })
  first.set('a', 1)
  const committing = manager.commit(first)
  await held.reached
  return {
    rest,
    /** Lets the first commit's update go, and waits for it. */
    release: async () => {
      held.release()
      await committing
    },
  }
}

describe('plain writes waiting behind a commit of this process', () => {
  test('are folded into one update, each change replayed in commit order, answered once it landed', async () => {
    const { manager, paused } = setup()
    const id = await stored(manager)
    const { rest, release } = await behindHeld(manager, paused, id, 4, 'before')
    const [s1, s2, s3] = rest as [Session<Data>, Session<Data>, Session<Data>]
    paused.calls.length = 0
    s1.set('b', 2)
    s1.update('n', (n) => (n as number) + 1)
    s2.set('x', 'earlier')
    s3.set('x', 'later')
    s3.update('n', (n) => (n as number) + 10)
    const folded = paused.pause('update')
    const commits = rest.map((session) => manager.commit(session))
    const flags = commits.map(watch)
    await release()
    await folded.reached
    await turn()
    // Held before the fold's write reached the store: no folded request is answered yet.
    expect(flags.map((flag) => flag.settled)).toEqual([false, false, false])
    folded.release()
    await Promise.all(commits)
    expect(paused.calls).toEqual(['update'])
    const after = await load(manager, id)
    expect([after.get('a'), after.get('b'), after.get('x'), after.get('n')]).toEqual([1, 2, 'later', 11])
    // Each request's session is settled on what was written.
    expect(s1.get('x')).toBe('later')
  })

  test('a write never joins a fold that a commit queued after it: the order of the commits holds', async () => {
    const { manager, paused } = setup()
    const id = await stored(manager)
    const { rest, release } = await behindHeld(manager, paused, id, 4, 'before')
    const [s1, s2, s3] = rest as [Session<Data>, Session<Data>, Session<Data>]
    s1.set('x', 'first')
    s2.set('x', 'second')
    s2.regenerate()
    s3.set('x', 'third')
    const c1 = manager.commit(s1)
    const c2 = manager.commit(s2)
    const c3 = manager.commit(s3)
    await release()
    await c1
    const regenerated = cookieOf(await c2)
    await c3
    expect(regenerated).toBeDefined()
    // The regenerate, committed after the first write and before the third, lands between them.
    expect((await load(manager, regenerated)).get('x')).toBe('third')
  })

  test('fall back to a reread when another process wrote after the write they follow: nothing is lost', async () => {
    const { manager, make, paused } = setup()
    const other = make()
    const id = await stored(manager)
    const { rest, release } = await behindHeld(manager, paused, id, 3, 'after')
    const [s1, s2] = rest as [Session<Data>, Session<Data>]
    s1.update('n', (n) => (n as number) + 100)
    s2.set('b', 2)
    const commits = rest.map((session) => manager.commit(session))
    // Another process writes after this process's first write landed, before the fold's.
    const elsewhere = await load(other, id)
    elsewhere.update('n', (n) => (n as number) + 10)
    await other.commit(elsewhere)
    paused.calls.length = 0
    await release()
    await Promise.all(commits)
    expect(paused.calls).toEqual(['update', 'get', 'update'])
    const after = await load(manager, id)
    expect([after.get('a'), after.get('n'), after.get('b')]).toEqual([1, 110, 2])
  })

  test('do not bring back a session ended before their turn: every one of them is dropped', async () => {
    const events: string[] = []
    const { manager, make, paused } = setup()
    const other = make()
    const mine = make({ onEvent: (event) => events.push(event.type) })
    const id = await stored(manager)
    const { rest, release } = await behindHeld(mine, paused, id, 3, 'after')
    const [s1, s2] = rest as [Session<Data>, Session<Data>]
    s1.set('b', 2)
    s2.set('c', 3)
    const commits = rest.map((session) => mine.commit(session))
    const ending = await load(other, id)
    ending.logout()
    await other.commit(ending)
    await release()
    await Promise.all(commits)
    expect(events.filter((type) => type === 'dropped')).toHaveLength(2)
    expect((await load(manager, id)).isNew).toBe(true)
  })

  test('too large together: written one by one, and only the request that made it too large fails', async () => {
    const { manager, paused } = setup({ maxPayloadBytes: 2_000 })
    const id = await stored(manager)
    const { rest, release } = await behindHeld(manager, paused, id, 4, 'before')
    const [s1, s2, s3] = rest as [Session<Data>, Session<Data>, Session<Data>]
    s1.set('b', 'x'.repeat(700))
    s2.set('c', 'y'.repeat(700))
    s3.set('d', 4)
    const outcomes = Promise.allSettled(rest.map((session) => manager.commit(session)))
    await release()
    const [r1, r2, r3] = await outcomes
    expect([r1?.status, r2?.status, r3?.status]).toEqual(['fulfilled', 'rejected', 'fulfilled'])
    expect((r2 as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_LATCHKEY_SESSION_TOO_LARGE' })
    const after = await load(manager, id)
    expect([after.get('a'), after.get('b'), after.has('c'), after.get('d')]).toEqual([
      1,
      'x'.repeat(700),
      false,
      4,
    ])
  })

  test('a store failure fails every folded request: none is answered as saved', async () => {
    const { manager, memory, paused } = setup()
    const id = await stored(manager)
    const { rest, release } = await behindHeld(manager, paused, id, 3, 'after')
    const [s1, s2] = rest as [Session<Data>, Session<Data>]
    s1.set('b', 2)
    s2.set('c', 3)
    const outcomes = Promise.allSettled(rest.map((session) => manager.commit(session)))
    const update = memory.update
    memory.update = () => Promise.reject(new Error('store down'))
    try {
      await release()
      const results = await outcomes
      expect(results.map((result) => result.status)).toEqual(['rejected', 'rejected'])
    } finally {
      memory.update = update
    }
    const after = await load(manager, id)
    expect([after.get('a'), after.has('b'), after.has('c')]).toEqual([1, false, false])
  })
})
