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
 * server's CPU time per request (the runner: bench/compare.ts). Results: markdown on stdout,
 * bench/results/peer-stores.json.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ComparedCell, Comparison, StoreScenario } from './compare.js'
import { comparedCells, formatKept, runComparison, runWhenMain } from './compare.js'
import { formatLoad, formatRatio, ROOT, ratio, table, versions } from './harness.js'
import type { PeerStore, Side } from './peer-store-kinds.js'
import { dropRedisKeys, PEER_STORES, SIDES, STORE_NAMES, storeUrls } from './peer-store-kinds.js'

type Scenario = StoreScenario
type Cell = ComparedCell<PeerStore, Side>

const URLS = storeUrls()

function label(store: PeerStore, side: Side): string {
  return side === 'latchkey' ? `latchkey + ${STORE_NAMES[store].latchkey}` : STORE_NAMES[store].peer
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
    case 'redis':
      return dropRedisKeys(`${cell}:`)
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

const PEERS: Comparison<PeerStore, Side> = {
  title: '\nEvery store against its peer, on Express',
  storesVariable: 'BENCH_STORES',
  stores: PEER_STORES,
  scenariosVariable: 'BENCH_STORE_SCENARIOS',
  sides: SIDES,
  mine: 'latchkey',
  theirs: 'peer',
  serverEntry: join(ROOT, 'bench', 'peer-store-server.ts'),
  profilePrefix: 'peer',
  resultsFile: 'peer-stores.json',
  serverName: label,
  checkedName: (store, side) => `Express: ${label(store, side)}`,
  logName: (scenario, store, side) => `${scenario.padEnd(5)} ${label(store, side).padEnd(30)}`,
  newCell,
  dropCell,
  lostWritesAreProblems: (_scenario, side) => side === 'latchkey',
  report(cells, settings, environment, machine) {
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
    const { find, toTheirs: toPeer, rate, cpu, rows, json } = comparedCells(cells, settings, this)
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
      rows(({ store, scenario, mine, theirs, steals, checks }) => [
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
        checks,
      ]),
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
    return { markdown, json: json(environment, installed, machine, 'ratioToPeer', aims) }
  },
}

/** Runs every store against its peer (unless BENCH_STORES=none); false when a cell had problems. */
export function runPeerStores(): Promise<boolean> {
  return runComparison(PEERS)
}

// Run on its own (`npm run bench:peers`), not when bench/run.ts imports it.
runWhenMain(import.meta.url, runPeerStores)
