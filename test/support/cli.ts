/**
 * The built `latchkey` CLI for tests: the package is compiled with its own build settings
 * (tsconfig.build.json) into node_modules/.cache/latchkey-cli-test/<hash of the sources>/dist, next to a
 * copy of package.json, exactly as `npm run build` lays out dist, and run as a child process. The
 * build is shared by every test file and every run until a source changes; concurrent test files wait
 * for the one that builds it.
 */
import { execFile, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { join, relative } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const CACHE = join(ROOT, 'node_modules', '.cache', 'latchkey-cli-test')

function sources(dir: string): string[] {
  const files: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) files.push(...sources(path))
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) files.push(path)
  }
  return files.sort()
}

function hashOfSources(): string {
  const hash = createHash('sha256')
  for (const file of [
    ...sources(join(ROOT, 'src')),
    join(ROOT, 'package.json'),
    join(ROOT, 'tsconfig.json'),
    join(ROOT, 'tsconfig.build.json'),
  ]) {
    hash.update(relative(ROOT, file)).update('\0').update(readFileSync(file)).update('\0')
  }
  return hash.digest('hex').slice(0, 16)
}

/** Builds the package (once per source state) and resolves the path of the built dist/cli/main.js. */
export async function builtCli(): Promise<string> {
  const dir = join(CACHE, hashOfSources())
  const main = join(dir, 'dist', 'cli', 'main.js')
  const lock = `${dir}.lock`
  mkdirSync(CACHE, { recursive: true })
  for (;;) {
    if (existsSync(join(dir, '.complete'))) return main
    try {
      mkdirSync(lock)
      break
    } catch {
      // Another test file is building it: wait, unless its lock is stale.
      try {
        if (Date.now() - statSync(lock).mtimeMs > 180_000) rmSync(lock, { recursive: true, force: true })
      } catch {}
      await sleep(250)
    }
  }
  try {
    if (existsSync(join(dir, '.complete'))) return main
    const staging = `${dir}.staging`
    rmSync(staging, { recursive: true, force: true })
    mkdirSync(staging, { recursive: true })
    await promisify(execFile)(
      process.execPath,
      [
        join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
        '-p',
        'tsconfig.build.json',
        '--outDir',
        join(staging, 'dist'),
      ],
      { cwd: ROOT },
    )
    cpSync(join(ROOT, 'package.json'), join(staging, 'package.json'))
    writeFileSync(join(staging, '.complete'), '')
    rmSync(dir, { recursive: true, force: true })
    renameSync(staging, dir)
    // Builds of older sources are of no use any more.
    for (const entry of readdirSync(CACHE)) {
      const path = join(CACHE, entry)
      if (path !== dir && !path.endsWith('.lock') && Date.now() - statSync(path).mtimeMs > 3_600_000) {
        rmSync(path, { recursive: true, force: true })
      }
    }
    return main
  } finally {
    rmSync(lock, { recursive: true, force: true })
  }
}

export interface CliResult {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

export interface CliRun {
  /** Resolves when the process exits. */
  readonly done: Promise<CliResult>
  /** The child, e.g. to send it a signal. */
  readonly pid: number | undefined
  kill(signal: NodeJS.Signals): void
}

/** The environment of the child: this one without any LATCHKEY_* variable, plus `env`. */
function childEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(process.env))
    if (!name.startsWith('LATCHKEY_')) base[name] = value
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) delete base[name]
    else base[name] = value
  }
  return base
}

/** Starts `node main.js ...args`. */
export function startCli(
  main: string,
  args: readonly string[],
  options: { env?: Record<string, string | undefined>; cwd?: string } = {},
): CliRun {
  const child = spawn(process.execPath, [main, ...args], {
    env: childEnv(options.env ?? {}),
    cwd: options.cwd ?? ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk
  })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk
  })
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }))
  })
  return { done, pid: child.pid, kill: (signal) => child.kill(signal) }
}

/** Runs the CLI to its end. */
export function runCli(
  main: string,
  args: readonly string[],
  options: { env?: Record<string, string | undefined>; cwd?: string } = {},
): Promise<CliResult> {
  return startCli(main, args, options).done
}

/** The one JSON document a `--json` run printed on stdout. */
export function jsonOf(result: CliResult): Record<string, unknown> {
  const lines = result.stdout.trim().split('\n')
  if (lines.length !== 1)
    throw new Error(`expected one JSON line on stdout, got:\n${result.stdout}\n${result.stderr}`)
  return JSON.parse(lines[0] as string) as Record<string, unknown>
}
