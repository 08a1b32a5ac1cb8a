/**
 * The command line of the in-process benchmarks (`bench/core.ts`, `bench/inproc.ts`): `--quick`,
 * `--profile`, counts and comma-separated subsets from the environment (unknown items left out).
 */

const args = new Set(process.argv.slice(2))
/** `--quick`: fewer and shorter runs (smoke test). */
export const quick = args.has('--quick')
/** `--profile`: a CPU profile besides the figures. */
export const profile = args.has('--profile')

/** The number in the variable `name`, else `full` (with --quick, `short`). */
export function count(name: string, full: number, short: number = full): number {
  return Number(process.env[name] ?? (quick ? short : full))
}

/** The items of `all` the variable `name` lists (comma-separated), else all of them. */
export function pick<T extends string>(all: readonly T[], name: string): T[] {
  const env = process.env[name]
  return env ? all.filter((item) => env.split(',').includes(item)) : [...all]
}
