/**
 * HTTP load benchmark, on loopback, in one run: for node:http and each framework latchkey has an
 * adapter for (Express, Fastify, Hono, Koa), the framework alone, the framework with latchkey on
 * MemoryStore and on SqliteStore, and the framework with the session middleware its users use today
 * (the peer: see PEERS in bench/protocol.ts).
 *
 *   npm run bench                  5 interleaved runs of 3 s per cell after a 1 s warm-up, 50 connections
 *                                  (about 20 min on 2 cores)
 *   npm run bench -- --quick       2 runs of 2 s per cell after a 1 s warm-up (smoke test)
 *
 * Then, in the same run, every bundled store against the store package its users run today, on Express
 * (bench/peer-stores.ts: BENCH_STORES, BENCH_STORE_SCENARIOS; BENCH_STORES=none skips it,
 * BENCH_FRAMEWORKS=none runs it alone), and latchkey/express-session against express-session on the same
 * stores (bench/dropin.ts: BENCH_DROPIN, BENCH_DROPIN_SCENARIOS; BENCH_DROPIN=none skips it).
 *
 * Environment: BENCH_DURATION (s, one run), BENCH_REPEATS (runs per cell), BENCH_WARMUP (s),
 * BENCH_CONNECTIONS, and comma-separated subsets:
 * BENCH_FRAMEWORKS (node,express,fastify,hono,koa), BENCH_SERVERS (bare,latchkey-memory,
 * latchkey-sqlite,peer; `express-session` is taken for `peer`), BENCH_SCENARIOS (R,W,N).
 * BENCH_PROFILE=1: each server writes .cpuprofile files to
 * bench/results/profiles/<framework>-<server>-<scenario>/ (the largest is the main thread).
 *
 * Each cell (scenario x framework x server) gets a fresh server process, checked for correct
 * behaviour before it is measured. The servers of one framework and scenario run side by side and are
 * measured in turns: run 1 of each, then run 2 of each (in a rotated order), and so on, so that the
 * machine's drift (other work on a shared machine, CPU steal) reaches them alike. A cell reports the
 * median of its runs and their spread (min–max); ratios are of medians. Each run also records the
 * machine's CPU steal over it (from /proc/stat). In R and W every connection is one user with its own
 * session, created beforehand. Results: a table on stdout, markdown tables for the README (one per
 * framework, with ratios to the bare framework and to the peer, and the aims of issue 8), and
 * bench/results/latest.json (every run of every cell in it).
 */
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runDropIn } from './dropin.js'
import type { Checked, LoadSettings, Machine, RunningServer, Summary } from './harness.js'
import {
  BehaviourError,
  environment,
  formatCpu,
  formatLoad,
  formatRange,
  formatRate,
  formatRatio,
  formatUserSystem,
  loadSettings,
  measureInTurns,
  RESULTS_DIR,
  ratio,
  runBenchmark,
  startServer,
  subset,
  table,
  versions,
} from './harness.js'
import { runPeerStores } from './peer-stores.js'
import type { Framework, ServerKind } from './protocol.js'
import { FRAMEWORKS, PEERS, SERVER_KINDS } from './protocol.js'

const SCENARIOS = {
  R: 'read a session',
  W: 'write a session',
  N: 'new session per request',
} as const
type Scenario = keyof typeof SCENARIOS

const FRAMEWORK_NAMES: Record<Framework, string> = {
  node: 'node:http',
  express: 'Express',
  fastify: 'Fastify',
  hono: 'Hono',
  koa: 'Koa',
}

/** The npm package of each framework, for its version in the report (node:http: Node's own). */
const FRAMEWORK_PACKAGES: Record<Framework, string | null> = {
  node: null,
  express: 'express',
  fastify: 'fastify',
  hono: 'hono',
  koa: 'koa',
}

/** Where each peer keeps its sessions here (see bench/server.ts): in memory, each its own way. */
const PEER_STORES: Record<Framework, string> = {
  node: 'MemoryStore',
  express: 'MemoryStore',
  fastify: 'its memory store',
  hono: 'MemoryStore',
  koa: 'a Map as store',
}

function label(framework: Framework, server: ServerKind): string {
  switch (server) {
    case 'bare':
      return `${FRAMEWORK_NAMES[framework]} (no sessions)`
    case 'latchkey-memory':
      return 'latchkey + MemoryStore'
    case 'latchkey-sqlite':
      return 'latchkey + SqliteStore'
    case 'peer':
      return `${PEERS[framework]} (${PEER_STORES[framework]})`
  }
}

const HERE = dirname(fileURLToPath(import.meta.url))
const SERVER_ENTRY = join(HERE, 'server.ts')
const PATHS: Record<Scenario, string> = { R: '/r', W: '/w', N: '/n' }

interface Settings extends LoadSettings {
  readonly frameworks: readonly Framework[]
  readonly servers: readonly ServerKind[]
  readonly scenarios: readonly Scenario[]
}

interface Cell extends Summary {
  readonly scenario: Scenario
  readonly framework: Framework
  readonly server: ServerKind
}

