/**
 * A child process that writes sessions to a SqliteStore as fast as it can and reports each one on
 * the IPC channel once its write resolved (acknowledged), until it is killed. For the crash test.
 */

import { SqliteStore } from '../../src/stores/sqlite/index.js'
import { makeRecord } from '../../src/testing/conformance.js'

const [path, synchronous] = process.argv.slice(2) as [string, 'normal' | 'full']
const store = new SqliteStore({ path, synchronous, pruneIntervalMs: 0 })
const clock = { now: () => Date.now() }
for (;;) {
  const record = makeRecord(clock, { payload: `acknowledged-${Math.random()}` })
  if (!(await store.create(record))) continue
  await new Promise<void>((resolve) => process.send?.(record.key, () => resolve()))
}
