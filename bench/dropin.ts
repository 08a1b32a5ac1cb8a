/**
 * latchkey/express-session (the drop-in) against express-session itself, over HTTP on Express 5, on
 * the same store package: express-session's own MemoryStore, and connect-redis 9 on node-redis. Part of
 * `npm run bench` (after the stores against their peers); on its own:
 *
 *   npm run bench:dropin               5 interleaved runs of 3 s per cell after a 1 s warm-up, 50 connections
 *   npm run bench:dropin -- --quick    2 runs of 2 s per cell (smoke test)
 *
 * Environment: BENCH_DROPIN (memory,redis; `none` to skip this part of `npm run bench`),
 * BENCH_DROPIN_SCENARIOS (R,W,W-hot,N), BENCH_DURATION, BENCH_REPEATS, BENCH_WARMUP,
 * BENCH_CONNECTIONS, BENCH_REDIS_URL, BENCH_PROFILE=1 (each server writes .cpuprofile files to
 * bench/results/profiles/dropin-<store>-<side>-<scenario>/; the largest is the main thread).
 *
 * Scenarios, as in bench/peer-stores.ts: R reads a session, W increments a counter in it (every
 * connection one user with its own session, created beforehand), W-hot increments the counter of one
 * session all connections share, N creates a new session per request. For W and W-hot the counters are
 * read back before and after every run: "writes kept" against the 2xx answers. Neither middleware
 * promises to keep concurrent increments of one key (with an old-style store, the last save of a key
 * wins), so lost writes are reported, not failed; a W that loses writes with one session per
 * connection is a problem.
 *
 * Each cell (scenario x store x side) gets a fresh server process (redis: a key prefix of its own,
 * dropped after), checked before it is measured; the two sides of a store are measured in turns, each
 * run with the machine's CPU steal over it; a cell reports the median of its runs with their spread,
 * and the server's CPU time per request. Results: markdown on stdout, bench/results/dropin.json.
 */
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { DropInSide, DropInStore } from './dropin-kinds.js'
import { DROPIN_SIDE_NAMES, DROPIN_SIDES, DROPIN_STORE_NAMES, DROPIN_STORES } from './dropin-kinds.js'
import type { LoadSettings, Machine, Run, RunningServer, StoreScenario, Summary } from './harness.js'
import {
  announce,
  BehaviourError,
  counterTotal,
  environment,
  formatCpu,
  formatKept,
  formatLoad,
  formatRange,
  formatRate,
  formatRatio,
  interleave,
  load,
  loadSettings,
  logCell,
  logRun,
  measureRun,
  onMachine,
  publish,
  RESULTS_DIR,
  ROOT,
  ratio,
  STORE_PATHS,
  STORE_SCENARIOS,
  seed,
  startServer,
  subset,
  summarize,
  table,
  verify,
  versions,
} from './harness.js'
import { storeUrls } from './peer-store-kinds.js'

type Scenario = StoreScenario

const SERVER_ENTRY = join(ROOT, 'bench', 'dropin-server.ts')

interface Settings extends LoadSettings {
  readonly stores: readonly DropInStore[]
  readonly scenarios: readonly Scenario[]
}

/** The settings, or null when BENCH_DROPIN=none. */
function readSettings(): Settings | null {
  if (process.env.BENCH_DROPIN === 'none') return null
  return {
    ...loadSettings(),
    stores: subset('BENCH_DROPIN', DROPIN_STORES),
    scenarios: subset('BENCH_DROPIN_SCENARIOS', Object.keys(STORE_SCENARIOS) as Scenario[]),
  }
}

const label = (side: DropInSide): string => DROPIN_SIDE_NAMES[side]

interface Cell extends Summary {
  readonly scenario: Scenario
  readonly store: DropInStore
  readonly side: DropInSide
}

/** Drops the keys of a redis cell (a memory cell dies with its process). */
async function dropCell(store: DropInStore, cell: string): Promise<void> {
  if (store !== 'redis') return
  const { createClient } = await import('redis')
  const client = createClient({ url: storeUrls().redis })
  await client.connect()
  try {
    for await (const keys of client.scanIterator({ MATCH: `${cell}:*`, COUNT: 1000 })) {
      if (keys.length > 0) await client.unlink(keys)
    }
  } finally {
    await client.quit()
  }
}

// ---------------------------------------------------------------------------------------------------
// Measuring

interface Contender {
  readonly store: DropInStore
  readonly side: DropInSide
  readonly server: RunningServer
  readonly cookies: readonly string[]
  readonly runs: Run[]
}

const checked = (store: DropInStore, side: DropInSide) => ({
  name: `Express: ${label(side)} on ${DROPIN_STORE_NAMES[store]}`,
  sessions: true,
})

