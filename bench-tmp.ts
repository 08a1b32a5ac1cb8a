import { MemoryStore } from '/work/main/src/stores/memory/index.js'
import { SqliteStore } from '/work/main/src/stores/sqlite/index.js'
import { makeRecord } from '/work/main/src/testing/index.js'
import { ManualClock } from '/work/main/src/core/clock.js'
const clock = new ManualClock()
const recs = Array.from({ length: 100_000 }, () => makeRecord(clock))
for (const [name, store] of [['memory', new MemoryStore({ clock })], ['memory-full', new MemoryStore({ clock, maxSessions: 10_000 })], ['sqlite-mem', new SqliteStore({ path: ':memory:', clock })]] as const) {
  let t = performance.now()
  for (const r of recs) await store.create(r)
  const c = performance.now() - t; t = performance.now()
  for (const r of recs) await store.get(r.key)
  const g = performance.now() - t; t = performance.now()
  for (const r of recs) await store.touch(r.key, clock.now(), clock.now() + 1e6)
  const to = performance.now() - t
  console.log(name, 'create', c.toFixed(0), 'get', g.toFixed(0), 'touch', to.toFixed(0), 'ms / 100k', 'count', await store.count())
  await store.close()
}
