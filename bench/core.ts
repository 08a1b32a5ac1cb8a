/**
 * In-process cost of the session lifecycle, without HTTP: load + (change) + commit per path, with
 * MemoryStore and SqliteStore, in microseconds per operation.
 *
 *   npm run bench:core                    5 runs of 20 000 operations per cell
 *   npm run bench:core -- --quick         3 runs of 2 000 (smoke test)
 *   npm run bench:core -- --profile       also writes a CPU profile per cell to bench/results/profiles/
 *
 * Environment: CORE_RUNS, CORE_OPS, CORE_PATHS and CORE_STORES (comma-separated subsets).
 *
 * Paths: R reads a stored session (nothing to write); W increments a counter with `update`; N stores a
 * new session; login signs an anonymous session in (new ID, old one ended); touch reads a session whose
 * touch interval has passed (expiry moved, payload untouched). Each operation runs to completion before
 * the next, as one request after another on a warm process. Times are the median of the runs, with the
 * fastest and slowest run beside it.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { Session as InspectorSession } from 'node:inspector/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { SessionStore } from '../src/index.js'
import { count, pick, profile } from './cli.js'

// Loaded from the build (`npm run bench:core` builds first), as users run it.
const DIST = new URL('../dist/', import.meta.url)
const { createSessionManager, ManualClock, MemoryStore }: typeof import('../src/index.js') = await import(
  new URL('index.js', DIST).href
)
const { SqliteStore }: typeof import('../src/stores/sqlite/index.js') = await import(
  new URL('stores/sqlite/index.js', DIST).href
)

const HERE = dirname(fileURLToPath(import.meta.url))
const PROFILES = join(HERE, 'results', 'profiles')
const KEY = Buffer.alloc(32, 'latchkey-bench').toString('base64url')

const PATHS = ['R', 'W', 'N', 'login', 'touch'] as const
type Path = (typeof PATHS)[number]
const STORES = ['memory', 'sqlite'] as const
type StoreKind = (typeof STORES)[number]

const runs = count('CORE_RUNS', 5, 3)
const ops = count('CORE_OPS', 20_000, 2_000)
const paths = pick(PATHS, 'CORE_PATHS')
const stores = pick(STORES, 'CORE_STORES')

const SESSIONS = 1_000
const TOUCH_INTERVAL_MS = 180_000

interface Fixture {
  readonly run: (i: number) => Promise<void>
  /** Work done before each run that is not measured (sessions a login starts from). */
  readonly prepare?: () => Promise<void>
  readonly close: () => Promise<void>
}

const dir = mkdtempSync(join(tmpdir(), 'latchkey-core-'))

function makeStore(kind: StoreKind, clock: InstanceType<typeof ManualClock>): SessionStore {
  if (kind === 'memory') return new MemoryStore({ clock, maxSessions: 10_000_000, sweepIntervalMs: 0 })
  return new SqliteStore({ path: join(dir, `core-${Math.random().toString(36).slice(2)}.db`), clock })
}

function cookieOf(setCookie: string | null): string {
  const match = setCookie?.match(/^sid=([^;]+)/)
  if (!match) throw new Error('no session cookie was set')
  return `sid=${match[1]}`
}

async function fixture(path: Path, kind: StoreKind): Promise<Fixture> {
  const clock = new ManualClock()
  const store = makeStore(kind, clock)
  const manager = createSessionManager<{ n?: number; v?: string }>({
    store,
    keys: [KEY],
    clock,
    cookie: { secure: false },
    touchIntervalMs: TOUCH_INTERVAL_MS,
    // No renewal during a measurement: it would be a sixth path mixed into the others.
    renewalIntervalMs: 43_200_000,
  })
  const seed = async (): Promise<string> => {
    const session = await manager.load({})
    session.set('n', 0)
    session.set('v', 'hello')
    return cookieOf((await manager.commit(session)).setCookie)
  }
  // As the node adapter does: the synchronous path when the store and the request allow it.
  const load = (cookie?: string) => manager.loadSync({ cookie }) ?? manager.load({ cookie })
  const commit = (session: Awaited<ReturnType<typeof load>>) =>
    manager.commitSync(session) ?? manager.commit(session)
  const cookies: string[] = []
  for (let i = 0; i < SESSIONS; i++) cookies.push(await seed())
  const close = async () => {
    await manager.close()
  }
  const at = (i: number) => cookies[i % SESSIONS] as string

  switch (path) {
    case 'R':
      return {
        run: async (i) => {
          const session = await load(at(i))
          if (session.get('v') !== 'hello') throw new Error('R: lost the session')
          await commit(session)
        },
        close,
      }
    case 'W':
      return {
        run: async (i) => {
          const session = await load(at(i))
          session.update('n', (n = 0) => n + 1)
          await commit(session)
        },
        close,
      }
    case 'N':
      return {
        run: async () => {
          const session = await load()
          session.set('v', 'x')
          await commit(session)
        },
        close,
      }
    case 'touch':
      return {
        // Each session comes round again after a full touch interval, so every read touches.
        run: async (i) => {
          clock.advance(Math.ceil(TOUCH_INTERVAL_MS / SESSIONS))
          const session = await load(at(i))
          await commit(session)
        },
        close,
      }
    case 'login': {
      const anonymous: string[] = []
      return {
        prepare: async () => {
          anonymous.length = 0
          for (let i = 0; i < ops; i++) anonymous.push(await seed())
        },
        run: async (i) => {
          const session = await load(anonymous[i])
          session.login(`user-${i % 100}`)
          await commit(session)
        },
        close,
      }
    }
  }
}