async function prepare(
  store: DropInStore,
  side: DropInSide,
  cell: string,
  scenario: Scenario,
  settings: Settings,
): Promise<Contender> {
  const server = await startServer(
    SERVER_ENTRY,
    { BENCH_STORE: store, BENCH_SIDE: side, BENCH_CELL: cell },
    `${label(side)} on ${store}`,
    settings.profile ? join(RESULTS_DIR, 'profiles', `dropin-${store}-${side}-${scenario}`) : undefined,
  )
  try {
    await verify(checked(store, side), server.base)
    const users = { R: settings.connections, W: settings.connections, 'W-hot': 1, N: 0 }[scenario]
    const cookies = await Promise.all(
      Array.from({ length: users }, () => seed(checked(store, side), server.base)),
    )
    await load(server.base, STORE_PATHS[scenario], cookies, settings.warmupSeconds, settings.connections)
    return { store, side, server, cookies, runs: [] }
  } catch (error) {
    await server.stop()
    throw error
  }
}

function measureOnce(contender: Contender, scenario: Scenario, settings: Settings): Promise<Run> {
  const { store, side, server, cookies } = contender
  const writes = scenario === 'W' || scenario === 'W-hot'
  return measureRun(
    {
      server,
      path: STORE_PATHS[scenario],
      cookies,
      ...(writes ? { counter: () => counterTotal(checked(store, side), server.base, cookies) } : {}),
      // One session per connection, no write may be lost; on one shared session, the last save of
      // the counter wins on both sides (reported).
      lostWritesAreProblems: scenario === 'W',
    },
    settings,
  )
}

