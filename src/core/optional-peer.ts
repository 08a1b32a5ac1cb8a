/**
 * Optional peer dependencies (database drivers, frameworks), loaded on first use instead of by a
 * static import, so a missing one is a {@link ConfigError} that names the package and the command that
 * installs it, never node's raw "module not found". The driver is loaded synchronously (`require`, the
 * drivers are CommonJS), once, when the store or adapter that needs it is built; after that it is used
 * directly, so the hot paths pay nothing.
 */
import { createRequire } from 'node:module'
import { ConfigError } from './errors.js'

const require = createRequire(import.meta.url)

/**
 * `require(specifier)`, resolved from latchkey's own location (as a static import would be). A missing
 * package throws `ConfigError('driver', '<user> needs the <package> package: npm install <package>')`;
 * any other failure of the module (a broken native build, say) is rethrown as it is.
 *
 * @param specifier what to load, e.g. `mysql2/promise`
 * @param user who needs it, for the message, e.g. `MySqlStore`
 */
export function requireDriver<T>(specifier: string, user: string): T {
  try {
    return require(specifier) as T
  } catch (error) {
    const name = packageOf(specifier)
    if (isMissing(error, specifier)) {
      throw new ConfigError(
        'driver',
        `${user} needs the ${name} package, which is not installed: npm install ${name}`,
      )
    }
    throw error
  }
}

/** The package a specifier names: `mysql2/promise` -> `mysql2`, `@scope/pkg/sub` -> `@scope/pkg`. */
function packageOf(specifier: string): string {
  const parts = specifier.split('/')
  return (specifier.startsWith('@') ? parts.slice(0, 2) : parts.slice(0, 1)).join('/')
}

/** Node could not find `specifier` itself (not a module that an installed driver failed to find). */
function isMissing(error: unknown, specifier: string): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown }
  if (code !== 'MODULE_NOT_FOUND' && code !== 'ERR_MODULE_NOT_FOUND') return false
  return typeof message === 'string' && message.includes(`'${specifier}'`)
}