function readSettings(): Settings {
  return {
    ...loadSettings(),
    // `none`: only the stores against their peers.
    frameworks: process.env.BENCH_FRAMEWORKS === 'none' ? [] : subset('BENCH_FRAMEWORKS', FRAMEWORKS),
    // `express-session` was the peer's name when node:http was the only front door.
    servers: subset('BENCH_SERVERS', SERVER_KINDS, { 'express-session': 'peer' }),
    scenarios: subset('BENCH_SCENARIOS', Object.keys(SCENARIOS) as Scenario[]),
  }
}

// ---------------------------------------------------------------------------------------------------
// Server processes

/** Which server of which framework. */
interface Target {
  readonly framework: Framework
  readonly server: ServerKind
}

function startTarget(target: Target, scenario: Scenario, settings: Settings): Promise<RunningServer> {
  const { framework, server: kind } = target
  return startServer(
    SERVER_ENTRY,
    { BENCH_FRAMEWORK: framework, BENCH_SERVER: kind },
    `${framework} ${kind}`,
    settings.profile ? join(RESULTS_DIR, 'profiles', `${framework}-${kind}-${scenario}`) : undefined,
  )
}

function checked(target: Target): Checked {
  return {
    name: `${FRAMEWORK_NAMES[target.framework]}: ${label(target.framework, target.server)}`,
    sessions: target.server !== 'bare',
  }
}

/**
 * Measures every server of one framework in one scenario: all are started, checked, seeded and warmed
 * up, then measured in turns, one run each per round, the order rotated from round to round.
 */
async function measureGroup(framework: Framework, scenario: Scenario, settings: Settings): Promise<Cell[]> {
  const entrants = settings.servers.map((server) => {
    const target = { framework, server }
    return {
      name: `${scenario}  ${framework.padEnd(7)} ${label(framework, server).padEnd(35)}`,
      start: () => startTarget(target, scenario, settings),
      checked: checked(target),
      path: PATHS[scenario],
      users: scenario === 'N' ? 0 : settings.connections,
      countsWrites: scenario === 'W',
    }
  })
  const summaries = await measureInTurns(entrants, settings)
  return summaries.map((summary, i) => ({
    scenario,
    framework,
    server: settings.servers[i] as ServerKind,
    ...summary,
  }))
}

// ---------------------------------------------------------------------------------------------------
// Report

/** The versions compared, read from the installed packages. */
function installedVersions(): Record<string, string> {
  return versions([
    ...FRAMEWORKS.map((framework) => FRAMEWORK_PACKAGES[framework]).filter((name) => name !== null),
    '@hono/node-server',
    ...new Set(Object.values(PEERS)),
    '@fastify/cookie',
    'autocannon',
  ])
}

/** The aims of issue 8, each a ratio of latchkey's req/s to another server's on the same framework. */
const AIMS: readonly {
  readonly framework: Framework
  readonly scenario: Scenario
  readonly over: 'bare' | 'peer'
  readonly atLeast: number
}[] = [
  { framework: 'express', scenario: 'R', over: 'bare', atLeast: 0.85 },
  { framework: 'fastify', scenario: 'R', over: 'bare', atLeast: 0.5 },
  { framework: 'fastify', scenario: 'R', over: 'peer', atLeast: 2 },
  { framework: 'fastify', scenario: 'W', over: 'peer', atLeast: 2 },
]

