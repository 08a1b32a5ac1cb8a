/**
 * Every bundled store against the store package its users run today, over HTTP on Express 5 (the
 * framework those packages serve), in one run: latchkey's Express adapter on RedisStore, PostgresStore,
 * MySqlStore (on MariaDB here), FileStore and SqliteStore, against express-session on connect-redis
 * (node-redis), connect-pg-simple, express-mysql-session, session-file-store and
 * better-sqlite3-session-store. Part of `npm run bench` (after the front doors); on its own:
 *
 *   npm run bench:peers               5 interleaved runs of 3 s per cell after a 1 s warm-up, 50 connections
 *   npm run bench:peers -- --quick    2 runs of 2 s per cell (smoke test)
 *
 * Environment: BENCH_STORES (redis,postgres,mysql,file,sqlite; `none` to skip this part of
 * `npm run bench`), BENCH_STORE_SCENARIOS (R,W,W-hot,N), BENCH_DURATION, BENCH_REPEATS, BENCH_WARMUP,
 * BENCH_CONNECTIONS, BENCH_POSTGRES_URL, BENCH_MYSQL_URL, BENCH_REDIS_URL (see bench/peer-store-kinds.ts),
 * BENCH_PROFILE=1 (each server writes .cpuprofile files to
 * bench/results/profiles/peer-<store>-<side>-<scenario>/; the largest is the main thread).
 *
 * Scenarios: R reads a session, W increments a counter in it (every connection one user with its own
 * session, created beforehand), W-hot increments the counter of one session all connections share (a
 * busy cart, a dashboard polling and writing), N creates a new session per request. For W and W-hot the
 * counters are read back before and after every run: "writes kept" is what the store kept against the
 * 2xx answers, so that a store that drops writes cannot win by dropping them. A latchkey store that
 * loses a write fails the checks; a peer's losses are reported.
 *
 * Each cell (scenario x store x side) gets a fresh server process with a table, key prefix or folder of
 * its own (random name; folders under the system's temporary folder), checked before it is measured
 * (see verify in bench/harness.ts), and dropped once the process has stopped, also on failure. The two
 * sides of a store are measured in turns (run 1 of each, then run 2 in the other order...), each run
 * with the machine's CPU steal over it; a cell reports the median of its runs with their spread, and the
 * server's CPU time per request. Results: markdown on stdout, bench/results/peer-stores.json.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
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
import type { PeerStore, Side } from './peer-store-kinds.js'
import { PEER_STORES, SIDES, STORE_NAMES, storeUrls } from './peer-store-kinds.js'

type Scenario = StoreScenario

const SERVER_ENTRY = join(ROOT, 'bench', 'peer-store-server.ts')
const URLS = storeUrls()

interface Settings extends LoadSettings {
  readonly stores: readonly PeerStore[]
  readonly scenarios: readonly Scenario[]
}

/** The settings, or null when BENCH_STORES=none. */
function readSettings(): Settings | null {
  if (process.env.BENCH_STORES === 'none') return null
  return {
    ...loadSettings(),
    stores: subset('BENCH_STORES', PEER_STORES),
    scenarios: subset('BENCH_STORE_SCENARIOS', Object.keys(STORE_SCENARIOS) as Scenario[]),
  }
}

function label(store: PeerStore, side: Side): string {
  return side === 'latchkey' ? `latchkey + ${STORE_NAMES[store].latchkey}` : STORE_NAMES[store].peer
}

interface Cell extends Summary {
  readonly scenario: Scenario
  readonly store: PeerStore
  readonly side: Side
}

// ---------------------------------------------------------------------------------------------------
// The cell's own table, key prefix or folder

/** A new name for a cell's table or key prefix, or a new folder for its files. */
function newCell(store: PeerStore): string {
  if (store === 'file' || store === 'sqlite')
    return mkdtempSync(join(tmpdir(), `latchkey-peerbench-${store}-`))
  return `lkpeerbench_${randomBytes(6).toString('hex')}`
}

