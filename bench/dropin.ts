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
 * and the server's CPU time per request (the runner: bench/compare.ts). Results: markdown on stdout,
 * bench/results/dropin.json.
 */
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { Comparison, StoreScenario } from './compare.js'
import { comparedCells, formatKept, runComparison, runWhenMain } from './compare.js'
import type { DropInSide, DropInStore } from './dropin-kinds.js'
import { DROPIN_SIDE_NAMES, DROPIN_SIDES, DROPIN_STORE_NAMES, DROPIN_STORES } from './dropin-kinds.js'
import { formatLoad, formatRatio, ROOT, ratio, table, versions } from './harness.js'
import { dropRedisKeys } from './peer-store-kinds.js'

type Scenario = StoreScenario

const label = (side: DropInSide): string => DROPIN_SIDE_NAMES[side]

/** The aims of issue 16: the drop-in at least as fast as express-session on the same store. */
const AIM_SCENARIOS: readonly Scenario[] = ['R', 'W', 'N']

const DROPIN: Comparison<DropInStore, DropInSide> = {
  title: '\nlatchkey/express-session against express-session, on Express',
  storesVariable: 'BENCH_DROPIN',
  stores: DROPIN_STORES,
  scenariosVariable: 'BENCH_DROPIN_SCENARIOS',
  sides: DROPIN_SIDES,
  mine: 'dropin',
  theirs: 'express-session',
  serverEntry: join(ROOT, 'bench', 'dropin-server.ts'),
  profilePrefix: 'dropin',
  resultsFile: 'dropin.json',
  serverName: (store, side) => `${label(side)} on ${store}`,
  checkedName: (store, side) => `Express: ${label(side)} on ${DROPIN_STORE_NAMES[store]}`,
  logName: (scenario, store, side) => `${scenario.padEnd(5)} ${store.padEnd(6)} ${label(side).padEnd(24)}`,
  newCell: () => `lkdropinbench_${randomBytes(6).toString('hex')}`,
  // A redis cell's keys; a memory cell dies with its process.
  dropCell: async (store, cell) => {
    if (store === 'redis') await dropRedisKeys(`${cell}:`)
  },
  // One session per connection, no write may be lost; on one shared session, the last save of the
  // counter wins on both sides (reported).
  lostWritesAreProblems: (scenario) => scenario === 'W',
  report(cells, settings, environment, machine) {
    const installed = versions(['express', 'express-session', 'connect-redis', 'redis', 'autocannon'])
    const { find, toTheirs: toPeer, rate, cpu, rows, json } = comparedCells(cells, settings, this)
    const cpuRatio = (scenario: Scenario, store: DropInStore): number | null => {
      const mine = find(scenario, store, 'dropin')?.serverCpuMicrosSpread.median
      const theirs = find(scenario, store, 'express-session')?.serverCpuMicrosSpread.median
      return ratio(mine, theirs)
    }
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
      rows(({ store, scenario, mine, theirs, steals, checks }) => [
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
        checks,
      ]),
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
      aims.map(({ aim, value, cpu, met }) => [
        aim,
        value,
        cpu,
        met === null ? 'n/a' : met ? 'met' : 'missed',
      ]),
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
    return { markdown, json: json(environment, installed, machine, 'ratioToExpressSession', aims) }
  },
}

/** Runs the drop-in against express-session (unless BENCH_DROPIN=none); false when a cell had problems. */
export function runDropIn(): Promise<boolean> {
  return runComparison(DROPIN)
}

// Run on its own (`npm run bench:dropin`), not when bench/run.ts imports it.
runWhenMain(import.meta.url, runDropIn)
