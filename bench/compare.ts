/**
 * The store comparisons, written once for `bench/peer-stores.ts` (latchkey's stores against the store
 * packages of their peers) and `bench/dropin.ts` (latchkey/express-session against express-session):
 * Express on one store, two sides, the store scenarios (R, W, W-hot, N) with their writes kept.
 *
 * The settings come from the environment (the stores' and the scenarios' variables of each
 * comparison, and those of {@link loadSettings}). Each cell (scenario x store x side) gets a fresh
 * server process with a cell of its own (`BENCH_STORE`, `BENCH_SIDE`, `BENCH_CELL`: a table, key
 * prefix or folder, dropped once the process has stopped, also on failure), checked before it is
 * measured, seeded and warmed up; the two sides of a store are measured in turns, each run with the
 * machine's CPU steal over it; a cell reports the median of its runs with their spread, the server's
 * CPU time per request, and for W and W-hot the counters read back before and after every run against
 * the 2xx answers. Each comparison writes its own report (markdown on stdout, bench/results/*.json).
 */
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { LoadSettings, Machine, Summary } from './harness.js'
import {
  BehaviourError,
  environment,
  formatCpu,
  formatRange,
  formatRate,
  loadSettings,
  measureInTurns,
  RESULTS_DIR,
  ratio,
  runBenchmark,
  startServer,
  subset,
} from './harness.js'

// ---------------------------------------------------------------------------------------------------
// The store scenarios

/** The scenarios of the store benchmarks, by name. */
export const STORE_SCENARIOS = {
  R: 'read a session',
  W: 'write, a session per connection',
  'W-hot': 'write, one session for all',
  N: 'new session per request',
} as const
export type StoreScenario = keyof typeof STORE_SCENARIOS
/** The path each store scenario loads (W-hot is W on one shared session). */
export const STORE_PATHS: Record<StoreScenario, string> = { R: '/r', W: '/w', 'W-hot': '/w', N: '/n' }

/** The writes a cell kept against its 2xx answers ("all" up to the requests cut off at a run's end). */
export function formatKept(cell: Summary | undefined): string {
  if (cell?.writesApplied === undefined) return ''
  const kept = Math.min(cell.writesApplied, cell.responses2xx)
  if (kept >= cell.responses2xx) return `all (${formatRate(cell.responses2xx)})`
  const percent = (100 * kept) / Math.max(1, cell.responses2xx)
  return `${percent < 10 ? percent.toFixed(1) : Math.round(percent)} % (${formatRate(kept)} of ${formatRate(cell.responses2xx)})`
}

// ---------------------------------------------------------------------------------------------------
// A comparison

/** The settings of a comparison: the load, the stores and the scenarios. */
export interface ComparisonSettings<K extends string> extends LoadSettings {
  readonly stores: readonly K[]
  readonly scenarios: readonly StoreScenario[]
}

/** One measured cell: a side on a store in a scenario. */
export interface ComparedCell<K extends string, S extends string> extends Summary {
  readonly scenario: StoreScenario
  readonly store: K
  readonly side: S
}

/** What sets one comparison apart from the other: its stores, its sides, its server and its names. */
export interface Comparison<K extends string, S extends string> {
  /** Printed before the run, followed by `: ` and the environment. */
  readonly title: string
  /** The variable choosing the stores (`none`: skip the comparison), and all the stores. */
  readonly storesVariable: string
  readonly stores: readonly K[]
  /** The variable choosing the scenarios. */
  readonly scenariosVariable: string
  /** Both sides, in the order they are started and first measured. */
  readonly sides: readonly S[]
  /** latchkey's side, and the side it is compared with. */
  readonly mine: S
  readonly theirs: S
  /** The server process's entry (its env: BENCH_STORE, BENCH_SIDE, BENCH_CELL). */
  readonly serverEntry: string
  /** Profiles go to bench/results/profiles/<profilePrefix>-<store>-<side>-<scenario>/. */
  readonly profilePrefix: string
  /** The results' file in bench/results/. */
  readonly resultsFile: string
  /** The server's name when it fails to start, in the behaviour checks, and in the progress lines. */
  serverName(store: K, side: S): string
  checkedName(store: K, side: S): string
  logName(scenario: StoreScenario, store: K, side: S): string
  /** A new cell (table, key prefix or folder) for a server, and what drops it once the server has stopped. */
  newCell(store: K): string
  dropCell(store: K, cell: string): Promise<void>
  /** Whether a run that keeps fewer writes than it answered has a problem (else only reported). */
  lostWritesAreProblems(scenario: StoreScenario, side: S): boolean
  /** The markdown and the JSON of the results. */
  report(
    cells: readonly ComparedCell<K, S>[],
    settings: ComparisonSettings<K>,
    environment: string,
    machine: Machine,
  ): { markdown: string; json: object }
}

