// The progress bar's time left: the average rate since the start, not the last ten items, which in
// `revoke --all` come in bursts and made cli-progress read `eta 0s` for most of the run.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { expect, test } from 'vitest'
import { revoke } from '../src/cli/commands.js'
import { Output } from '../src/cli/context.js'
import { progress, timeLeft } from '../src/cli/progress.js'
import { generateKey } from '../src/core/crypto.js'
import { openStore } from '../src/stores/index.js'
import { appManager, closeStore, seedSession } from './support/cli-backends.js'

test('time left at the average rate: unknown before the first item, then seconds, minutes, hours', () => {
  expect(timeLeft(0, 0, 100)).toBe('?')
  expect(timeLeft(1000, 1, 100)).toBe('1m39s')
  expect(timeLeft(10_000, 50, 100)).toBe('10s')
  expect(timeLeft(60_000, 1, 100)).toBe('1h39m')
  expect(timeLeft(5000, 100, 100)).toBe('0s')
})

test('a run of bursts (one slow item, then many at once) reads a time left that is not 0s', () => {
  const stderr = Object.assign(new PassThrough(), { isTTY: true, columns: 200 })
  let written = ''
  stderr.on('data', (chunk: Buffer) => {
    written += chunk.toString()
  })
  const out = new Output(
    { stdout: new PassThrough(), stderr, env: {}, redact: (t) => t, signal: new AbortController().signal },
    false,
  )
  let now = 0
  const bar = progress(out, 'revoking', 1000, true, () => now)
  // 10 % done: each user's first session takes 100 ms, its 9 others (already ended) no time at all.
  for (let user = 0; user < 10; user++) {
    now += 100
    for (let session = 0; session < 10; session++) bar.increment()
  }
  bar.stop()
  const last = [...written.matchAll(/eta ([^)]+)\)/g)].at(-1)?.[1]
  expect(last).toBe('9s')
})

test('revoke --all: the bar ends at 100 %, though revoking a user ends their other sessions before the walk reaches them', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-cli-progress-'))
  try {
    const url = `sqlite:${join(dir, 'sessions.db')}`
    const keys = [generateKey()]
    const store = await openStore(url, { storeOptions: { pruneIntervalMs: 0 } })
    const app = appManager(store, keys)
    // 60 users with 10 sessions each (each with its pending notice), and 3 anonymous sessions: more
    // records than one page of the walk, so that revoking a user ends sessions the walk has not read.
    for (let user = 0; user < 60; user++)
      for (let session = 0; session < 10; session++) await seedSession(app, { user: `user${user}` })
    for (let session = 0; session < 3; session++) await seedSession(app, { data: { session } })
    await closeStore(store)
    const stderr = Object.assign(new PassThrough(), { isTTY: true, columns: 200 })
    let written = ''
    stderr.on('data', (chunk: Buffer) => {
      written += chunk.toString()
    })
    const out = new Output(
      {
        stdout: new PassThrough(),
        stderr,
        env: { LATCHKEY_KEYS: keys.join(',') },
        redact: (t) => t,
        signal: new AbortController().signal,
      },
      false,
    )
    expect(await revoke({ store: url, all: true }, out)).toBe(0)
    const frames = [...written.matchAll(/revoking \[[#-]+\] (\d+)% (\d+)\/(\d+)/g)]
    const last = frames.at(-1)
    expect(last, written).toBeDefined()
    expect(last?.[1]).toBe('100')
    expect(last?.[2]).toBe(last?.[3])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
