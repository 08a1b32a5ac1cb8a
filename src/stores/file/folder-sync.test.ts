import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, test } from 'vitest'
import { FolderSyncs, fsyncFolder } from './folder-sync.js'

/** A sync function whose calls the test ends by hand, in the order it chooses. */
function heldSyncs() {
  const calls: { dir: string; end(): void; fail(error: Error): void }[] = []
  const sync = (dir: string) =>
    new Promise<void>((resolve, reject) => calls.push({ dir, end: resolve, fail: reject }))
  return { calls, syncs: new FolderSyncs(sync) }
}

/** A promise with its outcome readable at any time. */
function watch(promise: Promise<void>) {
  const state = { settled: false, error: undefined as unknown }
  promise.then(
    () => {
      state.settled = true
    },
    (error: unknown) => {
      state.settled = true
      state.error = error
    },
  )
  return state
}

/** Lets every pending callback run: nothing here waits on anything but the test's own promises. */
const settle = () => new Promise((resolve) => setImmediate(resolve))

describe('FolderSyncs (group commit of folder syncs)', () => {
  test('a change waits for a sync that began after it; one such sync serves every change made meanwhile', async () => {
    const { calls, syncs } = heldSyncs()
    const first = watch(syncs.after('/a'))
    expect(calls.map((call) => call.dir)).toEqual(['/a'])
    // Made while the first sync runs: that sync may have missed them.
    const second = watch(syncs.after('/a'))
    const third = watch(syncs.after('/a'))
    await settle()
    expect(calls).toHaveLength(1)
    calls[0]?.end()
    await settle()
    expect(first).toEqual({ settled: true, error: undefined })
    expect([second.settled, third.settled]).toEqual([false, false])
    // The next sync began once the first had ended: it serves both.
    expect(calls).toHaveLength(2)
    const fourth = watch(syncs.after('/a'))
    calls[1]?.end()
    await settle()
    expect([second.settled, third.settled]).toEqual([true, true])
    expect(fourth.settled).toBe(false)
    expect(calls).toHaveLength(3)
    calls[2]?.end()
    await settle()
    expect(fourth.settled).toBe(true)
    expect(syncs.busy).toBe(0)
  })

  test('folders are synced independently', async () => {
    const { calls, syncs } = heldSyncs()
    const a = watch(syncs.after('/a'))
    const b = watch(syncs.after('/b'))
    expect(calls.map((call) => call.dir)).toEqual(['/a', '/b'])
    calls[1]?.end()
    await settle()
    expect([a.settled, b.settled]).toEqual([false, true])
    calls[0]?.end()
    await settle()
    expect(a.settled).toBe(true)
    expect(syncs.busy).toBe(0)
  })

  test('a failed sync rejects every change it served; the next change gets a sync of its own', async () => {
    const { calls, syncs } = heldSyncs()
    const running = watch(syncs.after('/a'))
    const queued = [watch(syncs.after('/a')), watch(syncs.after('/a'))]
    calls[0]?.end()
    await settle()
    calls[1]?.fail(new Error('EIO'))
    await settle()
    expect(running.error).toBeUndefined()
    expect(queued.map((change) => (change.error as Error).message)).toEqual(['EIO', 'EIO'])
    const later = watch(syncs.after('/a'))
    expect(calls).toHaveLength(3)
    calls[2]?.end()
    await settle()
    expect(later).toEqual({ settled: true, error: undefined })
    expect(syncs.busy).toBe(0)
  })

  test('a sync function that throws instead of rejecting rejects the change', async () => {
    const syncs = new FolderSyncs(() => {
      throw new Error('thrown')
    })
    await expect(syncs.after('/a')).rejects.toThrow('thrown')
    expect(syncs.busy).toBe(0)
  })

  test('the real sync opens, fsyncs and closes a folder; a missing one rejects', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'latchkey-folder-sync-'))
    try {
      await expect(fsyncFolder(dir)).resolves.toBeUndefined()
      await expect(fsyncFolder(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