/** Both sides on one store in one scenario, measured in turns; every cell dropped after. */
async function measureGroup<K extends string, S extends string>(
  c: Comparison<K, S>,
  store: K,
  scenario: StoreScenario,
  settings: ComparisonSettings<K>,
): Promise<ComparedCell<K, S>[]> {
  const cells: string[] = []
  const users = { R: settings.connections, W: settings.connections, 'W-hot': 1, N: 0 }[scenario]
  try {
    const entrants = c.sides.map((side) => ({
      name: c.logName(scenario, store, side),
      start: () => {
        const cell = c.newCell(store)
        cells.push(cell)
        return startServer(
          c.serverEntry,
          { BENCH_STORE: store, BENCH_SIDE: side, BENCH_CELL: cell },
          c.serverName(store, side),
          settings.profile
            ? join(RESULTS_DIR, 'profiles', `${c.profilePrefix}-${store}-${side}-${scenario}`)
            : undefined,
        )
      },
      checked: { name: c.checkedName(store, side), sessions: true },
      path: STORE_PATHS[scenario],
      users,
      countsWrites: scenario === 'W' || scenario === 'W-hot',
      lostWritesAreProblems: c.lostWritesAreProblems(scenario, side),
    }))
    const summaries = await measureInTurns(entrants, settings)
    return summaries.map((summary, i) => ({ scenario, store, side: c.sides[i] as S, ...summary }))
  } finally {
    for (const cell of cells) {
      await c
        .dropCell(store, cell)
        .catch((error: unknown) => console.error(`could not drop ${store} cell ${cell}:`, error))
    }
  }
}

/** Runs a comparison (unless its stores' variable is `none`); false when a cell had problems. */
export async function runComparison<K extends string, S extends string>(
  c: Comparison<K, S>,
): Promise<boolean> {
  if (process.env[c.storesVariable] === 'none') return true
  const settings: ComparisonSettings<K> = {
    ...loadSettings(),
    stores: subset(c.storesVariable, c.stores),
    scenarios: subset(c.scenariosVariable, Object.keys(STORE_SCENARIOS) as StoreScenario[]),
  }
  return runBenchmark(
    `${c.title}: ${environment()}`,
    settings.scenarios.length * settings.stores.length * c.sides.length,
    settings,
    settings.scenarios.flatMap((scenario) =>
      settings.stores.map((store) => () => measureGroup(c, store, scenario, settings)),
    ),
    (cells, environment, machine) => c.report(cells, settings, environment, machine),
    c.resultsFile,
  )
}

/**
 * Runs `run` when the module at `url` is the program (`npm run bench:peers`, `npm run bench:dropin`),
 * not when bench/run.ts imports it; a cell with problems sets the exit code, an error ends the program.
 */
export function runWhenMain(url: string, run: () => Promise<boolean>): void {
  if (process.argv[1] === undefined || url !== pathToFileURL(process.argv[1]).href) return
  run()
    .then((ok) => {
      if (!ok) process.exitCode = 1
    })
    .catch((error: unknown) => {
      console.error(error instanceof BehaviourError ? `\nBENCHMARK ABORTED: ${error.message}` : error)
      process.exit(1)
    })
}

// ---------------------------------------------------------------------------------------------------
// The pieces of a comparison's report

/** One row of a comparison's table: a store in a scenario, with both sides' cells. */
export interface Pair<K extends string, S extends string> {
  readonly store: K
  readonly scenario: StoreScenario
  readonly mine: ComparedCell<K, S> | undefined
  readonly theirs: ComparedCell<K, S> | undefined
  /** Both cells' steal, where measured. */
  readonly steals: readonly NonNullable<Summary['stealPercent']>[]
  /** `ok`, or both cells' problems. */
  readonly checks: string
}

/** What both reports read from the cells: the cells by name, the req/s ratio, the columns alike. */
export function comparedCells<K extends string, S extends string>(
  cells: readonly ComparedCell<K, S>[],
  settings: ComparisonSettings<K>,
  sides: { readonly mine: S; readonly theirs: S },
) {
  const find = (scenario: StoreScenario, store: K, side: S): ComparedCell<K, S> | undefined =>
    cells.find((cell) => cell.scenario === scenario && cell.store === store && cell.side === side)
  /** latchkey's median req/s over the other side's. */
  const toTheirs = (scenario: StoreScenario, store: K): number | null =>
    ratio(
      find(scenario, store, sides.mine)?.requestsPerSecond,
      find(scenario, store, sides.theirs)?.requestsPerSecond,
    )
  return {
    find,
    toTheirs,
    rate: (cell: ComparedCell<K, S> | undefined): string =>
      cell === undefined
        ? 'n/a'
        : `${formatRate(cell.requestsPerSecond)} (${formatRange(cell.requestsPerSecondSpread)})`,
    cpu: (cell: ComparedCell<K, S> | undefined): string => (cell === undefined ? 'n/a' : formatCpu(cell)),
    /** A table row for every store and scenario measured, stores first. */
    rows: (row: (pair: Pair<K, S>) => string[]): string[][] =>
      settings.stores.flatMap((store) =>
        settings.scenarios.map((scenario) => {
          const mine = find(scenario, store, sides.mine)
          const theirs = find(scenario, store, sides.theirs)
          const steals = [mine?.stealPercent, theirs?.stealPercent].filter((s) => s != null)
          const problems = [mine, theirs].flatMap((cell) => cell?.problems ?? [])
          return row({
            store,
            scenario,
            mine,
            theirs,
            steals,
            checks: problems.length === 0 ? 'ok' : problems.join('; '),
          })
        }),
      ),
    /** The JSON of the results; each of latchkey's cells with its req/s ratio under `ratioKey`. */
    json: (
      environment: string,
      installed: Record<string, string>,
      machine: Machine,
      ratioKey: string,
      aims: readonly object[],
    ) => ({
      date: new Date().toISOString(),
      environment,
      versions: installed,
      settings,
      machine,
      cells: cells.map((cell) => ({
        ...cell,
        [ratioKey]: cell.side === sides.mine ? toTheirs(cell.scenario, cell.store) : null,
      })),
      aims,
    }),
  }
}
