/**
 * Options latchkey does not know are refused, never ignored. A typo (`idleTimeout` for
 * `idleTimeoutMs`) or a habit from another library (`secret`, `rolling`, `cookie.maxAge`) that passed
 * in silence would leave the application running with a setting it believes it has. The error names
 * the option, and either what latchkey does instead (for the habits of express-session and its
 * peers) or the known option nearest to it.
 */
import { ConfigError } from './errors.js'

/** What to say about an option another library has and latchkey does not, by its name. */
export type OptionHints = Readonly<Record<string, string>>

/**
 * Throws a `ConfigError` for the first own key of `given` that is not in `known`, whatever its value
 * (`undefined` too: `{ idleTimeout: process.env.X }` is still a typo). `where` prefixes the option's
 * path (`cookie` gives `cookie.maxAge`); `owner` says whose option it is not (`createSessionManager`).
 */
export function refuseUnknownOptions(
  given: object,
  known: readonly string[],
  where: { readonly path?: string; readonly owner: string; readonly hints?: OptionHints },
): void {
  for (const name of Object.keys(given)) {
    if (known.includes(name)) continue
    const path = where.path === undefined ? name : `${where.path}.${name}`
    const hint = where.hints !== undefined && Object.hasOwn(where.hints, name) ? where.hints[name] : undefined
    const nearest = hint === undefined ? nearestOption(name, known) : undefined
    const advice =
      hint !== undefined
        ? `: ${hint}`
        : nearest !== undefined
          ? `: did you mean ${where.path === undefined ? nearest : `${where.path}.${nearest}`}?`
          : `; the options are ${known.join(', ')}`
    throw new ConfigError(path, `is not an option of ${where.owner}${advice}`)
  }
}

/**
 * The known option `name` most likely meant: the same name in another case, one that starts with it
 * (`idleTimeout` → `idleTimeoutMs`), or the closest by edit distance within a third of its length.
 */
export function nearestOption(name: string, known: readonly string[]): string | undefined {
  const lower = name.toLowerCase()
  const sameCase = known.find((option) => option.toLowerCase() === lower)
  if (sameCase !== undefined) return sameCase
  if (lower.length >= 4) {
    const extended = known.find((option) => option.toLowerCase().startsWith(lower))
    if (extended !== undefined) return extended
  }
  let best: string | undefined
  let bestDistance = Math.max(1, Math.floor(name.length / 3)) + 1
  for (const option of known) {
    const distance = editDistance(lower, option.toLowerCase())
    if (distance < bestDistance) {
      best = option
      bestDistance = distance
    }
  }
  return best
}

/**
 * The edit distance between two short strings, counting an insertion, a deletion, a substitution or
 * a swap of two neighbours (`csfr` for `csrf`) as one edit (optimal string alignment).
 */
function editDistance(a: string, b: string): number {
  const rows: number[][] = [Array.from({ length: b.length + 1 }, (_, j) => j)]
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      const above = rows[i - 1] as number[]
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let best = Math.min(
        (above[j] as number) + 1,
        (row[j - 1] as number) + 1,
        (above[j - 1] as number) + cost,
      )
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, ((rows[i - 2] as number[])[j - 2] as number) + 1)
      row[j] = best
    }
    rows.push(row)
  }
  return (rows[a.length] as number[])[b.length] as number
}