function report(
  cells: readonly Cell[],
  settings: Settings,
  environment: string,
  machine: Machine,
): { markdown: string; json: object } {
  const installed = installedVersions()
  const find = (scenario: Scenario, framework: Framework, server: ServerKind): Cell | undefined =>
    cells.find((cell) => cell.scenario === scenario && cell.framework === framework && cell.server === server)
  const rate = (scenario: Scenario, framework: Framework, server: ServerKind): number | undefined =>
    find(scenario, framework, server)?.requestsPerSecond
  const toBare = (cell: Cell): number | null =>
    ratio(cell.requestsPerSecond, rate(cell.scenario, cell.framework, 'bare'))
  const toPeer = (cell: Cell): number | null =>
    ratio(cell.requestsPerSecond, rate(cell.scenario, cell.framework, 'peer'))

  const groups = settings.frameworks.map((framework) => {
    const name = FRAMEWORK_NAMES[framework]
    const pkg = FRAMEWORK_PACKAGES[framework]
    const title =
      `**${pkg === null ? `${name} (Node ${process.version})` : `${name} ${installed[pkg]}`}**, ` +
      `peer: ${PEERS[framework]} ${installed[PEERS[framework]]}` +
      (framework === 'fastify' ? ` with @fastify/cookie ${installed['@fastify/cookie']}` : '') +
      (framework === 'hono' ? `, on @hono/node-server ${installed['@hono/node-server']}` : '')
    const rows = cells
      .filter((cell) => cell.framework === framework)
      .map((cell) => [
        `${cell.scenario}: ${SCENARIOS[cell.scenario]}`,
        label(framework, cell.server),
        formatRate(cell.requestsPerSecond),
        formatRange(cell.requestsPerSecondSpread),
        `${cell.latencyP99Ms} ms`,
        formatRatio(toBare(cell)),
        formatRatio(toPeer(cell)),
        formatCpu(cell),
        formatUserSystem(cell),
        cell.problems.length === 0 ? 'ok' : cell.problems.join('; '),
      ])
    return [
      title,
      '',
      table(
        [
          'Scenario',
          'Server',
          'req/s (median)',
          'req/s min–max',
          'p99 latency',
          '× bare',
          '× peer',
          'server CPU / req (min–max)',
          'user + sys',
          'checks',
        ],
        rows,
        ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
      ),
    ].join('\n')
  })

  const aims = AIMS.filter(
    (aim) => settings.frameworks.includes(aim.framework) && settings.scenarios.includes(aim.scenario),
  ).map((aim) => {
    const base = rate(aim.scenario, aim.framework, aim.over)
    const memory = ratio(rate(aim.scenario, aim.framework, 'latchkey-memory'), base)
    const sqlite = ratio(rate(aim.scenario, aim.framework, 'latchkey-sqlite'), base)
    const other = aim.over === 'bare' ? `bare ${FRAMEWORK_NAMES[aim.framework]}` : PEERS[aim.framework]
    return {
      ...aim,
      text: `${FRAMEWORK_NAMES[aim.framework]} + latchkey ${aim.scenario} ≥ ${aim.atLeast}× ${other}`,
      memory,
      sqlite,
      met: memory === null ? null : memory >= aim.atLeast,
    }
  })
  const aimsTable = table(
    ['Aim (issue 8)', 'latchkey + MemoryStore', 'latchkey + SqliteStore', 'met (MemoryStore)'],
    aims.map((aim) => [
      aim.text,
      formatRatio(aim.memory),
      formatRatio(aim.sqlite),
      aim.met === null ? 'n/a' : aim.met ? 'yes' : 'no',
    ]),
    ['l', 'r', 'r', 'l'],
  )
  const markdown = [
    `${environment}. Loopback, autocannon ${settings.connections} connections, ${settings.repeats} runs of ` +
      `${settings.durationSeconds} s per cell after a ${settings.warmupSeconds} s warm-up, each server in its ` +
      'own process; the servers of a framework are measured in turns (run 1 of each, then run 2...), and ' +
      'each figure is the median of the runs, with their min–max. R and W: every connection is ' +
      'one user with its own session (value: a short string and a counter). × bare and × peer: median req/s ' +
      'over that of the same framework without sessions and with its peer. Server CPU / req: CPU time of the ' +
      'server process over a run, divided by the requests completed (user + sys: medians); "sys" is mostly ' +
      'the loopback writes, which cost more per request the less busy the load generator is. CPU steal over ' +
      `the whole benchmark: ${machine.stealPercent === null ? 'n/a' : `${machine.stealPercent.toFixed(1)}%`}; ` +
      `load average ${formatLoad(machine.loadBefore)} before, ${formatLoad(machine.loadAfter)} after.`,
    ...groups.flatMap((group) => ['', group]),
    ...(aims.length === 0 ? [] : ['', aimsTable]),
  ].join('\n')
  const json = {
    date: new Date().toISOString(),
    environment,
    versions: installed,
    settings,
    machine,
    cells: cells.map((cell) => ({
      ...cell,
      ratioToBare: toBare(cell),
      ratioToPeer: toPeer(cell),
      stealPercentMedian: cell.stealPercent?.median ?? null,
    })),
    aims: aims.map(({ text, ...aim }) => ({ aim: text, ...aim })),
  }
  return { markdown, json }
}

async function main(): Promise<void> {
  const settings = readSettings()
  if (settings.frameworks.length > 0) await frontDoors(settings)
  // Then every bundled store against its peer on Express (bench/peer-stores.ts; BENCH_STORES=none skips it).
  if (!(await runPeerStores())) process.exitCode = 1
  // Then the drop-in against express-session on the same stores (bench/dropin.ts; BENCH_DROPIN=none skips it).
  if (!(await runDropIn())) process.exitCode = 1
}

/** Every front door with latchkey on MemoryStore and SqliteStore, beside the bare framework and its peer. */
async function frontDoors(settings: Settings): Promise<void> {
  const cellCount = settings.scenarios.length * settings.frameworks.length * settings.servers.length
  // Scenario by scenario, and within a framework the servers in turns, so that any drift of the
  // machine over the run hits every server alike.
  const ok = await runBenchmark(
    environment(),
    cellCount,
    settings,
    settings.scenarios.flatMap((scenario) =>
      settings.frameworks.map((framework) => () => measureGroup(framework, scenario, settings)),
    ),
    (cells, environment, machine) => report(cells, settings, environment, machine),
    'latest.json',
  )
  if (!ok) process.exitCode = 1
}

main().catch((error: unknown) => {
  console.error(error instanceof BehaviourError ? `\nBENCHMARK ABORTED: ${error.message}` : error)
  process.exit(1)
})