interface Cell {
  readonly path: Path
  readonly store: StoreKind
  readonly medianMicros: number
  readonly minMicros: number
  readonly maxMicros: number
}

async function measure(path: Path, kind: StoreKind): Promise<Cell> {
  const f = await fixture(path, kind)
  const perOp: number[] = []
  let inspector: InspectorSession | undefined
  // Warm-up: let the JIT settle before anything is timed.
  await f.prepare?.()
  for (let i = 0; i < Math.min(ops, 2_000); i++) await f.run(i)
  for (let r = 0; r < runs; r++) {
    await f.prepare?.()
    if (profile && r === runs - 1) {
      inspector = new InspectorSession()
      inspector.connect()
      await inspector.post('Profiler.enable')
      await inspector.post('Profiler.start')
    }
    const start = process.hrtime.bigint()
    for (let i = 0; i < ops; i++) await f.run(i)
    perOp.push(Number(process.hrtime.bigint() - start) / 1000 / ops)
  }
  if (inspector) {
    const { profile: cpu } = await inspector.post('Profiler.stop')
    mkdirSync(PROFILES, { recursive: true })
    const file = join(PROFILES, `core-${path}-${kind}.cpuprofile`)
    writeFileSync(file, JSON.stringify(cpu))
    inspector.disconnect()
  }
  await f.close()
  const sorted = [...perOp].sort((a, b) => a - b)
  return {
    path,
    store: kind,
    medianMicros: sorted[Math.floor(sorted.length / 2)] as number,
    minMicros: sorted[0] as number,
    maxMicros: sorted[sorted.length - 1] as number,
  }
}

const cells: Cell[] = []
try {
  for (const kind of stores) {
    for (const path of paths) {
      const cell = await measure(path, kind)
      cells.push(cell)
      console.error(
        `${kind.padEnd(6)} ${path.padEnd(5)} ${cell.medianMicros.toFixed(1).padStart(7)} µs/op  (${cell.minMicros.toFixed(1)}–${cell.maxMicros.toFixed(1)})`,
      )
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}

const fmt = (n: number) => n.toFixed(1)
console.log(
  `\nIn-process load + commit, µs per operation (median of ${runs} runs of ${ops}; fastest–slowest)\n`,
)
console.log(`| path | ${stores.map((s) => (s === 'memory' ? 'MemoryStore' : 'SqliteStore')).join(' | ')} |`)
console.log(`| --- | ${stores.map(() => '---:').join(' | ')} |`)
for (const path of paths) {
  const row = stores.map((kind) => {
    const cell = cells.find((c) => c.path === path && c.store === kind)
    return cell ? `${fmt(cell.medianMicros)} (${fmt(cell.minMicros)}–${fmt(cell.maxMicros)})` : ''
  })
  console.log(`| ${path} | ${row.join(' | ')} |`)
}
for (const kind of stores) {
  const read = cells.find((c) => c.path === 'R' && c.store === kind)
  const write = cells.find((c) => c.path === 'W' && c.store === kind)
  if (read && write) {
    console.log(`\n${kind}: a write costs ${fmt(write.medianMicros - read.medianMicros)} µs more than a read`)
  }
}
if (profile) console.log(`\nCPU profiles: ${PROFILES}/core-<path>-<store>.cpuprofile`)