/** Both sides on one store in one scenario, measured in turns; a redis cell's keys dropped after. */
async function measureGroup(
  store: DropInStore,
  scenario: Scenario,
  settings: Settings,
  onRun: (contender: Contender, round: number) => void,
): Promise<Cell[]> {
  const contenders: Contender[] = []
  const cells: string[] = []
  try {
    for (const side of DROPIN_SIDES) {
      const cell = `lkdropinbench_${randomBytes(6).toString('hex')}`
      cells.push(cell)
      contenders.push(await prepare(store, side, cell, scenario, settings))
    }
    await interleave(contenders, settings.repeats, (c) => measureOnce(c, scenario, settings), onRun)
    return contenders.map(({ side, runs }) => ({ scenario, store, side, ...summarize(runs) }))
  } finally {
    await Promise.all(contenders.map((contender) => contender.server.stop()))
    for (const cell of cells) {
      await dropCell(store, cell).catch((error: unknown) =>
        console.error(`could not drop ${store} cell ${cell}:`, error),
      )
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Report

/** The aims of issue 16: the drop-in at least as fast as express-session on the same store. */
const AIM_SCENARIOS: readonly Scenario[] = ['R', 'W', 'N']

function report(cells: readonly Cell[], settings: Settings, environment: string, machine: Machine) {
  const installed = versions(['express', 'express-session', 'connect-redis', 'redis', 'autocannon'])
  const find = (scenario: Scenario, store: DropInStore, side: DropInSide): Cell | undefined =>
    cells.find((cell) => cell.scenario === scenario && cell.store === store && cell.side === side)
  const toPeer = (scenario: Scenario, store: DropInStore): number | null =>
    ratio(
      find(scenario, store, 'dropin')?.requestsPerSecond,
      find(scenario, store, 'express-session')?.requestsPerSecond,
    )
  const cpuRatio = (scenario: Scenario, store: DropInStore): number | null => {
    const mine = find(scenario, store, 'dropin')?.serverCpuMicrosSpread.median
    const theirs = find(scenario, store, 'express-session')?.serverCpuMicrosSpread.median
    return ratio(mine, theirs)
  }
  const rate = (cell: Cell | undefined): string =>
    cell === undefined
      ? 'n/a'
      : `${formatRate(cell.requestsPerSecond)} (${formatRange(cell.requestsPerSecondSpread)})`
  const cpu = (cell: Cell | undefined): string => (cell === undefined ? 'n/a' : formatCpu(cell))
  const rows = settings.stores.flatMap((store) =>
    settings.scenarios.map((scenario) => {
      const mine = find(scenario, store, 'dropin')
      const theirs = find(scenario, store, 'express-session')
      const steals = [mine?.stealPercent, theirs?.stealPercent].filter((s) => s != null)
      const problems = [mine, theirs].flatMap((cell) => cell?.problems ?? [])
      return [
        DROPIN_STORE_NAMES[store],
        scenario,
        rate(mine),
        rate(theirs),
        formatRatio(toPeer(scenario, store)),
        cpu(mine),
        cpu(theirs),
        formatRatio(cpuRatio(scenario, store)),
        formatKept(mine),
        formatKept(theirs),
        steals.length === 0
          ? 'n/a'
          : `${Math.max(...steals.map((s) => s.median)).toFixed(1)}% (max ${Math.max(...steals.map((s) => s.max)).toFixed(1)}%)`,
        problems.length === 0 ? 'ok' : problems.join('; '),
      ]
    }),
  )
  const results = table(
    [
      'Store',
      'Scenario',
      'drop-in req/s (min–max)',
      'express-session req/s (min–max)',
      '× express-session',
      'drop-in CPU / req',
      'express-session CPU / req',
      'CPU ×',
      'drop-in writes kept',
      'express-session writes kept',
      'steal (median, max)',
      'checks',
    ],
    rows,
    ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
  )
  const aims = settings.stores.flatMap((store) =>
    AIM_SCENARIOS.filter((scenario) => settings.scenarios.includes(scenario)).map((scenario) => {
      const value = toPeer(scenario, store)
      const cpuValue = cpuRatio(scenario, store)
      return {
        aim: `drop-in ${scenario} ≥ 1× express-session on ${DROPIN_STORE_NAMES[store]}`,
        value: formatRatio(value),
        cpu: formatRatio(cpuValue),
        met: value === null ? null : value >= 1,
      }
    }),
  )
  const aimsTable = table(
    ['Aim (issue 16)', 'req/s ×', 'CPU / req ×', 'met (req/s)'],
    aims.map(({ aim, value, cpu, met }) => [aim, value, cpu, met === null ? 'n/a' : met ? 'met' : 'missed']),
    ['l', 'r', 'r', 'l'],
  )
  const markdown = [
    `${environment}. Express ${installed.express}, express-session ${installed['express-session']}, ` +
      `connect-redis ${installed['connect-redis']} on redis ${installed.redis}; loopback, autocannon ` +
      `${installed.autocannon}, ${settings.connections} connections, ${settings.repeats} runs of ` +
      `${settings.durationSeconds} s per cell after a ${settings.warmupSeconds} s warm-up, each server in its ` +
      'own process (redis: a key prefix of its own, dropped after); the drop-in and express-session are ' +
      'measured in turns, each figure the median of the runs with their min–max. CPU / req: the server ' +
      'process, user + system, median (min–max); CPU ×: the drop-in over express-session (below 1: ' +
      'cheaper). Writes kept: the counters read back after each run against the 2xx answers, summed. ' +
      `CPU steal over this part of the run: ${machine.stealPercent === null ? 'n/a' : `${machine.stealPercent.toFixed(1)}%`}; ` +
      `load average ${formatLoad(machine.loadBefore)} before, ${formatLoad(machine.loadAfter)} after.`,
    '',
    results,
    '',
    aimsTable,
  ].join('\n')
  const json = {
    date: new Date().toISOString(),
    environment,
    versions: installed,
    settings,
    machine,
    cells: cells.map((cell) => ({
      ...cell,
      ratioToExpressSession: cell.side === 'dropin' ? toPeer(cell.scenario, cell.store) : null,
    })),
    aims,
  }
  return { markdown, json }
}

// ---------------------------------------------------------------------------------------------------
// The run

/** Runs the drop-in against express-session (unless BENCH_DROPIN=none); false when a cell had problems. */
export async function runDropIn(): Promise<boolean> {
  const settings = readSettings()
  if (settings === null) return true
  announce(
    `\nlatchkey/express-session against express-session, on Express: ${environment()}`,
    settings.scenarios.length * settings.stores.length * DROPIN_SIDES.length,
    settings,
  )
  const {
    result: cells,
    machine,
    started,
  } = await onMachine(async () => {
    const cells: Cell[] = []
    for (const scenario of settings.scenarios) {
      for (const store of settings.stores) {
        const name = (side: DropInSide): string =>
          `${scenario.padEnd(5)} ${store.padEnd(6)} ${label(side).padEnd(24)}`
        const group = await measureGroup(store, scenario, settings, ({ side, runs }, round) =>
          logRun(name(side), runs[runs.length - 1] as Run, round),
        )
        for (const cell of group) logCell(name(cell.side), cell)
        cells.push(...group)
      }
    }
    return cells
  })
  const { markdown, json } = report(cells, settings, environment(), machine)
  return publish('dropin.json', json, markdown, started, cells)
}

// Run on its own (`npm run bench:dropin`), not when bench/run.ts imports it.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runDropIn()
    .then((ok) => {
      if (!ok) process.exitCode = 1
    })
    .catch((error: unknown) => {
      console.error(error instanceof BehaviourError ? `\nBENCHMARK ABORTED: ${error.message}` : error)
      process.exit(1)
    })
}