/** Drops what a cell's server made: its table (and latchkey's schema row), its keys, its folder. */
async function dropCell(store: PeerStore, cell: string): Promise<void> {
  switch (store) {
    case 'file':
    case 'sqlite':
      rmSync(cell, { recursive: true, force: true })
      return
    case 'postgres': {
      const pg = (await import('pg')).default
      const client = new pg.Client({ connectionString: URLS.postgres })
      await client.connect()
      try {
        await client.query(`DROP TABLE IF EXISTS "${cell}"`)
        await client.query('DELETE FROM latchkey_schema WHERE table_name = $1', [cell]).catch(() => {})
      } finally {
        await client.end()
      }
      return
    }
    case 'mysql': {
      const mysql = (await import('mysql2/promise')).default
      const connection = await mysql.createConnection({ uri: URLS.mysql })
      try {
        await connection.query(`DROP TABLE IF EXISTS \`${cell}\``)
        await connection.query('DELETE FROM latchkey_schema WHERE table_name = ?', [cell]).catch(() => {})
      } finally {
        await connection.end()
      }
      return
    }
    case 'redis': {
      const { createClient } = await import('redis')
      const client = createClient({ url: URLS.redis })
      await client.connect()
      try {
        for await (const keys of client.scanIterator({ MATCH: `${cell}:*`, COUNT: 1000 })) {
          if (keys.length > 0) await client.unlink(keys)
        }
      } finally {
        await client.quit()
      }
      return
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Measuring

/** A server of the group being measured, started, checked, seeded and warmed up. */
interface Contender {
  readonly store: PeerStore
  readonly side: Side
  readonly cell: string
  readonly server: RunningServer
  readonly cookies: readonly string[]
  readonly runs: Run[]
}

const checked = (store: PeerStore, side: Side) => ({ name: `Express: ${label(store, side)}`, sessions: true })

async function prepare(
  store: PeerStore,
  side: Side,
  cell: string,
  scenario: Scenario,
  settings: Settings,
): Promise<Contender> {
  const server = await startServer(
    SERVER_ENTRY,
    { BENCH_STORE: store, BENCH_SIDE: side, BENCH_CELL: cell },
    label(store, side),
    settings.profile ? join(RESULTS_DIR, 'profiles', `peer-${store}-${side}-${scenario}`) : undefined,
  )
  try {
    await verify(checked(store, side), server.base)
    const users = { R: settings.connections, W: settings.connections, 'W-hot': 1, N: 0 }[scenario]
    const cookies = await Promise.all(
      Array.from({ length: users }, () => seed(checked(store, side), server.base)),
    )
    await load(server.base, STORE_PATHS[scenario], cookies, settings.warmupSeconds, settings.connections)
    return { store, side, cell, server, cookies, runs: [] }
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
      lostWritesAreProblems: side === 'latchkey',
    },
    settings,
  )
}

/** Both sides of one store in one scenario, measured in turns; every cell's table, keys or folder dropped after. */
async function measureGroup(
  store: PeerStore,
  scenario: Scenario,
  settings: Settings,
  onRun: (contender: Contender, round: number) => void,
): Promise<Cell[]> {
  const contenders: Contender[] = []
  const cells: string[] = []
  try {
    for (const side of SIDES) {
      const cell = newCell(store)
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

const keptAll = (cell: Cell | undefined): boolean | null =>
  cell?.writesApplied === undefined ? null : cell.writesApplied >= cell.responses2xx

/** The aims of issue 18: latchkey's req/s over the peer's, one session per connection unless named. */
const AIMS: Record<PeerStore, { readonly scenarios: readonly Scenario[]; readonly atLeast: number }[]> = {
  redis: [{ scenarios: ['R', 'W', 'N'], atLeast: 1.2 }],
  postgres: [{ scenarios: ['R', 'W', 'N'], atLeast: 2 }],
  mysql: [{ scenarios: ['R', 'W', 'N'], atLeast: 1.5 }],
  file: [
    { scenarios: ['R', 'W'], atLeast: 5 },
    { scenarios: ['N'], atLeast: 1 },
  ],
  sqlite: [{ scenarios: ['R', 'W', 'N'], atLeast: 1 }],
}

function report(cells: readonly Cell[], settings: Settings, environment: string, machine: Machine) {
  const installed = versions([
    'express',
    'express-session',
    ...PEER_STORES.map((store) => STORE_NAMES[store].peer),
    'redis',
    'pg',
    'mysql2',
    'better-sqlite3',
    'autocannon',
  ])
  const find = (scenario: Scenario, store: PeerStore, side: Side): Cell | undefined =>
    cells.find((cell) => cell.scenario === scenario && cell.store === store && cell.side === side)
  const toPeer = (scenario: Scenario, store: PeerStore): number | null =>
    ratio(
      find(scenario, store, 'latchkey')?.requestsPerSecond,
      find(scenario, store, 'peer')?.requestsPerSecond,
    )
  const rate = (cell: Cell | undefined): string =>
    cell === undefined
      ? 'n/a'
      : `${formatRate(cell.requestsPerSecond)} (${formatRange(cell.requestsPerSecondSpread)})`
  const cpu = (cell: Cell | undefined): string => (cell === undefined ? 'n/a' : formatCpu(cell))
  const rows = settings.stores.flatMap((store) =>
    settings.scenarios.map((scenario) => {
      const mine = find(scenario, store, 'latchkey')
      const theirs = find(scenario, store, 'peer')
      const steals = [mine?.stealPercent, theirs?.stealPercent].filter((s) => s != null)
      const problems = [mine, theirs].flatMap((cell) => cell?.problems ?? [])
      return [
        `${STORE_NAMES[store].latchkey} vs ${STORE_NAMES[store].peer} ${installed[STORE_NAMES[store].peer]}`,
        scenario,
        rate(mine),
        rate(theirs),
        formatRatio(toPeer(scenario, store)),
        formatKept(mine),
        formatKept(theirs),
        cpu(mine),
        cpu(theirs),
        steals.length === 0 ? 'n/a' : `${Math.max(...steals.map((s) => s.max)).toFixed(1)}%`,
        problems.length === 0 ? 'ok' : problems.join('; '),
      ]
    }),
  )
  const results = table(
    [
      'Stores',
      'Scenario',
      'latchkey req/s (min–max)',
      'peer req/s (min–max)',
      '× peer',
      'latchkey writes kept',
      'peer writes kept',
      'latchkey CPU / req',
      'peer CPU / req',
      'max steal',
      'checks',
    ],
    rows,
    ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
  )
  const aims = settings.stores.flatMap((store) => {
    const names = STORE_NAMES[store]
    const ratios = AIMS[store].flatMap(({ scenarios, atLeast }) =>
      scenarios
        .filter((scenario) => settings.scenarios.includes(scenario))
        .map((scenario) => {
          const value = toPeer(scenario, store)
          return {
            aim: `${names.latchkey} ${scenario} ≥ ${atLeast}× ${names.peer}`,
            value: formatRatio(value),
            met: value === null ? null : value >= atLeast,
          }
        }),
    )
    if (!settings.scenarios.includes('W-hot')) return ratios
    const hot = find('W-hot', store, 'latchkey')
    const hotOverRead = ratio(hot?.requestsPerSecond, find('R', store, 'latchkey')?.requestsPerSecond)
    return [
      ...ratios,
      { aim: `${names.latchkey} W-hot keeps every write`, value: formatKept(hot), met: keptAll(hot) },
      {
        aim: `${names.latchkey} W-hot ≥ 0.5× its own R`,
        value: formatRatio(hotOverRead),
        met: hotOverRead === null ? null : hotOverRead >= 0.5,
      },
    ]
  })
  const aimsTable = table(
    ['Aim (issue 18)', 'measured', 'met'],
    aims.map(({ aim, value, met }) => [aim, value, met === null ? 'n/a' : met ? 'met' : 'missed']),
    ['l', 'r', 'l'],
  )
  const markdown = [
    `${environment}. Express ${installed.express}, express-session ${installed['express-session']}; loopback, ` +
      `autocannon ${installed.autocannon}, ${settings.connections} connections, ${settings.repeats} runs of ` +
      `${settings.durationSeconds} s per cell after a ${settings.warmupSeconds} s warm-up, each server in its ` +
      'own process with a table, key prefix or folder of its own, dropped after; latchkey and the peer are ' +
      'measured in turns, each figure the median of the runs with their min–max. Writes kept: the counters ' +
      'read back after each run against the 2xx answers, summed over the runs. CPU / req: the server ' +
      'process, user + system, median (min–max). CPU steal over this part of the run: ' +
      `${machine.stealPercent === null ? 'n/a' : `${machine.stealPercent.toFixed(1)}%`}; load average ` +
      `${formatLoad(machine.loadBefore)} before, ${formatLoad(machine.loadAfter)} after.`,
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
      ratioToPeer: cell.side === 'latchkey' ? toPeer(cell.scenario, cell.store) : null,
    })),
    aims,
  }
  return { markdown, json }
}

// ---------------------------------------------------------------------------------------------------
// The run

/** Runs every store against its peer (unless BENCH_STORES=none); false when a cell had problems. */
export async function runPeerStores(): Promise<boolean> {
  const settings = readSettings()
  if (settings === null) return true
  announce(
    `\nEvery store against its peer, on Express: ${environment()}`,
    settings.scenarios.length * settings.stores.length * SIDES.length,
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
        const name = (side: Side): string => `${scenario.padEnd(5)} ${label(store, side).padEnd(30)}`
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
  return publish('peer-stores.json', json, markdown, started, cells)
}

// Run on its own (`npm run bench:peers`), not when bench/run.ts imports it.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runPeerStores()
    .then((ok) => {
      if (!ok) process.exitCode = 1
    })
    .catch((error: unknown) => {
      console.error(error instanceof BehaviourError ? `\nBENCHMARK ABORTED: ${error.message}` : error)
      process.exit(1)
    })
}
